"""`QdrantStore`: chunks in a Qdrant collection, on a server (`url`) or in qdrant-client's local mode (`path`).

Three collections per index (point formats in `points.py`): `<collection>` (one point per chunk),
`<collection>__sources` (one point per fully stored source: its fingerprint) and `<collection>__documents` (one
point per source, for document ranking, kept by `documents.py`).

`replace_source` first forgets the source's fingerprint and deletes its document point, then upserts the new chunks,
deletes the source's other chunks, writes the document point, and records the fingerprint last. A crash anywhere in
between leaves the source out of `sources()`, so the indexer redoes it; there is no state in which `sources()` vouches
for an incomplete source.

`replace_source_batches` (a big file, from the indexer's staged batches) takes the same steps holding one batch at a
time, and writes a summary document point without the copy of the chunk vectors (`streaming.py`).

Document ranking (`tempscale_rag.ranking`) finds candidates here: the best chunks name candidate documents (on a
server through Qdrant's grouping API, `query_points_groups` grouped by `source`; in local mode, which implements
grouping by materialising every point, through a plain over-fetching query), the documents collection gives the best
documents by their exact `mean` score and every candidate's chunk vectors for exact rescoring.

The lexical (BM25) channel, when the index has one, is a sparse vector on the chunk points themselves
(`lexical.py`), so every write above keeps it in step with the dense vectors.

Every write waits for Qdrant's acknowledgement (`wait=True`); requests are retried as `connection.py` describes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from qdrant_client import QdrantClient, models

from tempscale_rag.config import LexicalSettings
from tempscale_rag.ranking.candidates import CandidatePolicy, ChunkTable
from tempscale_rag.stores.base import (
    ChunkRecord,
    ProgressCallback,
    SearchHit,
    VectorStore,
    as_query_matrix,
    check_fingerprint,
    check_k,
    check_records,
    check_source,
)
from tempscale_rag.stores.errors import IndexNotFoundError
from tempscale_rag.stores.manifest import QdrantDistance
from tempscale_rag.stores.qdrant.connection import (
    DISTANCES,
    MEMORY,
    SCROLL_PAGE,
    QdrantConnection,
    check_options,
    open_client,
)
from tempscale_rag.stores.qdrant.documents import DocumentPoints
from tempscale_rag.stores.qdrant.lexical import (
    LEXICAL_VECTOR,
    LexicalChannel,
    add_channel,
    chunk_points,
    count_lexical,
    ensure_lexical_vector,
    search_channel,
    sparse_vector_params,
)
from tempscale_rag.stores.qdrant.points import (
    Chunk,
    chunks_of,
    documents_table,
    payload_hit,
    point_struct,
    scored_hit,
    source_is,
    source_point_id,
)
from tempscale_rag.stores.qdrant.streaming import DocumentSummary, delete_stale, upload_batches

SOURCES_SUFFIX = "__sources"
"""Suffix of the collection that records each stored source's fingerprint."""

DOCUMENTS_SUFFIX = "__documents"
"""Suffix of the collection that holds each source's chunk ids and group vectors, for document ranking."""

QDRANT_CHUNK_OVERFETCH = 10
"""Document ranking fetches this many chunks per wanted document to find candidate documents."""

QDRANT_CANDIDATES = 2
"""Document ranking rescores this many candidate documents per wanted document (reading one costs a point read)."""

QDRANT_POLICY = CandidatePolicy(
    chunk_overfetch=QDRANT_CHUNK_OVERFETCH, documents=QDRANT_CANDIDATES, mean_documents=QDRANT_CANDIDATES
)


class SourceChunks:
    """Which sources may have stored chunks, so that `replace_source` deletes stale chunks only there: here, all.

    Deleting a source's stale chunks is a filtered write; Qdrant Edge's one writer knows which sources have chunks
    (`edge.EdgeSourceChunks`) and skips the delete for new sources.
    """

    def may_have(self, source: str) -> bool:
        """Whether `source` may have stored chunks."""
        return True

    def written(self, sources: list[str]) -> None:
        """Chunks of `sources` are about to be written."""

    def deleted(self, source: str) -> None:
        """Every chunk of `source` is deleted."""


