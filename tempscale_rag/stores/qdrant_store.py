"""`QdrantStore`: chunks in a Qdrant collection, on a server (`url`) or in qdrant-client's local mode (`path`).

Two collections per index:

- `<collection>`: one point per chunk. The point id is `uuid5(record.id)`, so re-indexing overwrites instead of
  duplicating; the payload holds the chunk fields (`source` carries a keyword payload index on servers).
- `<collection>__sources`: one vector-less point per fully stored source, `{source, fingerprint, chunks}`.
- `<collection>__documents`: one point per source, id `uuid5("document", source)`, for document ranking. Payload
  `{format, source, groups: [{chunk_tokens, chunks}], chunk_ids, chunk_vectors, group_vectors}`: the point ids of its
  chunks in group order (space-separated), a copy of their vectors and each group's mean unit vector
  (`tempscale_rag.ranking.documents.group_vectors`), vectors as base64 little-endian float32. The point's own vector
  (dot-product distance) is the mean of the group vectors, so its score for a unit query is exactly the document's
  `mean` score. The copy doubles the vector storage so that rescoring a candidate costs one point read, not one per
  chunk (local mode builds a Python object per returned point).

`replace_source` first forgets the source's fingerprint and deletes its document point, then upserts the new chunks,
deletes the source's other chunks, writes the document point, and records the fingerprint last. A crash anywhere in
between leaves the source out of `sources()`, so the indexer redoes it; there is no state in which `sources()` vouches
for an incomplete source, and a document point, when it exists, always describes the source's stored chunks (a source
without one is rescored from a scan of its chunks, with a warning).

Document ranking (`search_documents`) over-fetches: the best `QDRANT_CHUNK_OVERFETCH * k` chunks name candidate
documents (on a server through Qdrant's grouping API, `query_points_groups` grouped by `source`; in local mode, which
implements grouping by materialising every point, through a plain query), the first `QDRANT_CANDIDATES * k` of them
(plus, for `mean` and `hybrid`, the best `QDRANT_CANDIDATES * k` documents of `<collection>__documents`) are rescored
exactly from all their stored chunk vectors, and the best `k` are returned.

Every write waits for Qdrant's acknowledgement (`wait=True`). Network failures (connection errors, timeouts, HTTP
502/503/504) are retried with exponential backoff; anything else (4xx, 500) fails at once. When the retries are spent
the call raises `StoreUnavailableError` naming the URL.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from tempscale_rag.ranking.documents import ChunkGroups, DocumentScoring, group_vectors, rank_documents
from tempscale_rag.stores.base import (
    ChunkRecord,
    DocumentHit,
    IndexMismatchError,
    IndexNotFoundError,
    ProgressCallback,
    SearchHit,
    StoreUnavailableError,
    VectorStore,
    as_query_matrix,
    check_fingerprint,
    check_k,
    check_records,
    check_source,
    chunk_size_of,
)
from tempscale_rag.stores.manifest import QdrantDistance

logger = logging.getLogger(__name__)

T = TypeVar("T")

MEMORY = ":memory:"
"""Pass as `path` for a throw-away in-process store."""

SOURCES_SUFFIX = "__sources"
"""Suffix of the collection that records each stored source's fingerprint."""

DOCUMENTS_SUFFIX = "__documents"
"""Suffix of the collection that holds each source's chunk ids and group vectors, for document ranking."""

QDRANT_CHUNK_OVERFETCH = 10
"""Document ranking fetches this many chunks per wanted document to find candidate documents."""

QDRANT_CANDIDATES = 2
"""Document ranking rescores this many candidate documents per wanted document."""

