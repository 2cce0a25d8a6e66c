"""`QdrantStore`: chunks in a Qdrant collection, on a server (`url`) or in qdrant-client's local mode (`path`).

Two collections per index:

- `<collection>`: one point per chunk. The point id is `uuid5(record.id)`, so re-indexing overwrites instead of
  duplicating; the payload holds the chunk fields (`source` carries a keyword payload index on servers).
- `<collection>__sources`: one vector-less point per fully stored source, `{source, fingerprint, chunks}`.

`replace_source` first forgets the source's fingerprint, then upserts the new chunks, deletes the source's other
chunks, and records the fingerprint last. A crash anywhere in between leaves the source out of `sources()`, so the
indexer redoes it; there is no state in which `sources()` vouches for an incomplete source.

Every write waits for Qdrant's acknowledgement (`wait=True`). Network failures (connection errors, timeouts, HTTP
502/503/504) are retried with exponential backoff; anything else (4xx, 500) fails at once. When the retries are spent
the call raises `StoreUnavailableError` naming the URL.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy.typing as npt
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from tempscale_rag.stores.base import (
    ChunkRecord,
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
)
from tempscale_rag.stores.manifest import QdrantDistance

logger = logging.getLogger(__name__)

T = TypeVar("T")

MEMORY = ":memory:"
"""Pass as `path` for a throw-away in-process store."""

SOURCES_SUFFIX = "__sources"
"""Suffix of the collection that records each stored source's fingerprint."""

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
        api_key: API key for the server (never stored anywhere by this class).
        timeout: Per-request timeout in seconds (servers only).
        distance: `"cosine"` (Qdrant normalises vectors) or `"dot"` (the raw inner product, exactly like FAISS).
        batch_size: Points per upsert request.
        retries: Retries after a network failure, with exponential backoff.
        backoff: First backoff delay in seconds (doubled after each retry, at most 30 s).
        create: Create missing collections.
        read_only: Refuse writes; with `create` ignored.
        progress: Called as `progress(done, total)` after each uploaded batch.

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
        self.distance: QdrantDistance = distance
        self.url = url
        self.path = None if path is None else str(path)
        self._batch_size = batch_size
        self._retries = retries
        self._backoff = float(backoff)
        self._progress = progress
        self._remote = url is not None
        self._has_sources_collection = False
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
        self._upload(points)
        stale = models.Filter(
            must=[_source_is(source)],
            must_not=[models.HasIdCondition(has_id=[p.id for p in points])] if points else None,
        )
        self._call(
            "delete stale chunks",
            lambda: self._client.delete(self.collection, models.FilterSelector(filter=stale), wait=True),
        )
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
            self._upload(points)

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
        offset: Any = None
        while True:
            page, offset = self._call(
                "list sources",
                partial(
                    self._client.scroll,
                    self.sources_collection,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=True,
                    with_vectors=False,
                ),
            )
            for point in page:
                payload = point.payload or {}
                if isinstance(payload.get("source"), str) and isinstance(payload.get("fingerprint"), str):
                    found[payload["source"]] = payload["fingerprint"]
            if offset is None:
                return dict(sorted(found.items()))

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


def _source_is(source: str) -> models.FieldCondition:
    return models.FieldCondition(key="source", match=models.MatchValue(value=source))


def _hit(point: models.ScoredPoint) -> SearchHit:
    payload = point.payload or {}
    return SearchHit(
        id=str(payload.get("chunk_id", point.id)),
        score=float(point.score),
        text=str(payload.get("text", "")),
        source=str(payload.get("source", "")),
        position=int(payload.get("position", 0)),
        token_length=int(payload.get("token_length", 0)),
        bucket=str(payload.get("bucket", "")),
        metadata=dict(payload.get("metadata") or {}),
    )