def delete_stale_chunks(connection: QdrantConnection, collection: str, source: str, keep: list[str]) -> None:
    """Delete the chunks of `source` whose point ids are not in `keep`."""
    stale = models.Filter(must=[source_is(source)], must_not=[models.HasIdCondition(has_id=keep)] if keep else None)
    connection.call(
        "delete stale chunks",
        lambda: connection.client.delete(collection, models.FilterSelector(filter=stale), wait=True),
    )


class QdrantStore(VectorStore):
    """A `VectorStore` on Qdrant: a server at `url`, or local mode in `path` (or `":memory:"`).

    Args:
        dimension: Vector dimension; an existing collection must match it.
        collection: Collection name (`<collection>__sources` and `<collection>__documents` are made beside it).
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
        lexical: The lexical (BM25) channel (`manifest.lexical`); None: dense only (`add_lexical` adds one later).

    Attributes:
        use_grouping_api: Find candidate documents with Qdrant's grouping API (`query_points_groups`); True for a
            server, False in local mode, where a plain over-fetching query is much faster.

    Raises:
        StoreUnavailableError: If the server cannot be reached, rejects the API key, or the local folder is in use.
        IndexNotFoundError: If the collection is missing and may not be created.
        IndexMismatchError: If the collection exists with another vector size or distance, or without the lexical
            channel that `lexical` asks for.
    """

    backend = "qdrant"
    pydantic_points: ClassVar[bool] = True  # the client takes `PointStruct`s (qdrant-client), not `ChunkPoint`s

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
        lexical: LexicalSettings | None = None,
    ) -> None:
        super().__init__(dimension, read_only=read_only)
        self._lexical = None if lexical is None else LexicalChannel(lexical)
        check_options(url, path, collection, distance, batch_size, retries, timeout, backoff)
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
        self.source_chunks = SourceChunks()
        # Qdrant's grouping API on a server; local mode implements it by materialising every point (seconds per query).
        self.use_grouping_api = url is not None
        client = self._open_client(api_key, timeout, create=create and not read_only)
        self._connection = QdrantConnection(
            client, self.location, remote=self._remote, retries=retries, backoff=self._backoff
        )
        self._documents = DocumentPoints(
            self._connection,
            collection,
            self.documents_collection,
            dimension=self.dimension,
            distance=distance,
            batch_size=batch_size,
        )
        self._documents.lexical = self._lexical
        try:
            self._ensure_collections(create=create and not read_only)
        except BaseException:
            client.close()
            raise

    def _open_client(self, api_key: str | None, timeout: float, *, create: bool) -> QdrantClient:
        """The client of this store (qdrant-client's; `EdgeStore` gives one on Qdrant Edge instead)."""
        return open_client(self.url, self.path, api_key, timeout, create=create)

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
        two writers at once is not supported. Close the writer when done; this store's `commit()` then tells its
        owner (which refreshes the manifest) as usual.

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
        self._modified = True  # the writer writes for this store: its commit() must tell the owner
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
            lexical=self.lexical,
        )

    @property
    def client(self) -> QdrantClient:
        """The underlying qdrant-client (for inspection; writing through it bypasses the fingerprint bookkeeping)."""
        return self._connection.client

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
        checked = check_records(records, self.dimension, source=source)
        points = chunk_points(checked, self._lexical, self.location)
        may_have_chunks = self._forget_source(source, fingerprint)
        self._upload(points)
        if may_have_chunks:
            delete_stale_chunks(self._connection, self.collection, source, [point.id for point in points])
        if points:
            self._documents.write({source: chunks_of(checked, points)})
        self._record_source(source, fingerprint, len(points))

    def replace_source_batches(self, source: str, fingerprint: str, batches: Iterable[Iterable[ChunkRecord]]) -> int:
        """`replace_source` from a stream of batches, one at a time (`streaming.py`); the source's chunk count now.

        Raises:
            ValueError, TypeError: A bad record, or a chunk id in two batches: the source is left out of `sources()`.
        """
        self._check_writable()
        may_have_chunks = self._forget_source(source, fingerprint)
        summary = DocumentSummary(self.dimension, unit=self.distance == "cosine", channel=self._lexical)
        upload = partial(self._upload, report=False)
        kept = upload_batches(batches, summary, source, self._lexical, self.location, upload)
        if may_have_chunks:
            delete_stale(self._connection, self.collection, source, kept)
        self._documents.write_summary(summary.point(source))
        self._record_source(source, fingerprint, summary.chunks)
        return summary.chunks

    def _forget_source(self, source: str, fingerprint: str | None = None) -> bool:
        """A write's first steps: forget the source's fingerprint and document point; whether it may have chunks."""
        check_source(source)
        if fingerprint is not None:
            check_fingerprint(fingerprint)
        client = self._connection.client
        marker = models.PointIdsList(points=[source_point_id(source)])
        self._connection.call("forget the source", lambda: client.delete(self.sources_collection, marker, wait=True))
        self._modified = True
        self._documents.forget([source])
        may_have_chunks = self.source_chunks.may_have(source)
        self.source_chunks.written([source])
        return may_have_chunks

    def _record_source(self, source: str, fingerprint: str, chunks: int) -> None:
        """Record the fingerprint of a source whose chunks and document point are written (a write's last step)."""
        client = self._connection.client
        payload = {"source": source, "fingerprint": fingerprint, "chunks": chunks}
        entry = models.PointStruct(id=source_point_id(source), vector={}, payload=payload)
        self._connection.call("record the source", lambda: client.upsert(self.sources_collection, [entry], wait=True))

    def upsert(self, records: Iterable[ChunkRecord]) -> None:
        """Add records in batches, replacing points with the same id. `sources()` is unchanged.

        Args:
            records: The records.
        """
        self._check_writable()
        checked = check_records(records, self.dimension)
        points = chunk_points(checked, self._lexical, self.location)
        if not points:
            return
        self._modified = True
        new_chunks: dict[str, list[Chunk]] = {}
        for record, chunk in zip(checked, chunks_of(checked, points), strict=True):
            new_chunks.setdefault(record.source, []).append(chunk)
        touched = sorted(new_chunks)
        merged = self._documents.merge(new_chunks)
        self._documents.forget(touched)
        self.source_chunks.written(touched)
        self._upload(points)
        rescan = [source for source in touched if source not in merged]
        if rescan and self._documents.exists:
            merged.update(self._documents.scan(rescan))
        self._documents.write(merged)

    def delete_source(self, source: str) -> int:
        """Forget the source's fingerprint, then delete its chunks.

        Args:
            source: The file path as indexed.

        Returns:
            The number of chunks deleted.
        """
        self._check_writable()
        check_source(source)
        client = self._connection.client
        only_source = models.Filter(must=[source_is(source)])
        found = self._connection.call(
            "count chunks", lambda: client.count(self.collection, count_filter=only_source, exact=True)
        ).count
        self._forget_source(source)
        self._connection.call(
            "delete chunks",
            lambda: client.delete(self.collection, models.FilterSelector(filter=only_source), wait=True),
        )
        self.source_chunks.deleted(source)
        return int(found)

    def sources(self) -> dict[str, str]:
        """Map each fully stored source to its fingerprint."""
        self._check_open()
        if not self._has_sources_collection:
            return {}
        found: dict[str, str] = {}
        points = self._connection.scroll(
            "list sources", self.sources_collection, SCROLL_PAGE, with_payload=True, with_vectors=False
        )
        for point in points:
            payload = point.payload or {}
            if isinstance(payload.get("source"), str) and isinstance(payload.get("fingerprint"), str):
                found[payload["source"]] = payload["fingerprint"]
        return dict(sorted(found.items()))

    def count(self) -> int:
        """The number of stored chunks."""
        self._check_open()
        client = self._connection.client
        return int(self._connection.call("count", lambda: client.count(self.collection, exact=True)).count)

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
        found = self._connection.query_batches(self.collection, queries, k, True)
        return [[scored_hit(point) for point in points] for points in found]

    def dense_chunks(
        self, query_vectors: npt.ArrayLike, n: int
    ) -> list[tuple[npt.NDArray[Any], npt.NDArray[np.float32]]]:
        """(point ids, scores) of each query's best `n` chunks, no payload read: what hybrid chunk search fuses."""
        self._check_open()
        queries = as_query_matrix(query_vectors, self.dimension)
        return point_keys(self._connection.query_batches(self.collection, queries, check_k(n), False))

    # --- the document-ranking contract (`tempscale_rag.ranking.candidates.DocumentSource`) ---------------------------

    @property
    def candidate_policy(self) -> CandidatePolicy:
        """Over-fetch `QDRANT_CHUNK_OVERFETCH` chunks and rescore `QDRANT_CANDIDATES` documents per wanted document."""
        return QDRANT_POLICY

    @property
    def unit_queries(self) -> bool:
        """True for cosine distance: Qdrant compares with the unit query, so rescoring does too."""
        return self.distance == "cosine"

    def document_table(self, sources: Sequence[str] | None) -> ChunkTable | None:
        """The stored chunks of `sources` (from their document points), in the order given."""
        self._check_open()
        wanted = list(sources) if sources is not None else sorted(self.sources())
        loaded = self._documents.load(wanted)
        return documents_table([loaded[name] for name in wanted if name in loaded])

    def chunk_candidates(
        self, queries: npt.NDArray[np.float32], n_chunks: int, n_documents: int | None
    ) -> list[list[str]]:
        """The sources of the best chunks, per query: through the grouping API, or an over-fetching query."""
        self._check_open()
        if self.use_grouping_api and n_documents is not None:
            return grouped_sources(self._connection, self.collection, queries, n_documents)
        found = self._connection.query_batches(self.collection, queries, n_chunks, ["source", "chunk_tokens"])
        names = [list(dict.fromkeys(str((p.payload or {}).get("source", "")) for p in points)) for points in found]
        return names if n_documents is None else [documents[:n_documents] for documents in names]

    def mean_candidates(self, queries: npt.NDArray[np.float32], n: int) -> list[list[str]]:
        """The `n` documents with the best exact `mean` score, per query (a search of the documents collection)."""
        self._check_open()
        if not self._documents.exists:
            return [[] for _ in range(queries.shape[0])]
        found = self._connection.query_batches(self.documents_collection, queries, n, ["source"])
        return [[str((p.payload or {}).get("source", "")) for p in points] for points in found]

    def evidence_hits(self, keys: Sequence[Hashable]) -> dict[Hashable, SearchHit]:
        """The stored chunks with the given point ids, with score 0."""
        self._check_open()
        records = self._connection.retrieve("fetch evidence chunks", self.collection, [str(key) for key in keys])
        return {str(r.id): payload_hit(r.payload or {}, str(r.id), 0.0) for r in records}

    @property
    def lexical(self) -> LexicalSettings | None:
        """The lexical (BM25) channel's settings; None: dense only."""
        return None if self._lexical is None else self._lexical.settings

    def lexical_chunks(
        self, query: tuple[list[int], list[float]], n: int | None
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
        """(point ids, BM25 scores) of the best `n` chunks (None: all matching), best first; see `search_channel`."""
        self._check_open()
        return search_channel(self._lexical, self._connection, self.collection, query, n, documents=False)

    def lexical_documents(
        self, query: tuple[list[int], list[float]], n: int | None
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
        """(sources, whole-document BM25 scores) of the best `n` documents, best first; see `search_channel`."""
        self._check_open()
        channel = self._lexical if self._documents.exists else None
        return search_channel(channel, self._connection, self.documents_collection, query, n, documents=True)

    def add_lexical(self, settings: LexicalSettings) -> int:
        """Give an index the lexical channel (or rebuild it) without re-embedding: `lexical.add_channel`.

        Record `settings` as the manifest's `lexical` afterwards (until then the index opens dense-only; an
        interrupted call is simply repeated). Returns how many chunks are in the channel.

        Raises:
            IndexMismatchError: The collection's `bm25` vector has no IDF modifier, or the server cannot add one.
        """
        self._check_writable()
        self._modified = True
        self._lexical, filled = add_channel(
            self._connection, self.collection, self._documents, settings, self._batch_size, self.location
        )
        return filled

    # --- commits, setup ------------------------------------------------------------------------------------------

    def _describe_backend(self) -> dict[str, Any]:
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
            "lexical_chunks": None if self._lexical is None else count_lexical(self._connection, self.collection),
        }

    def _commit_backend(self, *, final: bool) -> None:
        # Nothing is buffered: every write above waited for Qdrant's acknowledgement (wait=True), which is Qdrant's
        # durability point (its WAL on a server, the storage file in local mode).
        self._check_open()

    def _close_backend(self) -> None:
        self._connection.client.close()

    def _ensure_collections(self, *, create: bool) -> None:
        connection = self._connection
        if connection.exists(self.collection):
            connection.check_vectors(self.collection, self.dimension, self.distance)
            if self._lexical is not None:
                ensure_lexical_vector(connection, self.collection, create=False)
            if create:
                connection.index_source_field(self.collection)
        elif create:
            vectors = models.VectorParams(size=self.dimension, distance=DISTANCES[self.distance])
            sparse = None if self._lexical is None else {LEXICAL_VECTOR: sparse_vector_params()}
            connection.create("collection", self.collection, vectors, index_source=True, sparse=sparse)
        else:
            raise IndexNotFoundError(
                f"Qdrant at {self.location} has no collection {self.collection!r}; "
                "build it with `tempscale-rag index DOCS --store qdrant` or check --collection"
            )
        self._has_sources_collection = connection.exists(self.sources_collection)
        if not self._has_sources_collection and create:
            connection.create("sources collection", self.sources_collection, {}, index_source=True)
            self._has_sources_collection = True
        self._documents.ensure(create=create, has_chunks=lambda: self.count() > 0)

    def _upload(self, points: list[Any], *, report: bool = True) -> None:
        total = len(points)
        for start in range(0, total, self._batch_size):
            batch = points[start : start + self._batch_size]
            batch = [point_struct(point) for point in batch] if self.pydantic_points else batch
            self._connection.call("upsert", partial(self._connection.client.upsert, self.collection, batch, wait=True))
            if self._progress is not None and report:
                self._progress(min(start + self._batch_size, total), total)

    def forget_document_points(self, sources: list[str]) -> None:
        """Delete the document points of `sources`, as an interrupted write may leave them (for tests and repair)."""
        self._check_writable()
        self._documents.forget(sources)

    def scan_chunks(self, sources: list[str] | None) -> dict[str, list[Chunk]]:
        """Every stored chunk of `sources` (None: all) as (point id, vector, chunk size), by source."""
        self._check_open()
        return self._documents.scan(sources)


def point_keys(found: list[list[models.ScoredPoint]]) -> list[tuple[npt.NDArray[Any], npt.NDArray[np.float32]]]:
    """Each query's (point ids as str, scores), best first."""
    return [
        (
            np.asarray([str(point.id) for point in points], dtype=object),
            np.asarray([point.score for point in points], dtype=np.float32),
        )
        for points in found
    ]


def grouped_sources(
    connection: QdrantConnection, collection: str, queries: npt.NDArray[np.float32], n_documents: int
) -> list[list[str]]:
    """The sources of each query's best chunks through the server's grouping API (one best chunk per source)."""
    out = []
    for row in queries:
        result = connection.call(
            "search documents",
            partial(
                connection.client.query_points_groups,
                collection,
                group_by="source",
                query=row.tolist(),
                limit=n_documents,
                group_size=1,
                with_payload=False,
            ),
        )
        out.append([str(group.id) for group in result.groups])
    return out
