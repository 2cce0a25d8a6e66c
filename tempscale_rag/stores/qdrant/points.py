"""What a Qdrant index stores: point ids, chunk payloads, and the document points that document ranking reads.

- A chunk is one point of `<collection>`, id `point_id(record.id)` (a UUID5, so re-indexing overwrites instead of
  duplicating), payload the chunk fields (plus `chunk_tokens`, its chunk size), the unnamed dense vector and, for the
  chunks of the lexical channel's size, the sparse vector `bm25` (`lexical.py`).
- A fully stored source is one vector-less point of `<collection>__sources`: `{source, fingerprint, chunks}`.
- A source's document point in `<collection>__documents` (`StoredDocument`): the point ids of its chunks in group
  order (space-separated), a copy of their vectors and each group's mean unit vector, vectors as base64 little-endian
  float32. Its own vector (dot-product distance) is the mean of the group vectors, so its score for a unit query is
  exactly the document's `mean` score. The copy doubles the vector storage so that rescoring a candidate costs one
  point read, not one per chunk (local mode builds a Python object per returned point).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from qdrant_client import models

from tempscale_rag.ranking.candidates import ChunkTable
from tempscale_rag.ranking.documents import ChunkGroups
from tempscale_rag.stores.base import ChunkRecord, SearchHit, chunk_size_of

Chunk = tuple[str, npt.NDArray[np.float32], int]
"""A stored chunk as document upkeep sees it: (point id, vector, chunk size)."""

# Fixed namespace: point ids must be the same in every process and every version, or re-indexing would duplicate.
_ID_NAMESPACE = uuid.UUID("5b0f6c1e-8d4a-4c55-9a43-7f0e2b6d1c39")
_NAMESPACE_BYTES = _ID_NAMESPACE.bytes
_DOCUMENT_FORMAT = 1


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(_ID_NAMESPACE, name))`, computed without building `UUID` objects (a fifth of the time).

    A chunk write computes one id per chunk; `uuid.uuid5` and `UUID.__str__` cost about 9 us per id.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8"), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk: a UUID5 of its chunk id, identical across runs."""
    return _uuid5(chunk_id)


def source_point_id(source: str) -> str:
    """The id of a source's fingerprint point."""
    return _uuid5("source\x00" + source)


def document_point_id(source: str) -> str:
    """The id of a source's document point."""
    return _uuid5("document\x00" + source)


DENSE_VECTOR = ""
"""Qdrant's name of the unnamed (default) vector, in a point that also carries a named one."""


class ChunkPoint(NamedTuple):
    """A chunk point about to be written: the fields of a `models.PointStruct`, without pydantic's cost per point.

    `QdrantStore` turns them into `PointStruct`s for qdrant-client; Qdrant Edge's client reads them as they are.
    """

    id: str
    vector: Any
    payload: dict[str, Any]


def chunk_point(record: ChunkRecord, sparse: tuple[str, models.SparseVector] | None = None) -> ChunkPoint:
    """The point of a chunk; `sparse` is (name, vector) of its sparse vector, if it has one."""
    dense = record.vector.tolist()
    return ChunkPoint(
        point_id(record.id),
        dense if sparse is None else {DENSE_VECTOR: dense, sparse[0]: sparse[1]},
        {
            "chunk_id": record.id,
            "text": record.text,
            "source": record.source,
            "position": record.position,
            "token_length": record.token_length,
            "bucket": record.bucket,
            "metadata": record.metadata,
            "chunk_tokens": chunk_size_of(record.metadata),
        },
    )


def point_struct(point: ChunkPoint) -> models.PointStruct:
    """The qdrant-client point of a chunk point."""
    return models.PointStruct(id=point.id, vector=point.vector, payload=point.payload)


def dense_of(vector: Any) -> Any:
    """The dense vector of a point's vector(s): the unnamed one when it also carries named ones."""
    return vector[DENSE_VECTOR] if isinstance(vector, dict) else vector


