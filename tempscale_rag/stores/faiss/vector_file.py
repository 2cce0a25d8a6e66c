"""`vectors.faiss`: the cached FAISS index, tagged so that only a complete, current file of this store is trusted.

File = header + `faiss.write_index` payload. Header: magic, store uuid, the generation it reflects, payload length and
the payload's SHA-256. It is written atomically with the header last, so a torn write never validates.

A flat index can also be written without holding it (`write_flat_file`): its payload is a short header, the vectors
and the ids, which are streamed from the database a batch at a time in the bytes `faiss.write_index` would write for
the index rebuilt from the same rows. That layout is checked against faiss itself before every such write.
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from tempscale_rag.stores.manifest import atomic_file

FAISS_NAME = "vectors.faiss"

_MAGIC = b"TSRAGFX1"
_HEADER = struct.Struct("<8s16sQQ32s")
HEADER_BYTES = _HEADER.size
"""The tag before the faiss payload."""
_READ_CHUNK = 1 << 20


def file_problem(path: Path, store_uuid: uuid.UUID, generation: int) -> str | None:
    """Why the file at `path` cannot be used for `generation` of the store `store_uuid` ("missing"), or None."""
    try:
        with path.open("rb") as handle:
            header = handle.read(_HEADER.size)
            if len(header) != _HEADER.size:
                return "the file is truncated"
            magic, file_uuid, file_generation, length, digest = _HEADER.unpack(header)
            if magic != _MAGIC:
                return "it is not a tempscale-rag FAISS file"
            if file_uuid != store_uuid.bytes:
                return "it belongs to another store"
            if file_generation != generation:
                return f"it reflects generation {file_generation}, the database is at {generation}"
            if os.fstat(handle.fileno()).st_size != _HEADER.size + length:
                return "the file is truncated or has trailing bytes"
            hasher = hashlib.sha256()
            while chunk := handle.read(_READ_CHUNK):
                hasher.update(chunk)
            if hasher.digest() != digest:
                return "its checksum does not match (torn or corrupt file)"
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"it cannot be read ({exc})"
    return None


def read_index_file(path: Path) -> Any:
    """The FAISS index stored in `path` (check it with `file_problem` first).

    Raises:
        OSError, RuntimeError: If the file or its payload cannot be read.
    """
    with path.open("rb") as handle:
        handle.seek(_HEADER.size)
        # faiss's bundled stubs lack the callback IO classes that exist at run time.
        reader = faiss.PyCallbackIOReader(handle.read)  # type: ignore[attr-defined]
        return faiss.read_index(reader)


def write_index_file(path: Path, index: Any, store_uuid: uuid.UUID, generation: int) -> None:
    """Write `index` to `path` atomically, header last so that only a complete file validates."""
    hasher = hashlib.sha256()
    length = 0
    with atomic_file(path) as handle:
        handle.write(b"\0" * _HEADER.size)

        def sink(chunk: bytes) -> int:
            nonlocal length
            hasher.update(chunk)
            length += len(chunk)
            return handle.write(chunk)

        writer = faiss.PyCallbackIOWriter(sink)  # type: ignore[attr-defined]
        faiss.write_index(index, writer)
        del writer
        handle.seek(0)
        handle.write(_HEADER.pack(_MAGIC, store_uuid.bytes, generation, length, hasher.digest()))


# faiss's serialisation of an `IndexIDMap` over an `IndexFlatIP` (faiss/impl/index_write.cpp): each index starts with
# its fourcc and `write_index_header` (d, ntotal, two unused 1<<20 fields, is_trained, metric_type: 0 is inner product),
# the flat index's vectors follow as a float vector (its length, then the floats) and the map's ids as an int64 vector.
_INDEX_HEADER = struct.Struct("<iqqqBi")
_VECTOR_LENGTH = struct.Struct("<Q")


def _index_header(fourcc: bytes, dimension: int, ntotal: int) -> bytes:
    return fourcc + _INDEX_HEADER.pack(dimension, ntotal, 1 << 20, 1 << 20, 1, faiss.METRIC_INNER_PRODUCT)


def _flat_prefix(dimension: int, ntotal: int) -> bytes:
    """The bytes before the vectors: both indexes' headers and the vectors' length."""
    return (
        _index_header(b"IxMp", dimension, ntotal)
        + _index_header(b"IxFI", dimension, ntotal)
        + _VECTOR_LENGTH.pack(ntotal * dimension)
    )


@cache
def flat_layout_matches(dimension: int) -> bool:
    """Whether `_flat_prefix` and the vector layout are what this faiss writes (checked on a 2-vector index)."""
    vectors = np.arange(2 * dimension, dtype=np.float32).reshape(2, dimension)
    ids = np.asarray([7, 3], dtype=np.int64)
    index = faiss.IndexIDMap(faiss.IndexFlatIP(dimension))
    index.add_with_ids(vectors, ids)
    ours = _flat_prefix(dimension, 2) + vectors.astype("<f4").tobytes() + _VECTOR_LENGTH.pack(2)
    ours += ids.astype("<i8").tobytes()
    return bytes(faiss.serialize_index(index).tobytes()) == ours


def write_flat_file(
    path: Path,
    batches: Iterable[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    ntotal: int,
    dimension: int,
    store_uuid: uuid.UUID,
    generation: int,
) -> None:
    """Write the file of a flat index holding `batches` (vectors and their ids, in storage order) without building it.

    Memory holds one batch and the ids (8 bytes a vector). The file is the one `write_index_file` writes for the
    `IndexIDMap(IndexFlatIP)` made by adding the same batches, byte for byte; atomic, header last.

    Raises:
        ValueError: If the batches hold other than `ntotal` vectors of `dimension`; nothing is written.
        RuntimeError: If this faiss writes another layout (`flat_layout_matches`): build the index instead.
    """
    if not flat_layout_matches(dimension):
        raise RuntimeError(f"faiss {faiss.__version__} writes flat indexes in a layout this version does not stream")
    hasher = hashlib.sha256()
    length = 0
    ids: list[npt.NDArray[np.int64]] = []
    with atomic_file(path) as handle:
        handle.write(b"\0" * _HEADER.size)

        def sink(chunk: bytes | memoryview) -> None:
            nonlocal length
            hasher.update(chunk)
            length += chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
            handle.write(chunk)

        sink(_flat_prefix(dimension, ntotal))
        written = 0
        for vectors, vids in batches:
            if vectors.ndim != 2 or vectors.shape[1] != dimension or len(vids) != len(vectors):
                raise ValueError(f"a batch of {vectors.shape} vectors and {len(vids)} ids, dimension {dimension}")
            written += len(vectors)
            if written > ntotal:
                raise ValueError(f"more than the {ntotal} vectors announced")
            sink(np.ascontiguousarray(vectors, dtype="<f4").data)  # no copy of the batch
            ids.append(np.asarray(vids, dtype="<i8"))
        if written != ntotal:
            raise ValueError(f"{written} vectors, {ntotal} announced")
        sink(_VECTOR_LENGTH.pack(ntotal))
        for part in ids:
            sink(part.data)
        handle.seek(0)
        handle.write(_HEADER.pack(_MAGIC, store_uuid.bytes, generation, length, hasher.digest()))