# Fixed namespace: point ids must be the same in every process and every version, or re-indexing would duplicate.
_ID_NAMESPACE = uuid.UUID("5b0f6c1e-8d4a-4c55-9a43-7f0e2b6d1c39")
_DISTANCES: dict[str, models.Distance] = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT}
_RETRY_STATUS = frozenset({502, 503, 504})
_AUTH_STATUS = frozenset({401, 403})
_SEARCH_BATCH = 64
_SCROLL_PAGE = 1024
_MAX_BACKOFF = 30.0


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk: a UUID5 of its chunk id, identical across runs."""
    return str(uuid.uuid5(_ID_NAMESPACE, chunk_id))


def _source_point_id(source: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "source\x00" + source))


def _document_point_id(source: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "document\x00" + source))


def _transient_reason(exc: BaseException) -> str | None:
    """A short reason if `exc` is a network failure worth retrying, else None."""
    if isinstance(exc, ResponseHandlingException):
        return _transient_reason(exc.source)
    if isinstance(exc, httpx.TransportError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, UnexpectedResponse) and exc.status_code in _RETRY_STATUS:
        return f"HTTP {exc.status_code} {exc.reason_phrase}".strip()
    return None


class QdrantStore(VectorStore):
    """A `VectorStore` on Qdrant: a server at `url`, or local mode in `path` (or `":memory:"`).

    Args:
        dimension: Vector dimension; an existing collection must match it.
        collection: Collection name (a second collection `<collection>__sources` holds fingerprints).
        url: Server URL, e.g. `http://localhost:6333`. Exactly one of `url` and `path`.
        path: Local-mode folder, or `":memory:"`.
        api_key: API key for the server (kept in memory for `writer()` connections, never written anywhere).
        timeout: Per-request timeout in seconds (servers only).
        distance: `"cosine"` (Qdrant normalises vectors) or `"dot"` (the raw inner product, exactly like FAISS).
        batch_size: Points per upsert request.
        retries: Retries after a network failure, with exponential backoff.
        backoff: First backoff delay in seconds (doubled after each retry, at most 30 s).
        create: Create missing collections.
        read_only: Refuse writes; with `create` ignored.
        progress: Called as `progress(done, total)` after each uploaded batch.

    Attributes:
        use_grouping_api: Find candidate documents with Qdrant's grouping API (`query_points_groups`); True for a
            server, False in local mode, where a plain over-fetching query is much faster.

    Raises:
        StoreUnavailableError: If the server cannot be reached, rejects the API key, or the local folder is in use.
        IndexNotFoundError: If the collection is missing and may not be created.
        IndexMismatchError: If the collection exists with another vector size or distance.
    """

    backend = "qdrant"

    def __init__(
        self,
        *,
        dimension: int,
        collection: str = "tempscale",
        url: str | None = None,
        path: str | Path | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        distance: QdrantDistance = "cosine",
        batch_size: int = 256,
        retries: int = 3,
        backoff: float = 0.5,
        create: bool = True,
        read_only: bool = False,
        progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__(dimension, read_only=read_only)
        if (url is None) == (path is None):
            raise ValueError("give exactly one of url (a Qdrant server) or path (a local folder, or ':memory:')")
        if not isinstance(collection, str) or not collection:
            raise ValueError(f"collection must be a non-empty str, got {collection!r}")
        if distance not in _DISTANCES:
            raise ValueError(f"distance must be 'cosine' or 'dot', got {distance!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        if not math.isfinite(timeout) or timeout <= 0 or not math.isfinite(backoff) or backoff < 0:
            raise ValueError(f"timeout must be > 0 and backoff >= 0 seconds, got {timeout!r} and {backoff!r}")
        self.collection = collection
        self.sources_collection = collection + SOURCES_SUFFIX
        self.documents_collection = collection + DOCUMENTS_SUFFIX
        self.distance: QdrantDistance = distance
        self.url = url
        self.path = None if path is None else str(path)
        self._batch_size = batch_size
        self._api_key = api_key
        self._timeout = timeout
        self._retries = retries
        self._backoff = float(backoff)
        self._progress = progress
        self._remote = url is not None
        self._has_sources_collection = False
        self._has_documents_collection = False
        # Qdrant's grouping API on a server; local mode implements it by materialising every point (seconds per query).
        self.use_grouping_api = url is not None
        self._client = self._connect(api_key, timeout, create=create and not read_only)
        try:
            self._ensure_collections(create=create and not read_only)
        except BaseException:
            self._client.close()
            raise

    @property
    def location(self) -> str:
        """The server URL, the local folder, or `:memory:`."""
        return self.url if self.url is not None else str(self.path)

    @property
    def concurrent_writers(self) -> bool:
        """Whether `writer()` can open more writers: on a server, yes; local mode allows one client per folder."""
        return self._remote

    def writer(self) -> QdrantStore:
        """Another connection to the same server collection, for one more writer working concurrently with this one.

        Writes to different sources may run concurrently, each through its own writer (one per thread): a source's
        `replace_source` is a sequence of requests that only touches that source's points, fingerprint and document
        point, and point ids are deterministic, so concurrent writers never race on a point. Writing one source from
        two writers at once is not supported. Close the writer when done; this store's `commit()` then refreshes the
        manifest as usual.

        Raises:
            ValueError: In local mode (qdrant-client allows one client per folder: one writer).
            StoreUnavailableError: If the server cannot be reached.
        """
        self._check_writable()
        if not self._remote or self.url is None:
            raise ValueError(
                "qdrant-client's local mode allows one writer per folder; parallel writers need a Qdrant server "
                "(--qdrant-url)"
            )
        self._modified = True  # the writer writes for this store: its commit() must refresh the manifest
        return QdrantStore(
            dimension=self.dimension,
            collection=self.collection,
            url=self.url,
            api_key=self._api_key,
            timeout=self._timeout,
            distance=self.distance,
            batch_size=self._batch_size,
            retries=self._retries,
            backoff=self._backoff,
            create=False,
        )

    @property
    def client(self) -> QdrantClient:
        """The underlying qdrant-client (for inspection; writing through it bypasses the fingerprint bookkeeping)."""
        return self._client

    def replace_source(self, source: str, fingerprint: str, records: Iterable[ChunkRecord]) -> None:
        """Replace every chunk of `source` and record its fingerprint last (see the module docstring).

        Args:
            source: The file path as indexed.
            fingerprint: The source's content fingerprint.
            records: The new chunks, all with `record.source == source`.
        """
        self._check_writable()
        check_source(source)
        check_fingerprint(fingerprint)
        points = [self._point(record) for record in check_records(records, self.dimension, source=source)]
        marker = _source_point_id(source)
        self._call(
            "forget the source",
            lambda: self._client.delete(self.sources_collection, models.PointIdsList(points=[marker]), wait=True),
        )
        self._modified = True
        self._forget_documents([source])
        self._upload(points)
        stale = models.Filter(
            must=[_source_is(source)],
            must_not=[models.HasIdCondition(has_id=[p.id for p in points])] if points else None,
        )
        self._call(
            "delete stale chunks",
            lambda: self._client.delete(self.collection, models.FilterSelector(filter=stale), wait=True),
        )
        if points:
            self._write_documents({source: [_size_of(p) for p in points]})
        entry = models.PointStruct(
            id=marker, vector={}, payload={"source": source, "fingerprint": fingerprint, "chunks": len(points)}
        )
        self._call("record the source", lambda: self._client.upsert(self.sources_collection, [entry], wait=True))

    def upsert(self, records: Iterable[ChunkRecord]) -> None:
        """Add records in batches, replacing points with the same id. `sources()` is unchanged.

        Args:
            records: The records.
        """
        self._check_writable()
        points = [self._point(record) for record in check_records(records, self.dimension)]
        if points:
            self._modified = True
            new_chunks: dict[str, list[tuple[str, npt.NDArray[np.float32], int]]] = {}
            for point in points:
                new_chunks.setdefault(str((point.payload or {})["source"]), []).append(_size_of(point))
            touched = sorted(new_chunks)
            merged = self._merge_documents(new_chunks)
            self._forget_documents(touched)
            self._upload(points)
            rescan = [source for source in touched if source not in merged]
            if rescan and self._has_documents_collection:
                merged.update(self._scan_chunks(rescan))
            self._write_documents(merged)

    def delete_source(self, source: str) -> int:
        """Forget the source's fingerprint, then delete its chunks.

        Args:
            source: The file path as indexed.

        Returns:
            The number of chunks deleted.
        """
        self._check_writable()
        check_source(source)
        only_source = models.Filter(must=[_source_is(source)])
        found = self._call(
            "count chunks", lambda: self._client.count(self.collection, count_filter=only_source, exact=True)
        ).count
        self._modified = True
        self._call(
            "forget the source",
            lambda: self._client.delete(
                self.sources_collection, models.PointIdsList(points=[_source_point_id(source)]), wait=True
            ),
        )
        self._forget_documents([source])
        self._call(
            "delete chunks",
            lambda: self._client.delete(self.collection, models.FilterSelector(filter=only_source), wait=True),
        )
        return int(found)

    def sources(self) -> dict[str, str]:
        """Map each fully stored source to its fingerprint."""
        self._check_open()
        if not self._has_sources_collection:
            return {}
        found: dict[str, str] = {}
        sources_collection = self.sources_collection
        points = self._scroll("list sources", sources_collection, _SCROLL_PAGE, with_payload=True, with_vectors=False)
        for point in points:
            payload = point.payload or {}
            if isinstance(payload.get("source"), str) and isinstance(payload.get("fingerprint"), str):
                found[payload["source"]] = payload["fingerprint"]
        return dict(sorted(found.items()))

    def _scroll(self, what: str, collection: str, page_size: int, **options: Any) -> Iterator[Any]:
        """Every point of `collection` (one scroll request per page, through `_call`'s error handling)."""
        offset: Any = None
        while True:
            page, offset = self._call(
                what, partial(self._client.scroll, collection, limit=page_size, offset=offset, **options)
            )
            yield from page
            if offset is None:
                return

    def count(self) -> int:
        """The number of stored chunks."""
        self._check_open()
        return int(self._call("count", lambda: self._client.count(self.collection, exact=True)).count)

    def search_many(self, query_vectors: npt.ArrayLike, k: int = 10) -> list[list[SearchHit]]:
        """Search many queries with batched query requests (64 per round trip).

        Args:
            query_vectors: A matrix of shape (n, dimension), L2-normalised.
            k: How many hits per query at most.

        Returns:
            One list of up to `k` hits per query, best first.
        """
        self._check_open()
        k = check_k(k)
        queries = as_query_matrix(query_vectors, self.dimension)
        results: list[list[SearchHit]] = []
        for start in range(0, queries.shape[0], _SEARCH_BATCH):
            requests = [
                models.QueryRequest(query=row.tolist(), limit=k, with_payload=True)
                for row in queries[start : start + _SEARCH_BATCH]
            ]
            responses = self._call("search", partial(self._client.query_batch_points, self.collection, requests))
            results.extend([_hit(point) for point in response.points] for response in responses)
        return results

    def _search_documents(
        self, queries: npt.NDArray[np.float32], k: int, scoring: DocumentScoring, evidence: int
    ) -> list[list[DocumentHit]]:
        """Over-fetch candidate documents, rescore them exactly from their stored chunk vectors (module docstring)."""
        if self.distance == "cosine":
            # Qdrant compares with the unit query; do the same so that rescored cosines equal Qdrant's.
            norms = np.linalg.norm(queries, axis=1, keepdims=True)
            queries = (queries / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        candidates = self._chunk_candidates(queries, k)
        short = any(len(found) < k for found in candidates)
        if (scoring.needs_group_vectors or short) and self._has_documents_collection:
            # The best documents by their exact `mean` score: candidates for `mean` and `hybrid`, and the fill-up
            # when the fetched chunks name fewer than k documents.
            best_mean = self._search_batches(self.documents_collection, queries, k * QDRANT_CANDIDATES, False)
            for found, points in zip(candidates, best_mean, strict=True):
                more = [str((p.payload or {}).get("source", "")) for p in points]
                if not scoring.needs_group_vectors:
                    have = set(found)
                    more = [name for name in more if name not in have][: max(0, k - len(found))]
                found.extend(more)
        documents = self._load_documents(sorted({source for found in candidates for source in found}))
        ranked: list[list[tuple[str, float, list[tuple[str, float]]]]] = []
        for query, found in zip(queries, candidates, strict=True):
            names = [name for name in dict.fromkeys(found) if name in documents]
            if not names:
                ranked.append([])
                continue
            parts = [documents[name] for name in names]
            ids = [chunk_id for part in parts for chunk_id in part.ids]
            groups = ChunkGroups.build(
                np.repeat(np.arange(len(parts)), [len(part.ids) for part in parts]).tolist(),
                [size for part in parts for size in part.sizes],
            )
            scores = np.concatenate([part.vectors for part in parts]) @ query
            group_scores = None
            if scoring.needs_group_vectors:
                means = np.stack(
                    [
                        parts[doc].group_vectors[size]
                        for doc, size in zip(groups.group_document.tolist(), groups.group_size.tolist(), strict=True)
                    ]
                )
                group_scores = means @ query
            best = rank_documents(scores, groups, scoring, k, evidence=evidence, group_scores=group_scores)
            ranked.append([(names[r.document], r.score, [(ids[c], float(scores[c])) for c in r.chunks]) for r in best])
        wanted_ids = sorted({chunk_id for hits in ranked for _, _, chunks in hits for chunk_id, _ in chunks})
        payloads: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted_ids), _SCROLL_PAGE):
            part = wanted_ids[start : start + _SCROLL_PAGE]
            records = self._call(
                "fetch evidence chunks",
                partial(self._client.retrieve, self.collection, part, with_payload=True, with_vectors=False),
            )
            payloads.update((str(record.id), record.payload or {}) for record in records)
        return [
            [
                DocumentHit(
                    source=source,
                    score=score,
                    chunks=[_payload_hit(payloads[i], i, s) for i, s in chunks if i in payloads],
                )
                for source, score, chunks in hits
            ]
            for hits in ranked
        ]

    def _search_batches(
        self, collection: str, queries: npt.NDArray[np.float32], limit: int, chunk_payload: bool
    ) -> list[list[models.ScoredPoint]]:
        results: list[list[models.ScoredPoint]] = []
        include = ["source", "chunk_tokens"] if chunk_payload else ["source"]
        for start in range(0, queries.shape[0], _SEARCH_BATCH):
            requests = [
                models.QueryRequest(query=row.tolist(), limit=limit, with_payload=include)
                for row in queries[start : start + _SEARCH_BATCH]
            ]
            responses = self._call("search", partial(self._client.query_batch_points, collection, requests))
            results.extend(list(response.points) for response in responses)
        return results

    def _chunk_candidates(self, queries: npt.NDArray[np.float32], k: int) -> list[list[str]]:
        """Per query, the sources of the best chunks, best first, at most `QDRANT_CANDIDATES * k` of them."""
        wanted = k * QDRANT_CANDIDATES
        if self.use_grouping_api:
            out = []
            for row in queries:
                result = self._call(
                    "search documents",
                    partial(
                        self._client.query_points_groups,
                        self.collection,
                        group_by="source",
                        query=row.tolist(),
                        limit=wanted,
                        group_size=1,
                        with_payload=False,
                    ),
                )
                out.append([str(group.id) for group in result.groups])
            return out
        found = self._search_batches(self.collection, queries, k * QDRANT_CHUNK_OVERFETCH, True)
        return [
            list(dict.fromkeys(str((p.payload or {}).get("source", "")) for p in points))[:wanted] for points in found
        ]

    def _merge_documents(
        self, new_chunks: dict[str, list[tuple[str, npt.NDArray[np.float32], int]]]
    ) -> dict[str, list[tuple[str, npt.NDArray[np.float32], int]]]:
        """Before an upsert: each touched source's chunks after it, where known without scanning the collection.

        A source's document point lists its stored chunks; one without a point and without chunks is new.
        """
        if not self._has_documents_collection:
            return {}
        stored = self._read_documents(sorted(new_chunks))
        missing = [source for source in new_chunks if source not in stored]
        new_sources: set[str] = set()
        if missing:
            only_missing = models.Filter(must=[_source_in(missing)])
            found = self._call(
                "count chunks", lambda: self._client.count(self.collection, count_filter=only_missing, exact=True)
            ).count
            if found == 0:
                new_sources = set(missing)
        out = {}
        for source, chunks in new_chunks.items():
            if source in stored:
                document = stored[source]
                replaced = {chunk[0] for chunk in chunks}
                kept = [
                    (chunk_id, document.vectors[j], document.sizes[j])
                    for j, chunk_id in enumerate(document.ids)
                    if chunk_id not in replaced
                ]
                out[source] = kept + chunks
            elif source in new_sources:
                out[source] = list(chunks)
        return out

    def _read_documents(self, sources: list[str]) -> dict[str, _StoredDocument]:
        """The document points of `sources` that exist and can be decoded."""
        out: dict[str, _StoredDocument] = {}
        if self._has_documents_collection and sources:
            ids = [_document_point_id(source) for source in sources]
            for start in range(0, len(ids), _SCROLL_PAGE):
                records = self._call(
                    "fetch documents",
                    partial(
                        self._client.retrieve,
                        self.documents_collection,
                        ids[start : start + _SCROLL_PAGE],
                        with_payload=True,
                        with_vectors=False,
                    ),
                )
                for record in records:
                    document = _StoredDocument.from_payload(record.payload or {}, self.dimension)
                    if document is not None:
                        out[document.source] = document
        return out

    def _load_documents(self, sources: list[str]) -> dict[str, _StoredDocument]:
        """All chunk ids, sizes and vectors of `sources`, with their group vectors, from the documents collection."""
        out = self._read_documents(sources)
        stale = [source for source in sources if source not in out]
        if stale:
            scanned = self._scan_chunks(stale)
            if scanned:
                logger.warning(
                    "Qdrant collection %r has no up-to-date document entry for %d sources (e.g. %s), an interrupted "
                    "write; they were rescored from a scan of their chunks: re-index them to fix it",
                    self.collection,
                    len(scanned),
                    next(iter(scanned)),
                )
            for source, chunks in scanned.items():
                out[source] = _StoredDocument.from_chunks(source, chunks)
        return out

    def _scan_chunks(self, sources: list[str] | None) -> dict[str, list[tuple[str, npt.NDArray[np.float32], int]]]:
        """Every chunk of `sources` (None: of the whole collection) as (point id, vector, chunk size), by source."""
        flt = None if sources is None else models.Filter(must=[_source_in(sources)])
        found: dict[str, list[tuple[str, npt.NDArray[np.float32], int]]] = {}
        # Local mode filters and sorts the whole collection for every page: few large pages there.
        page_size = _SCROLL_PAGE if self._remote else 65536
        points = self._scroll(
            "scan chunks",
            self.collection,
            page_size,
            scroll_filter=flt,
            with_payload=["source", "chunk_tokens", "metadata"],
            with_vectors=True,
        )
        for point in points:
            payload = point.payload or {}
            size = payload.get("chunk_tokens")
            if not isinstance(size, int):
                size = chunk_size_of(payload.get("metadata") or {})
            vector = np.asarray(point.vector, dtype=np.float32)
            found.setdefault(str(payload.get("source", "")), []).append((str(point.id), vector, size))
        return found

    def _forget_documents(self, sources: list[str]) -> None:
        """Delete the document points of `sources` (before their chunks change, so none is ever out of date)."""
        if not self._has_documents_collection or not sources:
            return
        ids = [_document_point_id(source) for source in sources]
        self._call(
            "forget document entries",
            lambda: self._client.delete(self.documents_collection, models.PointIdsList(points=ids), wait=True),
        )

    def _refresh_documents(self, sources: list[str] | None) -> None:
        """Write the document points of `sources` (None: all) from their stored chunks."""
        if self._has_documents_collection:
            self._write_documents(self._scan_chunks(sources))

    def _write_documents(self, chunks: dict[str, list[tuple[str, npt.NDArray[np.float32], int]]]) -> None:
        if not self._has_documents_collection:
            return
        if self.distance == "cosine":
            # Mirror Qdrant, which stores unit vectors in a cosine collection, so rescored cosines equal its own.
            chunks = {
                source: [(i, v / n if (n := float(np.linalg.norm(v))) > 0 else v, size) for i, v, size in members]
                for source, members in chunks.items()
            }
        points = [_document_point(source, members) for source, members in chunks.items() if members]
        for start in range(0, len(points), self._batch_size):
            batch = points[start : start + self._batch_size]
            self._call(
                "write document entries", partial(self._client.upsert, self.documents_collection, batch, wait=True)
            )

    def describe(self) -> dict[str, Any]:
        """Backend, collection, location, distance, counts and dimension, as JSON types."""
        mode = "server" if self._remote else ("memory" if self.path == MEMORY else "local")
        return {
            "backend": self.backend,
            "index": "qdrant-hnsw",
            "mode": mode,
            "location": self.location,
            "collection": self.collection,
            "distance": self.distance,
            "count": self.count(),
            "sources": len(self.sources()),
            "dimension": self.dimension,
            "read_only": self.read_only,
            **self._manifest_summary(),
        }

    def _commit_backend(self, *, final: bool) -> None:
        # Nothing is buffered: every write above waited for Qdrant's acknowledgement (wait=True), which is Qdrant's
        # durability point (its WAL on a server, the storage file in local mode).
        self._check_open()

    def _close_backend(self) -> None:
        self._client.close()

    def _connect(self, api_key: str | None, timeout: float, *, create: bool) -> QdrantClient:
        if self.url is not None:
            # check_compatibility=False: its version probe would hit the server before our own reachability check.
            return QdrantClient(
                url=self.url,
                api_key=api_key,
                timeout=max(1, math.ceil(timeout)),
                prefer_grpc=False,
                check_compatibility=False,
            )
        if self.path == MEMORY:
            return QdrantClient(location=MEMORY)
        folder = Path(str(self.path))
        if not folder.exists() and not create:
            raise IndexNotFoundError(
                f"there is no local Qdrant storage at {folder}; build the index with `tempscale-rag index`"
            )
        try:
            return QdrantClient(path=str(folder))
        except RuntimeError as exc:
            # qdrant-client's local mode allows one client per folder and raises RuntimeError otherwise.
            raise StoreUnavailableError(f"local Qdrant storage {folder} is in use by another client: {exc}") from None

    def _ensure_collections(self, *, create: bool) -> None:
        if self._call("connect", lambda: self._client.collection_exists(self.collection)):
            self._check_collection()
            if create:
                self._index_source_field(self.collection)
        elif create:
            self._call(
                "create the collection",
                lambda: self._client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=self.dimension, distance=_DISTANCES[self.distance]),
                ),
            )
            self._index_source_field(self.collection)
        else:
            raise IndexNotFoundError(
                f"Qdrant at {self.location} has no collection {self.collection!r}; "
                "build it with `tempscale-rag index DOCS --store qdrant` or check --collection"
            )
        self._has_sources_collection = bool(
            self._call("connect", lambda: self._client.collection_exists(self.sources_collection))
        )
        if not self._has_sources_collection and create:
            self._call(
                "create the sources collection",
                lambda: self._client.create_collection(self.sources_collection, vectors_config={}),
            )
            self._index_source_field(self.sources_collection)
            self._has_sources_collection = True
        self._has_documents_collection = bool(
            self._call("connect", lambda: self._client.collection_exists(self.documents_collection))
        )
        if not self._has_documents_collection and create:
            self._call(
                "create the documents collection",
                lambda: self._client.create_collection(
                    self.documents_collection,
                    vectors_config=models.VectorParams(size=self.dimension, distance=models.Distance.DOT),
                ),
            )
            self._has_documents_collection = True
            # An index written before document ranking existed: derive the document points once.
            if self.count():
                self._refresh_documents(None)

    def _check_collection(self) -> None:
        info = self._call("read the collection", lambda: self._client.get_collection(self.collection))
        vectors = info.config.params.vectors
        wanted = f"{self.dimension}-dimensional vectors with {self.distance} distance"
        if not isinstance(vectors, models.VectorParams):
            raise IndexMismatchError(
                f"Qdrant collection {self.collection!r} at {self.location} uses named vectors; this index needs one "
                f"unnamed vector ({wanted}): use another --collection"
            )
        if vectors.size != self.dimension or vectors.distance != _DISTANCES[self.distance]:
            have = f"{vectors.size}-dimensional vectors with {vectors.distance.value.lower()} distance"
            raise IndexMismatchError(
                f"Qdrant collection {self.collection!r} at {self.location} holds {have}; this index needs {wanted}: "
                "use another --collection, or the model and distance that built this one"
            )

    def _index_source_field(self, collection: str) -> None:
        # Local mode ignores payload indexes (and warns); servers need one to delete and count by source quickly.
        # Creating an index that exists already is accepted by Qdrant, so this also covers collections made elsewhere.
        if self._remote:
            self._call(
                "index the source field",
                lambda: self._client.create_payload_index(
                    collection, "source", models.PayloadSchemaType.KEYWORD, wait=True
                ),
            )

    def _point(self, record: ChunkRecord) -> models.PointStruct:
        return models.PointStruct(
            id=point_id(record.id),
            vector=record.vector.tolist(),
            payload={
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

    def _upload(self, points: list[models.PointStruct]) -> None:
        total = len(points)
        for start in range(0, total, self._batch_size):
            batch = points[start : start + self._batch_size]
            self._call("upsert", partial(self._client.upsert, self.collection, batch, wait=True))
            if self._progress is not None:
                self._progress(min(start + self._batch_size, total), total)

    def _call(self, action: str, request: Callable[[], T]) -> T:
        """Run one Qdrant request, retrying network failures with exponential backoff."""
        delay = self._backoff
        attempt = 0
        while True:
            try:
                return request()
            except Exception as exc:
                if isinstance(exc, UnexpectedResponse) and exc.status_code in _AUTH_STATUS:
                    raise StoreUnavailableError(
                        f"Qdrant at {self.location} refused the request ({action}: HTTP {exc.status_code}); "
                        "check the API key"
                    ) from None
                reason = _transient_reason(exc)
                if reason is None:
                    raise
                if attempt >= self._retries:
                    raise StoreUnavailableError(
                        f"Qdrant at {self.location} is unreachable ({action}: {reason}); "
                        "check the URL and that the server is running"
                    ) from None
                logger.warning("Qdrant at %s: %s failed (%s); retrying in %.1f s", self.location, action, reason, delay)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                attempt += 1


@dataclass(frozen=True)
class _StoredDocument:
    """One source's chunks as stored: point ids, chunk sizes, vectors, and each size's mean unit vector."""

    source: str
    ids: list[str]
    sizes: list[int]
    vectors: npt.NDArray[np.float32]
    group_vectors: dict[int, npt.NDArray[np.float32]]

    @classmethod
    def from_chunks(cls, source: str, chunks: list[tuple[str, npt.NDArray[np.float32], int]]) -> _StoredDocument:
        """Group (point id, vector, chunk size) triples; chunks end up in group order (size by size)."""
        groups = ChunkGroups.build([0] * len(chunks), [chunk[2] for chunk in chunks])
        order = groups.order.tolist()
        vectors = np.stack([chunks[i][1] for i in order]).astype(np.float32)
        means = group_vectors(np.stack([chunk[1] for chunk in chunks]).astype(np.float32), groups)
        return cls(
            source=source,
            ids=[chunks[i][0] for i in order],
            sizes=[chunks[i][2] for i in order],
            vectors=vectors,
            group_vectors=dict(zip(groups.group_size.tolist(), means, strict=True)),
        )

    @classmethod
    def from_payload(cls, payload: dict[str, Any], dimension: int) -> _StoredDocument | None:
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


_DOCUMENT_FORMAT = 1


def _encode(vectors: npt.NDArray[np.float32]) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: str, rows: int, dimension: int) -> npt.NDArray[np.float32]:
    data = binascii.a2b_base64(text, strict_mode=True)
    if len(data) != 4 * rows * dimension:
        raise ValueError(f"expected {rows} vectors of dimension {dimension}")
    return np.frombuffer(data, dtype="<f4").reshape(rows, dimension).astype(np.float32)


def _document_point(source: str, chunks: list[tuple[str, npt.NDArray[np.float32], int]]) -> models.PointStruct:
    """The document point of a source; its vector is the mean of its group vectors (so q . v is the `mean` score)."""
    document = _StoredDocument.from_chunks(source, chunks)
    vector = np.mean(np.stack(list(document.group_vectors.values())).astype(np.float64), axis=0)
    return models.PointStruct(
        id=_document_point_id(source), vector=vector.astype(np.float32).tolist(), payload=document.payload()
    )


def _size_of(point: models.PointStruct) -> tuple[str, npt.NDArray[np.float32], int]:
    payload = point.payload or {}
    return str(point.id), np.asarray(point.vector, dtype=np.float32), int(payload["chunk_tokens"])


def _source_in(sources: list[str]) -> models.FieldCondition:
    return models.FieldCondition(key="source", match=models.MatchAny(any=sources))


def _payload_hit(payload: dict[str, Any], point: str, score: float) -> SearchHit:
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


def _source_is(source: str) -> models.FieldCondition:
    return models.FieldCondition(key="source", match=models.MatchValue(value=source))


def _hit(point: models.ScoredPoint) -> SearchHit:
    return _payload_hit(point.payload or {}, str(point.id), float(point.score))
