"""The connection to Qdrant: opening the client (server or local mode), retries, and the collections' setup.

Every request goes through `QdrantConnection.call`: network failures (connection errors, timeouts, HTTP 502/503/504)
are retried with exponential backoff; anything else (4xx, 500) fails at once. When the retries are spent the call
raises `StoreUnavailableError` naming the URL; a rejected API key (401/403) raises it at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from tempscale_rag.stores.errors import IndexMismatchError, IndexNotFoundError, StoreUnavailableError
from tempscale_rag.stores.manifest import QdrantDistance

logger = logging.getLogger(__name__)

T = TypeVar("T")

MEMORY = ":memory:"
"""Pass as `path` for a throw-away in-process store."""

DISTANCES: dict[str, models.Distance] = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT}
SEARCH_BATCH = 64
"""Queries per batched query request."""
SCROLL_PAGE = 1024
"""Points per scroll or retrieve request."""

_RETRY_STATUS = frozenset({502, 503, 504})
_AUTH_STATUS = frozenset({401, 403})
_MAX_BACKOFF = 30.0


def transient_reason(exc: BaseException) -> str | None:
    """A short reason if `exc` is a network failure worth retrying, else None."""
    if isinstance(exc, ResponseHandlingException):
        return transient_reason(exc.source)
    if isinstance(exc, httpx.TransportError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, UnexpectedResponse) and exc.status_code in _RETRY_STATUS:
        return f"HTTP {exc.status_code} {exc.reason_phrase}".strip()
    return None


def check_options(
    url: str | None,
    path: str | Path | None,
    collection: str,
    distance: str,
    batch_size: int,
    retries: int,
    timeout: float,
    backoff: float,
) -> None:
    """Validate `QdrantStore`'s arguments.

    Raises:
        ValueError: On a bad combination or value.
    """
    if (url is None) == (path is None):
        raise ValueError("give exactly one of url (a Qdrant server) or path (a local folder, or ':memory:')")
    if not isinstance(collection, str) or not collection:
        raise ValueError(f"collection must be a non-empty str, got {collection!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be 'cosine' or 'dot', got {distance!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    if not math.isfinite(timeout) or timeout <= 0 or not math.isfinite(backoff) or backoff < 0:
        raise ValueError(f"timeout must be > 0 and backoff >= 0 seconds, got {timeout!r} and {backoff!r}")


def open_client(
    url: str | None, path: str | None, api_key: str | None, timeout: float, *, create: bool
) -> QdrantClient:
    """A client for the server at `url`, or for local mode in `path` (or `:memory:`).

    Raises:
        IndexNotFoundError: If the local folder is missing and may not be created.
        StoreUnavailableError: If the local folder is in use by another client.
    """
    if url is not None:
        # check_compatibility=False: its version probe would hit the server before our own reachability check.
        return QdrantClient(
            url=url, api_key=api_key, timeout=max(1, math.ceil(timeout)), prefer_grpc=False, check_compatibility=False
        )
    if path == MEMORY:
        return QdrantClient(location=MEMORY)
    folder = Path(str(path))
    if not folder.exists() and not create:
        raise IndexNotFoundError(
            f"there is no local Qdrant storage at {folder}; build the index with `tempscale-rag index`"
        )
    try:
        return QdrantClient(path=str(folder))
    except RuntimeError as exc:
        # qdrant-client's local mode allows one client per folder and raises RuntimeError otherwise.
        raise StoreUnavailableError(f"local Qdrant storage {folder} is in use by another client: {exc}") from None


class QdrantConnection:
    """A client with retries: every request of a store goes through `call`.

    Args:
        client: The qdrant-client.
        location: The server URL or local folder, for messages.
        remote: Whether it is a server.
        retries: Retries after a network failure.
        backoff: First backoff delay in seconds (doubled after each retry, at most 30 s).
    """

    def __init__(self, client: QdrantClient, location: str, *, remote: bool, retries: int, backoff: float) -> None:
        self.client = client
        self.location = location
        self.remote = remote
        self._retries = retries
        self._backoff = backoff

    def call(self, action: str, request: Callable[[], T]) -> T:
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
                reason = transient_reason(exc)
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

    def scroll(self, what: str, collection: str, page_size: int, **options: Any) -> Iterator[Any]:
        """Every point of `collection` (one scroll request per page)."""
        offset: Any = None
        while True:
            page, offset = self.call(
                what, partial(self.client.scroll, collection, limit=page_size, offset=offset, **options)
            )
            yield from page
            if offset is None:
                return

    def retrieve(self, what: str, collection: str, ids: list[str]) -> list[models.Record]:
        """The points of `collection` with the given ids that exist, with payloads, without vectors."""
        records: list[models.Record] = []
        for start in range(0, len(ids), SCROLL_PAGE):
            part = ids[start : start + SCROLL_PAGE]
            records.extend(
                self.call(what, partial(self.client.retrieve, collection, part, with_payload=True, with_vectors=False))
            )
        return records

    def query_batches(
        self, collection: str, queries: npt.NDArray[np.float32], limit: int, payload: bool | list[str]
    ) -> list[list[models.ScoredPoint]]:
        """The best `limit` points of `collection` per query, `SEARCH_BATCH` queries per request."""
        results: list[list[models.ScoredPoint]] = []
        for start in range(0, queries.shape[0], SEARCH_BATCH):
            requests = [
                models.QueryRequest(query=row.tolist(), limit=limit, with_payload=payload)
                for row in queries[start : start + SEARCH_BATCH]
            ]
            responses = self.call("search", partial(self.client.query_batch_points, collection, requests))
            results.extend(list(response.points) for response in responses)
        return results

    def exists(self, collection: str) -> bool:
        """Whether `collection` exists."""
        return bool(self.call("connect", lambda: self.client.collection_exists(collection)))

    def create(
        self,
        what: str,
        collection: str,
        vectors: models.VectorParams | dict[str, Any],
        *,
        index_source: bool,
        sparse: dict[str, models.SparseVectorParams] | None = None,
    ) -> None:
        """Create `collection` (and, on a server, its `source` payload index); `what` names it in errors.

        `sparse` names the collection's sparse vectors, if any.
        """
        self.call(
            f"create the {what}",
            lambda: self.client.create_collection(collection, vectors_config=vectors, sparse_vectors_config=sparse),
        )
        if index_source:
            self.index_source_field(collection)

    def index_source_field(self, collection: str) -> None:
        """On a server, a keyword index on `source` (deleting and counting by source needs it to be fast)."""
        # Local mode ignores payload indexes (and warns). Creating an index that exists already is accepted by
        # Qdrant, so this also covers collections made elsewhere.
        if self.remote:
            self.call(
                "index the source field",
                lambda: self.client.create_payload_index(
                    collection, "source", models.PayloadSchemaType.KEYWORD, wait=True
                ),
            )

    def check_vectors(self, collection: str, dimension: int, distance: QdrantDistance) -> None:
        """Refuse an existing collection whose vectors differ from `dimension` and `distance`.

        Raises:
            IndexMismatchError: On named vectors, another size or another distance.
        """
        info = self.call("read the collection", lambda: self.client.get_collection(collection))
        vectors = info.config.params.vectors
        wanted = f"{dimension}-dimensional vectors with {distance} distance"
        if not isinstance(vectors, models.VectorParams):
            raise IndexMismatchError(
                f"Qdrant collection {collection!r} at {self.location} uses named vectors; this index needs one "
                f"unnamed vector ({wanted}): use another --collection"
            )
        if vectors.size != dimension or vectors.distance != DISTANCES[distance]:
            have = f"{vectors.size}-dimensional vectors with {vectors.distance.value.lower()} distance"
            raise IndexMismatchError(
                f"Qdrant collection {collection!r} at {self.location} holds {have}; this index needs {wanted}: "
                "use another --collection, or the model and distance that built this one"
            )

    def sparse_vectors(self, collection: str) -> dict[str, models.Modifier | None]:
        """The sparse vectors of `collection`, with their modifiers (None: none)."""
        info = self.call("read the collection", lambda: self.client.get_collection(collection))
        sparse = info.config.params.sparse_vectors or {}
        return {name: getattr(params, "modifier", None) for name, params in sparse.items()}

    def add_sparse_vector(self, collection: str, name: str) -> None:
        """Add the sparse vector `name` (IDF modifier) to an existing collection.

        Raises:
            IndexMismatchError: If Qdrant refuses (a server older than the named-vector API).
        """
        config = models.SparseVectorNameConfig(sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF))
        try:
            self.call(
                "add a sparse vector", lambda: self.client.create_vector_name(collection, name, config, wait=True)
            )
        except UnexpectedResponse as exc:
            raise IndexMismatchError(
                f"Qdrant at {self.location} cannot add the sparse vector {name!r} to the existing collection "
                f"{collection!r} (HTTP {exc.status_code}: a server older than the named-vector API); re-index into a "
                "new collection to get the lexical channel"
            ) from None
