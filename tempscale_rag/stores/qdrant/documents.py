"""Upkeep of `<collection>__documents`, the document points document ranking reads (format: `points.py`).

A document point, when it exists, always describes its source's stored chunks: writers delete it before they change
the chunks and write it afterwards. A source without one (an interrupted write) is rescanned from its chunks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from functools import partial

import numpy as np
from qdrant_client import models

from tempscale_rag.stores.base import chunk_size_of
from tempscale_rag.stores.manifest import QdrantDistance
from tempscale_rag.stores.qdrant.connection import SCROLL_PAGE, QdrantConnection
from tempscale_rag.stores.qdrant.lexical import (
    LEXICAL_VECTOR,
    LexicalChannel,
    ensure_lexical_vector,
    sparse_vector_params,
)
from tempscale_rag.stores.qdrant.points import (
    Chunk,
    StoredDocument,
    dense_of,
    document_point,
    document_point_id,
    source_in,
)
from tempscale_rag.stores.qdrant.streaming import Summary

logger = logging.getLogger(__name__)


class DocumentPoints:
    """The document points of one chunk collection.

    Args:
        connection: The connection.
        chunks: The chunk collection.
        name: The documents collection.
        dimension: Vector dimension.
        distance: The chunk collection's distance (cosine: vectors are stored normalised, as Qdrant does).
        batch_size: Points per upsert request.
    """

    def __init__(
        self,
        connection: QdrantConnection,
        chunks: str,
        name: str,
        *,
        dimension: int,
        distance: QdrantDistance,
        batch_size: int,
    ) -> None:
        self._connection = connection
        self._chunks = chunks
        self.name = name
        self._dimension = dimension
        self._distance = distance
        self._batch_size = batch_size
        self.exists = False
        # The lexical channel when its document points carry whole-document BM25 vectors (set by the store).
        self.lexical: LexicalChannel | None = None

    def ensure(self, *, create: bool, has_chunks: Callable[[], bool]) -> None:
        """Find the documents collection, or create it (`create`) and derive its points from stored chunks.

        An index whose document points predate whole-document BM25 gets the vectors when opened for writing.
        """
        connection = self._connection
        whole = self.lexical is not None and self.lexical.whole_documents
        self.exists = connection.exists(self.name)
        if self.exists and whole and not ensure_lexical_vector(connection, self.name, create=create):
            self.refresh(None)
        if not self.exists and create:
            vectors = models.VectorParams(size=self._dimension, distance=models.Distance.DOT)
            sparse = {LEXICAL_VECTOR: sparse_vector_params()} if whole else None
            connection.create("documents collection", self.name, vectors, index_source=False, sparse=sparse)
            self.exists = True
            # An index written before document ranking existed: derive the document points once.
            if has_chunks():
                self.refresh(None)

    def forget(self, sources: list[str]) -> None:
        """Delete the document points of `sources` (before their chunks change, so none is ever out of date)."""
        if not self.exists or not sources:
            return
        ids = [document_point_id(source) for source in sources]
        self._connection.call(
            "forget document entries",
            lambda: self._connection.client.delete(self.name, models.PointIdsList(points=ids), wait=True),
        )

    def refresh(self, sources: list[str] | None) -> None:
        """Write the document points of `sources` (None: all) from their stored chunks."""
        if self.exists:
            self.write(self.scan(sources))

    def write(self, chunks: dict[str, list[Chunk]]) -> None:
        """Write the document points of the given sources from their complete chunk lists."""
        if not self.exists:
            return
        whole = self._whole_vectors(chunks)
        # Cosine: mirror Qdrant, which stores unit vectors in a cosine collection, so rescored cosines equal its own.
        unit = self._distance == "cosine"
        points = [
            document_point(source, members, whole.get(source), unit=unit)
            for source, members in chunks.items()
            if members
        ]
        for start in range(0, len(points), self._batch_size):
            batch = points[start : start + self._batch_size]
            self._connection.call(
                "write document entries", partial(self._connection.client.upsert, self.name, batch, wait=True)
            )

    def write_summary(self, point: models.PointStruct | None) -> None:
        """Write a streamed source's summary document point (`streaming.DocumentSummary.point`; None: no chunks)."""
        if self.exists and point is not None:
            self._connection.call(
                "write document entries", partial(self._connection.client.upsert, self.name, [point], wait=True)
            )

    def _whole_vectors(self, chunks: dict[str, list[Chunk]]) -> dict[str, tuple[str, models.SparseVector]]:
        """Each source's whole-document BM25 vector, from the stored texts of its lexical chunks (none: no list)."""
        channel = self.lexical
        if channel is None or not channel.whole_documents:
            return {}
        size = channel.settings.chunk_size
        ids = [str(point) for members in chunks.values() for point, _, chunk_size in members if chunk_size == size]
        texts: dict[str, list[str]] = {source: [] for source in chunks}
        for record in self._connection.retrieve("read lexical chunk texts", self._chunks, ids):
            payload = record.payload or {}
            texts.setdefault(str(payload.get("source", "")), []).append(str(payload.get("text", "")))
        out: dict[str, tuple[str, models.SparseVector]] = {}
        for source, members in chunks.items():
            # A document without chunks of the lexical size is not one of whole-document BM25's N (as in FAISS).
            if any(chunk_size == size for _, _, chunk_size in members):
                vector = channel.document_vector(texts.get(source, []))
                if vector is not None:
                    out[source] = vector
        return out

    def read(self, sources: list[str]) -> dict[str, StoredDocument]:
        """The full document points of `sources` that exist and can be decoded (not the summaries)."""
        return self._fetch(sources)[0]

    def _fetch(self, sources: list[str]) -> tuple[dict[str, StoredDocument], dict[str, Summary]]:
        """The full document points and the summaries (streamed sources) of `sources` that exist and decode."""
        out: dict[str, StoredDocument] = {}
        summaries: dict[str, Summary] = {}
        if not self.exists or not sources:
            return out, summaries
        ids = [document_point_id(source) for source in sources]
        for record in self._connection.retrieve("fetch documents", self.name, ids):
            payload = record.payload or {}
            summary = Summary.from_payload(payload, self._dimension)
            if summary is not None:
                summaries[summary.source] = summary
                continue
            document = StoredDocument.from_payload(payload, self._dimension)
            if document is not None:
                out[document.source] = document
        return out, summaries

    def load(self, sources: list[str]) -> dict[str, StoredDocument]:
        """All chunk ids, sizes and vectors of `sources`, with group vectors; rescanned where a point is missing.

        A streamed source's summary point has no copy of its chunks: they are read from the chunk collection, in
        chunk order, and take the summary's group vectors (those of the clean write).
        """
        out, summaries = self._fetch(sources)
        for source, chunks in self.scan(sorted(summaries), ordered=True).items():
            summary = summaries[source]
            document = StoredDocument.from_chunks(source, chunks)
            if {size: document.sizes.count(size) for size in document.group_vectors} == summary.counts:
                out[source] = dataclasses.replace(document, group_vectors=summary.group_vectors)
        stale = [source for source in sources if source not in out]
        if stale:
            scanned = self.scan(stale)
            if scanned:
                logger.warning(
                    "Qdrant collection %r has no up-to-date document entry for %d sources (e.g. %s), an interrupted "
                    "write; they were rescored from a scan of their chunks: re-index them to fix it",
                    self._chunks,
                    len(scanned),
                    next(iter(scanned)),
                )
            for source, chunks in scanned.items():
                out[source] = StoredDocument.from_chunks(source, chunks)
        return out

    def scan(self, sources: list[str] | None, *, ordered: bool = False) -> dict[str, list[Chunk]]:
        """Every chunk of `sources` (None: of the whole collection) as (point id, vector, chunk size), by source.

        `ordered`: each source's chunks in position order (as its records were written), else in point-id order.
        """
        if sources is not None and not sources:
            return {}
        flt = None if sources is None else models.Filter(must=[source_in(sources)])
        found: dict[str, list[Chunk]] = {}
        positions: dict[str, list[int]] = {}
        # Local mode filters and sorts the whole collection for every page: few large pages there.
        page_size = SCROLL_PAGE if self._connection.remote else 65536
        points = self._connection.scroll(
            "scan chunks",
            self._chunks,
            page_size,
            scroll_filter=flt,
            with_payload=["source", "chunk_tokens", "metadata", *(["position"] if ordered else [])],
            with_vectors=True,
        )
        for point in points:
            payload = point.payload or {}
            size = payload.get("chunk_tokens")
            if not isinstance(size, int):
                size = chunk_size_of(payload.get("metadata") or {})
            vector = np.asarray(dense_of(point.vector), dtype=np.float32)
            source = str(payload.get("source", ""))
            found.setdefault(source, []).append((str(point.id), vector, size))
            if ordered:
                position = payload.get("position")
                positions.setdefault(source, []).append(position if isinstance(position, int) else 0)
        for source, where in positions.items():
            order = np.argsort(np.asarray(where, dtype=np.int64), kind="stable").tolist()
            found[source] = [found[source][i] for i in order]
        return found

    def merge(self, new_chunks: dict[str, list[Chunk]]) -> dict[str, list[Chunk]]:
        """Before an upsert: each touched source's chunks after it, where known without scanning the collection.

        A source's document point lists its stored chunks; one without a point and without chunks is new.
        """
        if not self.exists:
            return {}
        stored = self.read(sorted(new_chunks))
        missing = [source for source in new_chunks if source not in stored]
        new_sources: set[str] = set()
        if missing:
            only_missing = models.Filter(must=[source_in(missing)])
            found = self._connection.call(
                "count chunks",
                lambda: self._connection.client.count(self._chunks, count_filter=only_missing, exact=True),
            ).count
            if found == 0:
                new_sources = set(missing)
        out = {}
        for source, chunks in new_chunks.items():
            if source in stored:
                replaced = {chunk[0] for chunk in chunks}
                kept = [chunk for chunk in stored[source].chunks() if chunk[0] not in replaced]
                out[source] = kept + chunks
            elif source in new_sources:
                out[source] = list(chunks)
        return out
