"""`vectors.faiss`: the cached FAISS index, tagged so that only a complete, current file of this store is trusted.

File = header + `faiss.write_index` payload. Header: magic, store uuid, the generation it reflects, payload length and
the payload's SHA-256. It is written atomically with the header last, so a torn write never validates.
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from pathlib import Path
from typing import Any

import faiss

from tempscale_rag.stores.manifest import atomic_file

FAISS_NAME = "vectors.faiss"

_MAGIC = b"TSRAGFX1"
_HEADER = struct.Struct("<8s16sQQ32s")
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
