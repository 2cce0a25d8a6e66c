"""Replacing one source's chunks in Qdrant from a stream of batches, with memory bounded by a batch.

`QdrantStore.replace_source` takes a list and writes a document point that copies every chunk vector of the source
(`points.StoredDocument`): a 50 MB text file at four chunk sizes is about 600,000 records, which it would hold three
times over (the records, their points, the document point's base64 copy, 1.2 GB on its own). The indexer hands a big
file to `QdrantStore.replace_source_batches` instead, a staged batch at a time, and this module writes it:

- the order of `replace_source` is kept: the fingerprint point and the document point are deleted first, the chunks
  are upserted batch by batch, the source's chunks no batch wrote are deleted, the document point is written and the
  fingerprint recorded last. Killed or interrupted anywhere, the source is out of `sources()` and the next run
  redoes it (from the indexer's staged batches); a half-written file is never reported as indexed;
- what the document point needs is gathered as the batches pass (`DocumentSummary`): each chunk size's float64 sum of
  unit vectors, added in chunk order as `StoredDocument.from_arrays` adds them (so the group vectors, and the point's
  own vector, are bit for bit those `replace_source` writes), and the term counts of the lexical chunks for the
  whole-document BM25 vector (the texts joined by line breaks, which no term crosses, are their terms summed);
- the document point of a streamed source is a *summary* (`SUMMARY_FORMAT`): group vectors, counts and the vectors
  the documents collection is searched by, without the copy of the chunk vectors. Document ranking reads a summarised
  candidate's chunks from the chunk collection (`DocumentPoints.load`) with the summary's group vectors;
- the ids of the points written are kept as 16 bytes each (10 MB for 600,000), to find the source's stale chunks by
  scrolling its ids after the upload (skipped for a source with no stored chunks).

Memory is a batch, the group sums (one vector per chunk size), the distinct terms of the lexical chunks and the ids.
qdrant-client's local mode keeps its whole collection in Python memory by design; Qdrant Edge and a server do not.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from qdrant_client import models

from tempscale_rag.stores.base import ChunkRecord, check_records
from tempscale_rag.stores.qdrant.connection import SCROLL_PAGE, QdrantConnection
from tempscale_rag.stores.qdrant.lexical import LexicalChannel, chunk_points
from tempscale_rag.stores.qdrant.points import DENSE_VECTOR, ChunkPoint, document_point_id, source_is

SUMMARY_FORMAT = 2
"""`format` of a summary document point (a streamed source's: group vectors without the chunk vectors' copy).

A version that reads only the full format (1) treats it as a missing point and rescans the source's chunks."""

DELETE_PAGE = 4096
"""Stale chunk ids deleted per request."""


class DocumentSummary:
    """What a source's document point needs, gathered batch by batch: group sums and whole-document term counts.

    Args:
        dimension: The vector dimension.
        unit: L2-normalise each chunk vector first (a cosine collection, as `document_point(unit=True)`).
        channel: The lexical channel, when document points carry whole-document BM25 vectors; else None.
    """

    def __init__(self, dimension: int, *, unit: bool, channel: LexicalChannel | None) -> None:
        self.dimension = dimension
        self.unit = unit
        self.channel = channel if channel is not None and channel.whole_documents else None
        self.sums: dict[int, npt.NDArray[np.float64]] = {}
        self.counts: dict[int, int] = {}
        self.terms: Counter[str] = Counter()
        self.n_terms = 0
        self.lexical_chunks = 0

    @property
    def chunks(self) -> int:
        """Chunks added so far."""
        return sum(self.counts.values())

    def add(self, records: list[ChunkRecord], sizes: list[int]) -> None:
        """Add a batch of records and their chunk sizes, in the source's chunk order."""
        if not records:
            return
        vectors = np.stack([record.vector for record in records]).astype(np.float32, copy=False)
        if self.unit:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = (vectors / np.where(norms > 0, norms, np.float32(1.0))).astype(np.float32, copy=False)
        size_array = np.asarray(sizes, dtype=np.int64)
        for size in np.unique(size_array).tolist():
            rows = vectors[size_array == size].astype(np.float64)
            total = self.sums.get(size)
            # A sum over axis 0 adds row after row: the running total first, then this batch's rows in order, the
            # same float64 additions `StoredDocument.from_arrays` makes over all of the group's rows at once.
            self.sums[size] = rows.sum(axis=0) if total is None else np.vstack([total[None, :], rows]).sum(axis=0)
            self.counts[size] = self.counts.get(size, 0) + len(rows)
        if self.channel is not None:
            wanted = self.channel.settings.chunk_size
            for record, size in zip(records, sizes, strict=True):
                if size == wanted:
                    terms = self.channel.document_terms(record.text)
                    self.terms.update(terms)
                    self.n_terms += len(terms)
                    self.lexical_chunks += 1

    def point(self, source: str) -> models.PointStruct | None:
        """The summary document point of `source`; None when no chunk was added."""
        if not self.counts:
            return None
        sizes = sorted(self.sums)
        sums = np.stack([self.sums[size] for size in sizes])
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        means = (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        dense = np.mean(means.astype(np.float64), axis=0).astype(np.float32).tolist()
        vector: Any = dense
        # A document without chunks of the lexical size is not one of whole-document BM25's N (as `documents.py`).
        if self.channel is not None and self.lexical_chunks:
            name, sparse = self.channel.vector_of_terms(self.terms, self.n_terms)
            vector = {DENSE_VECTOR: dense, name: sparse}
        payload = {
            "format": SUMMARY_FORMAT,
            "source": source,
            "groups": [{"chunk_tokens": size, "chunks": self.counts[size]} for size in sizes],
            "group_vectors": encode_vectors(means),
            "chunks": self.chunks,
        }
        return models.PointStruct(id=document_point_id(source), vector=vector, payload=payload)


@dataclass(frozen=True)
class Summary:
    """A decoded summary document point: its group vectors by chunk size, and how many chunks each group has."""

    source: str
    group_vectors: dict[int, npt.NDArray[np.float32]]
    counts: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], dimension: int) -> Summary | None:
        """Decode a summary point's payload; None if it is not one."""
        try:
            if payload.get("format") != SUMMARY_FORMAT:
                return None
            groups = [(int(g["chunk_tokens"]), int(g["chunks"])) for g in payload["groups"]]
            means = decode_vectors(str(payload["group_vectors"]), len(groups), dimension)
            return cls(
                source=str(payload["source"]),
                group_vectors={size: means[g] for g, (size, _) in enumerate(groups)},
                counts=dict(groups),
            )
        except (KeyError, TypeError, ValueError):
            return None