def chunks_of(records: list[ChunkRecord], points: list[ChunkPoint]) -> list[Chunk]:
    """(point id, vector, chunk size) of the points of `records`, with the records' own arrays."""
    return [
        (point.id, record.vector, int(point.payload["chunk_tokens"]))
        for record, point in zip(records, points, strict=True)
    ]


def payload_hit(payload: dict[str, Any], point: str, score: float) -> SearchHit:
    """A search hit from a chunk point's payload."""
    return SearchHit(
        id=str(payload.get("chunk_id", point)),
        score=score,
        text=str(payload.get("text", "")),
        source=str(payload.get("source", "")),
        position=int(payload.get("position", 0)),
        token_length=int(payload.get("token_length", 0)),
        bucket=str(payload.get("bucket", "")),
        metadata=dict(payload.get("metadata") or {}),
    )


def scored_hit(point: models.ScoredPoint) -> SearchHit:
    """A search hit from a scored chunk point."""
    return payload_hit(point.payload or {}, str(point.id), float(point.score))


def source_is(source: str) -> models.FieldCondition:
    """Filter condition: the chunk belongs to `source`."""
    return models.FieldCondition(key="source", match=models.MatchValue(value=source))


def source_in(sources: list[str]) -> models.FieldCondition:
    """Filter condition: the chunk belongs to one of `sources`."""
    return models.FieldCondition(key="source", match=models.MatchAny(any=sources))