def encode_vectors(vectors: npt.NDArray[np.float32]) -> str:
    """Vectors as base64 little-endian float32 (the document points' encoding)."""
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def decode_vectors(text: str, rows: int, dimension: int) -> npt.NDArray[np.float32]:
    """`encode_vectors` reversed.

    Raises:
        ValueError: If the text is not base64 of `rows` x `dimension` float32 values.
    """
    data = binascii.a2b_base64(text, strict_mode=True)
    if len(data) != 4 * rows * dimension:
        raise ValueError(f"expected {rows} vectors of dimension {dimension}")
    return np.frombuffer(data, dtype="<f4").reshape(rows, dimension).astype(np.float32)


class WrittenIds:
    """The point ids written for a source, 16 bytes each, for finding its stale chunks after the upload."""

    def __init__(self) -> None:
        self._parts: list[npt.NDArray[Any]] = []
        self._sorted: npt.NDArray[Any] | None = None

    def add(self, ids: list[str]) -> None:
        """Record the ids of one uploaded batch."""
        self._parts.append(id_array(ids))
        self._sorted = None

    def sorted(self, source: str) -> npt.NDArray[Any]:
        """Every id written for `source`, sorted.

        Raises:
            ValueError: If an id was written twice (two batches held the same chunk).
        """
        if self._sorted is None:
            joined = np.concatenate(self._parts) if self._parts else np.empty(0, dtype="S16")
            joined.sort()
            if len(joined) > 1 and bool(np.any(joined[1:] == joined[:-1])):
                raise ValueError(f"a chunk id of {source!r} appears in two batches; the source is not recorded")
            self._parts, self._sorted = [joined], joined
        return self._sorted


def id_array(ids: Iterable[Any]) -> npt.NDArray[Any]:
    """Point ids (UUID strings) as an array of their 16 bytes."""
    return np.asarray([uuid.UUID(str(i)).bytes for i in ids], dtype="S16")


def upload_batches(
    batches: Iterable[Iterable[ChunkRecord]],
    summary: DocumentSummary,
    source: str,
    channel: LexicalChannel | None,
    location: str,
    upload: Callable[[list[ChunkPoint]], None],
) -> npt.NDArray[Any]:
    """Check, upload and summarise `source`'s records a batch at a time; the ids written (sorted, `WrittenIds`).

    Raises:
        ValueError, TypeError: A record is invalid (`check_records`), or a chunk id is in two batches.
    """
    written = WrittenIds()
    for records in batches:
        checked = check_records(records, summary.dimension, source=source)
        points = chunk_points(checked, channel, location)
        upload(points)
        written.add([point.id for point in points])
        summary.add(checked, [int(point.payload["chunk_tokens"]) for point in points])
    return written.sorted(source)


def delete_stale(connection: QdrantConnection, collection: str, source: str, kept: npt.NDArray[Any]) -> int:
    """Delete the chunks of `source` whose ids are not in `kept` (sorted, from `WrittenIds`); how many were deleted.

    The source's ids are scrolled first (without payloads or vectors), then the stale ones deleted a page at a time,
    so the scroll never runs over a collection it is changing.
    """
    page_size = SCROLL_PAGE if connection.remote else 65536
    flt = models.Filter(must=[source_is(source)])
    stale: list[npt.NDArray[Any]] = []
    page: list[Any] = []

    def settle() -> None:
        found = id_array(page)
        position = np.searchsorted(kept, found)
        hit = np.zeros(len(found), dtype=bool)
        inside = position < len(kept)
        hit[inside] = kept[position[inside]] == found[inside]
        stale.append(found[~hit])
        page.clear()

    for point in connection.scroll(
        "list the source's chunks", collection, page_size, scroll_filter=flt, with_payload=False
    ):
        page.append(point.id)
        if len(page) >= page_size:
            settle()
    settle()
    ids = np.concatenate(stale)
    client = connection.client
    for start in range(0, len(ids), DELETE_PAGE):
        # numpy drops an `S16` value's trailing zero bytes when it hands it out: pad them back.
        part: list[Any] = [str(uuid.UUID(bytes=bytes(v).ljust(16, b"\0"))) for v in ids[start : start + DELETE_PAGE]]
        connection.call(
            "delete stale chunks", partial(client.delete, collection, models.PointIdsList(points=part), wait=True)
        )
    return len(ids)