@dataclass(frozen=True)
class StoredDocument:
    """One source's chunks as stored: point ids, chunk sizes, vectors, and each size's mean unit vector."""

    source: str
    ids: list[str]
    sizes: list[int]
    vectors: npt.NDArray[np.float32]
    group_vectors: dict[int, npt.NDArray[np.float32]]

    @classmethod
    def from_chunks(cls, source: str, chunks: list[Chunk]) -> StoredDocument:
        """Group (point id, vector, chunk size) triples; chunks end up in group order (size by size)."""
        return cls.from_arrays(
            source,
            [chunk[0] for chunk in chunks],
            np.stack([chunk[1] for chunk in chunks]).astype(np.float32, copy=False),
            [chunk[2] for chunk in chunks],
        )

    @classmethod
    def from_arrays(
        cls, source: str, ids: list[str], vectors: npt.NDArray[np.float32], sizes: list[int]
    ) -> StoredDocument:
        """`from_chunks` on the chunks' ids, (n, dim) vectors and sizes, in stored order.

        The same numbers as `ChunkGroups.build` and `source_groups` (groups by increasing size, chunks in stable
        order; each group's float64 sum of its vectors in chunk order, L2-normalised), without their `np.add.at`,
        which costs about 1 ms per 50-chunk document: a third of an Edge write's store-side time.
        """
        size_array = np.asarray(sizes, dtype=np.int64)
        order = np.argsort(size_array, kind="stable")
        ordered = vectors[order]
        distinct, counts = np.unique(size_array, return_counts=True)
        sums = np.empty((len(distinct), vectors.shape[1]), dtype=np.float64)
        start = 0
        for g, count in enumerate(counts.tolist()):
            # A sum over axis 0 of a C-ordered array adds row after row (no pairwise summation across rows): the
            # same float64 operations, in the same order, as np.add.at.
            sums[g] = ordered[start : start + count].astype(np.float64).sum(axis=0)
            start += count
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        means = (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return cls(
            source=source,
            ids=[ids[i] for i in order.tolist()],
            sizes=size_array[order].tolist(),
            vectors=np.ascontiguousarray(ordered, dtype=np.float32),
            group_vectors={int(size): means[g] for g, size in enumerate(distinct.tolist())},
        )

    @classmethod
    def from_payload(cls, payload: dict[str, Any], dimension: int) -> StoredDocument | None:
        """Decode a document point's payload; None if it is not one this version wrote (then rescanned)."""
        try:
            if payload.get("format") != _DOCUMENT_FORMAT:
                return None
            ids = str(payload["chunk_ids"]).split()
            groups = [(int(g["chunk_tokens"]), int(g["chunks"])) for g in payload["groups"]]
            vectors = _decode(payload["chunk_vectors"], len(ids), dimension)
            means = _decode(payload["group_vectors"], len(groups), dimension)
            if sum(count for _, count in groups) != len(ids) or not ids:
                return None
            return cls(
                source=str(payload["source"]),
                ids=ids,
                sizes=[size for size, count in groups for _ in range(count)],
                vectors=vectors,
                group_vectors={size: means[g] for g, (size, _) in enumerate(groups)},
            )
        except (KeyError, TypeError, ValueError):
            return None

    def payload(self) -> dict[str, Any]:
        """The document point's payload: chunk ids and sizes in group order, vectors as base64 little-endian float32.

        Ids (space-separated) and vectors travel as single strings because local mode deep-copies every payload it
        returns (a list costs a Python object per item) and a server sends JSON (a float list is about twice the bytes
        of base64).
        """
        sizes = list(self.group_vectors)
        counts = [self.sizes.count(size) for size in sizes]
        return {
            "format": _DOCUMENT_FORMAT,
            "source": self.source,
            "groups": [{"chunk_tokens": size, "chunks": count} for size, count in zip(sizes, counts, strict=True)],
            "chunk_ids": " ".join(self.ids),
            "chunk_vectors": _encode(self.vectors),
            "group_vectors": _encode(np.stack([self.group_vectors[size] for size in sizes])),
        }

    def chunks(self) -> list[Chunk]:
        """The stored chunks as (point id, vector, chunk size)."""
        return [(chunk_id, self.vectors[j], self.sizes[j]) for j, chunk_id in enumerate(self.ids)]


def document_point(
    source: str, chunks: list[Chunk], sparse: tuple[str, models.SparseVector] | None = None, *, unit: bool = False
) -> models.PointStruct:
    """The document point of a source; its vector is the mean of its group vectors (so q . v is the `mean` score).

    `sparse` is (name, vector) of its whole-document BM25 vector, if the index has one. `unit`: store each chunk vector
    L2-normalised (as Qdrant stores a cosine collection's vectors).
    """
    vectors = np.stack([chunk[1] for chunk in chunks]).astype(np.float32, copy=False)
    if unit:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.where(norms > 0, norms, np.float32(1.0))).astype(np.float32, copy=False)
    document = StoredDocument.from_arrays(source, [chunk[0] for chunk in chunks], vectors, [c[2] for c in chunks])
    dense = np.mean(np.stack(list(document.group_vectors.values())).astype(np.float64), axis=0)
    vector = dense.astype(np.float32).tolist()
    return models.PointStruct(
        id=document_point_id(source),
        vector=vector if sparse is None else {DENSE_VECTOR: vector, sparse[0]: sparse[1]},
        payload=document.payload(),
    )


def _encode(vectors: npt.NDArray[np.float32]) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: str, rows: int, dimension: int) -> npt.NDArray[np.float32]:
    data = binascii.a2b_base64(text, strict_mode=True)
    if len(data) != 4 * rows * dimension:
        raise ValueError(f"expected {rows} vectors of dimension {dimension}")
    return np.frombuffer(data, dtype="<f4").reshape(rows, dimension).astype(np.float32)


def documents_table(parts: list[StoredDocument]) -> ChunkTable | None:
    """The chunks of the given documents (in that order) as a `ChunkTable`; None when there are none."""
    if not parts:
        return None
    groups = ChunkGroups.build(
        np.repeat(np.arange(len(parts)), [len(part.ids) for part in parts]).tolist(),
        [size for part in parts for size in part.sizes],
    )
    groups = dataclasses.replace(groups, documents=[part.source for part in parts])
    means = np.stack(
        [
            parts[doc].group_vectors[size]
            for doc, size in zip(groups.group_document.tolist(), groups.group_size.tolist(), strict=True)
        ]
    )
    keys = np.asarray([chunk_id for part in parts for chunk_id in part.ids], dtype=object)
    return ChunkTable(groups, keys, np.concatenate([part.vectors for part in parts]), None, means)
