"""Embedded Qdrant on Qdrant's own engine (qdrant-edge-py): `EdgeStore`, and `EdgeClient`, the client it talks to.

`EdgeStore` is `QdrantStore` with a different client: the same three collections, point ids, payloads, filters,
document points, lexical sparse vectors and ranking code as on a server, so an index built here is re-uploaded to
a server point by point without re-embedding (`migrate.upload_index`, `tempscale-rag qdrant-upload`). `EdgeClient`
implements the part of qdrant-client's `QdrantClient` API that `QdrantStore` uses (collections, upsert, delete, vector
updates, count, scroll, retrieve, facets, dense and sparse queries) on one `qdrant_edge.EdgeShard` per collection, each
in its own folder under the store's path (`<path>/<collection>/`, `<path>/<collection>__sources/`, ...).

What Edge gives over qdrant-client's local mode: Rust storage with a write-ahead log (every update is in the WAL when
`update` returns, so a killed process loses nothing acknowledged), a keyword payload index on `source`, and HNSW graphs
built by `optimize()` (run when a writer closes) for segments above Qdrant's indexing threshold; smaller segments are
searched exactly. Limits of qdrant-edge-py 0.9.0: a shard folder is opened by one process at a time (its WAL is
locked) and the binding has no read-only follower, so a second opener, reader or writer, is refused with
`StoreUnavailableError` while the first holds the index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from tempscale_rag.config import LexicalSettings
from tempscale_rag.stores.errors import IndexCorruptError, IndexNotFoundError, StoreUnavailableError
from tempscale_rag.stores.qdrant.points import ChunkPoint, source_point_id
from tempscale_rag.stores.qdrant.store import QdrantStore, SourceChunks

EDGE_HNSW_M = 32
"""HNSW edges per node (the FAISS store's default; Qdrant's is 16)."""
EDGE_HNSW_EF_CONSTRUCT = 200
"""HNSW candidate list while building (the FAISS store's default; Qdrant's is 100)."""
EDGE_HNSW_EF = 128
"""HNSW candidate list while searching. With m 16 and ef_construct 100 (Qdrant's defaults) recall@10 at 1M chunks
was 0.94 at ef 128 and 0.98 at most; with m 32 and ef_construct 200, 0.98 at ef 128 in 1-2 ms on a 2-core CPU, at
1.5x the build time (`research/edge1m/probe.py`, `benchmarks/qdrant_backends.py`)."""
EDGE_FULL_SCAN_THRESHOLD = 10_000
"""Segments below this many KB of vectors are searched exactly (Qdrant's default)."""

_CONFIG_FILE = "edge_config.json"
_SOURCES_VECTOR = "none"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_EDGE_DISTANCES = {models.Distance.COSINE: qe.Distance.Cosine, models.Distance.DOT: qe.Distance.Dot}
_DISTANCE_NAMES = {"Cosine": models.Distance.COSINE, "Dot": models.Distance.DOT}


class EdgeClient:
    """The subset of `QdrantClient` that `QdrantStore` uses, on one `EdgeShard` per collection under `root`.

    Args:
        root: The folder holding one shard folder per collection.
        create: Create `root` when missing.
        search_params: The parameters of every query (HNSW ef, or exact search).

    Raises:
        IndexNotFoundError: If `root` is missing and may not be created.
    """

    def __init__(self, root: Path, *, create: bool, search_params: qe.SearchParams | None = None) -> None:
        if not root.is_dir():
            if not create:
                raise IndexNotFoundError(
                    f"there is no Qdrant Edge storage at {root}; build the index with `tempscale-rag index`"
                )
            root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._search_params = search_params or qe.SearchParams(hnsw_ef=EDGE_HNSW_EF)
        self._shards: dict[str, qe.EdgeShard] = {}

    # --- collections ----------------------------------------------------------------------------------------------

    def _folder(self, collection: str) -> Path:
        if not _NAME.match(collection):
            raise ValueError(
                f"collection names are folder names here: letters, digits, '_', '.', '-'; got {collection!r}"
            )
        return self.root / collection

    def collection_exists(self, collection: str) -> bool:
        """Whether the collection's shard exists; an existing one is opened now, so a locked index fails at once."""
        if not (self._folder(collection) / _CONFIG_FILE).is_file():
            return False
        self._shard(collection)
        return True

    def create_collection(
        self,
        collection: str,
        vectors_config: models.VectorParams | dict[str, Any],
        sparse_vectors_config: dict[str, models.SparseVectorParams] | None = None,
    ) -> bool:
        """Create a shard: one unnamed dense vector (and sparse ones), or none (`{}`: a sources collection).

        The shard's `source` payload field gets a keyword index.
        """
        if isinstance(vectors_config, models.VectorParams):
            config = qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(
                    size=vectors_config.size, distance=_EDGE_DISTANCES[vectors_config.distance]
                ),
                sparse_vectors={
                    name: _edge_sparse_params(p.modifier) for name, p in (sparse_vectors_config or {}).items()
                }
                or None,
                hnsw_config=qe.HnswIndexConfig(
                    m=EDGE_HNSW_M, ef_construct=EDGE_HNSW_EF_CONSTRUCT, full_scan_threshold=EDGE_FULL_SCAN_THRESHOLD
                ),
            )
        elif not vectors_config:
            # Edge needs some vector config; points of a sources collection carry none of this sparse vector.
            config = qe.EdgeConfig(sparse_vectors={_SOURCES_VECTOR: qe.EdgeSparseVectorParams()})
        else:
            raise TypeError("Qdrant Edge collections here hold one unnamed dense vector or none")
        folder = self._folder(collection)
        shard = self._call(folder, lambda: qe.EdgeShard.create(str(folder), config))
        self._shards[collection] = shard
        shard.update(qe.UpdateOperation.create_field_index("source", qe.PayloadSchemaType.Keyword))
        shard.flush()
        return True

    def get_collection(self, collection: str) -> Any:
        """What `QdrantConnection` reads: `.config.params.vectors` and `.sparse_vectors`, from the shard's config."""
        folder = self._folder(collection)
        try:
            stored = json.loads((folder / _CONFIG_FILE).read_text(encoding="utf-8"))
            vectors = stored.get("vectors") or {}
            params: models.VectorParams | dict[str, Any] = {}
            if set(vectors) == {""}:
                size, distance = int(vectors[""]["size"]), _DISTANCE_NAMES[vectors[""]["distance"]]
                params = models.VectorParams(size=size, distance=distance)
            elif vectors:
                params = {name: None for name in vectors}
            sparse = {
                name: SimpleNamespace(modifier=models.Modifier.IDF if (cfg or {}).get("modifier") == "idf" else None)
                for name, cfg in (stored.get("sparse_vectors") or {}).items()
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptError(
                f"Qdrant Edge shard {folder} has an unreadable {_CONFIG_FILE} ({exc}); run `tempscale-rag repair`"
            ) from None
        return SimpleNamespace(config=SimpleNamespace(params=SimpleNamespace(vectors=params, sparse_vectors=sparse)))

    def create_payload_index(self, collection: str, field_name: str, *args: Any, **kwargs: Any) -> None:
        """A keyword index on `field_name` (the store only indexes `source`, which `create_collection` already did)."""
        self._shard(collection).update(qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword))

    # --- writes ---------------------------------------------------------------------------------------------------

    def upsert(self, collection: str, points: Sequence[models.PointStruct | ChunkPoint], wait: bool = True) -> None:
        """Insert or replace points (in the shard's WAL when this returns)."""
        edge_points = [qe.Point(str(p.id), _edge_vector(p.vector), p.payload) for p in points]
        self._shard(collection).update(qe.UpdateOperation.upsert_points(edge_points))

    def update_vectors(self, collection: str, points: Sequence[models.PointVectors], wait: bool = True) -> None:
        """Set some vectors of existing points, keeping the others."""
        vectors = [qe.PointVectors(str(p.id), _edge_vector(p.vector)) for p in points]
        self._shard(collection).update(qe.UpdateOperation.update_vectors(vectors))

    def delete_vectors(
        self, collection: str, vectors: Sequence[str], points: models.PointIdsList, wait: bool = True
    ) -> None:
        """Remove the named vectors from the given points."""
        ids: list[Any] = [str(i) for i in points.points]
        self._shard(collection).update(qe.UpdateOperation.delete_vectors(ids, list(vectors)))

    def create_vector_name(
        self, collection: str, vector_name: str, vector_name_config: models.SparseVectorNameConfig, wait: bool = True
    ) -> None:
        """Add a sparse vector to an existing shard (Qdrant's named-vector API; recorded in its config file)."""
        if not isinstance(vector_name_config, models.SparseVectorNameConfig):
            raise TypeError("only sparse vectors are added to Qdrant Edge shards here")
        modifier = _edge_modifier(vector_name_config.sparse.modifier)
        self._shard(collection).update(qe.UpdateOperation.create_sparse_vector(vector_name, modifier=modifier))
        self._shard(collection).flush()

    def delete(
        self, collection: str, points_selector: models.PointIdsList | models.FilterSelector, wait: bool = True
    ) -> None:
        """Delete points by id or by filter."""
        if isinstance(points_selector, models.PointIdsList):
            operation = qe.UpdateOperation.delete_points([str(i) for i in points_selector.points])
        else:
            condition = _filter(points_selector.filter)
            if condition is None:
                raise ValueError("a delete by filter needs a filter (an empty one would delete every point)")
            operation = qe.UpdateOperation.delete_points_by_filter(condition)
        self._shard(collection).update(operation)

    def facet_values(self, collection: str, key: str) -> set[str]:
        """Every distinct string value of the payload field `key` (from its keyword index)."""
        shard = self._shard(collection)
        limit = max(1, int(shard.count(qe.CountRequest(exact=True))))
        return {str(hit.value) for hit in shard.facet(qe.FacetRequest(key, limit=limit, exact=True)).hits}

    def segment_count(self, collection: str) -> int:
        """How many segments the collection's shard has (each large one searched through its own HNSW graph)."""
        return int(self._shard(collection).info().segments_count)

    def flush(self) -> None:
        """Write every shard's segments to disk, so that a reopen replays no WAL."""
        for shard in self._shards.values():
            shard.flush()

    def optimize(self) -> None:
        """Merge segments and build HNSW graphs where Qdrant's thresholds ask for them (blocks until done)."""
        for shard in self._shards.values():
            shard.optimize()

    def close(self) -> None:
        """Close every shard (releasing their locks)."""
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            shard.close()

    # --- reads ----------------------------------------------------------------------------------------------------

    def count(
        self, collection: str, count_filter: models.Filter | None = None, exact: bool = True
    ) -> models.CountResult:
        """How many points match."""
        found = self._shard(collection).count(qe.CountRequest(exact=True, filter=_filter(count_filter)))
        return models.CountResult(count=int(found))

    def scroll(
        self,
        collection: str,
        limit: int = 10,
        offset: Any = None,
        scroll_filter: models.Filter | None = None,
        with_payload: bool | list[str] = True,
        with_vectors: bool = False,
    ) -> tuple[list[models.Record], Any]:
        """One page of points, and the offset of the next (None after the last)."""
        request = qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=_filter(scroll_filter),
            with_payload=with_payload,
            with_vector=with_vectors,
        )
        records, next_offset = self._shard(collection).scroll(request)
        return [_record(r) for r in records], next_offset

    def retrieve(
        self, collection: str, ids: Sequence[str], with_payload: bool = True, with_vectors: bool = False
    ) -> list[models.Record]:
        """The points with the given ids that exist."""
        records = self._shard(collection).retrieve([str(i) for i in ids], with_payload, with_vectors)
        return [_record(r) for r in records]

    def query_points(
        self,
        collection: str,
        query: models.SparseVector,
        using: str,
        limit: int = 10,
        with_payload: bool | list[str] = False,
        search_params: models.SearchParams | None = None,
    ) -> _Response:
        """A sparse query on the named vector `using`, with the IDF corpus of `search_params`, if any."""
        if not isinstance(query, models.SparseVector):
            raise TypeError("Qdrant Edge single queries here are sparse vectors")
        idf = search_params.idf if search_params is not None else None
        params = None
        if isinstance(idf, models.IdfCorpusParams):
            params = qe.SearchParams(idf=qe.IdfParams(corpus=_filter(idf.corpus)))
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(qe.SparseVector(list(query.indices), list(query.values)), using=using),
            with_payload=cast(Any, with_payload),
            params=params,
        )
        return _Response([_scored(p) for p in self._shard(collection).query(request)])

    def query_batch_points(self, collection: str, requests: Sequence[models.QueryRequest]) -> list[_Response]:
        """Nearest-vector queries, planned as one batch."""
        batch = []
        for request in requests:
            if not isinstance(request.query, list):
                raise TypeError("Qdrant Edge queries here are plain dense vectors")
            batch.append(
                qe.QueryRequest(
                    limit=request.limit or 10,
                    query=qe.Query.Nearest(request.query),
                    with_payload=cast(Any, request.with_payload or False),
                    params=self._search_params,
                )
            )
        found = self._shard(collection).query_batch(qe.QueryBatchRequest(batch))
        return [_Response([_scored(p) for p in points]) for points in found]

    # --- shards ---------------------------------------------------------------------------------------------------

    def _shard(self, collection: str) -> qe.EdgeShard:
        shard = self._shards.get(collection)
        if shard is None:
            folder = self._folder(collection)
            shard = self._call(folder, lambda: qe.EdgeShard.load(str(folder)))
            self._shards[collection] = shard
        return shard

    @staticmethod
    def _call(folder: Path, opening: Any) -> qe.EdgeShard:
        """Open or create a shard, turning Edge's errors into the store's."""
        try:
            return cast(qe.EdgeShard, opening())
        except Exception as exc:
            text = " ".join(str(exc).split())
            if "WouldBlock" in text:
                raise StoreUnavailableError(
                    f"Qdrant Edge index {folder.parent} is already open elsewhere (qdrant-edge-py opens an index in "
                    "one place at a time, readers included, and has no read-only follower): wait for it to finish"
                ) from None
            raise IndexCorruptError(
                f"Qdrant Edge shard {folder} cannot be opened ({text}); run `tempscale-rag repair`"
            ) from None


@dataclass(frozen=True)
class _Response:
    """One query's result, as `QdrantConnection.query_batches` reads a `QueryResponse`."""

    points: list[models.ScoredPoint]


def _scored(point: Any) -> models.ScoredPoint:
    return models.ScoredPoint.model_construct(id=str(point.id), version=0, score=point.score, payload=point.payload)


def _edge_modifier(modifier: models.Modifier | None) -> qe.Modifier | None:
    if modifier is None:
        return None
    if modifier == models.Modifier.IDF:
        return qe.Modifier.Idf
    raise TypeError(f"sparse vector modifier {modifier!r} is not translated to Qdrant Edge")


def _edge_sparse_params(modifier: models.Modifier | None) -> qe.EdgeSparseVectorParams:
    return qe.EdgeSparseVectorParams(modifier=_edge_modifier(modifier))


def _edge_vector(vector: Any) -> Any:
    """A point's vector(s) for Edge: qdrant-client's sparse vectors become Edge's."""
    if not isinstance(vector, dict):
        return vector
    return {
        name: qe.SparseVector(list(v.indices), list(v.values)) if isinstance(v, models.SparseVector) else v
        for name, v in vector.items()
    }


def _filter(flt: models.Filter | None) -> qe.Filter | None:
    """The Edge filter of a qdrant-client filter (the conditions the store uses: match value/any, has id)."""
    if flt is None:
        return None

    def conditions(items: Any) -> list[Any] | None:
        if items is None:
            return None
        return [_condition(item) for item in (items if isinstance(items, list) else [items])]

    return qe.Filter(must=conditions(flt.must), should=conditions(flt.should), must_not=conditions(flt.must_not))


def _condition(condition: Any) -> Any:
    if isinstance(condition, models.HasIdCondition):
        return qe.HasIdCondition({str(i) for i in condition.has_id})
    if isinstance(condition, models.HasVectorCondition):
        return qe.HasVectorCondition(condition.has_vector)
    if isinstance(condition, models.FieldCondition) and isinstance(condition.match, models.MatchValue):
        return qe.FieldCondition(condition.key, match=qe.MatchValue(condition.match.value))
    if isinstance(condition, models.FieldCondition) and isinstance(condition.match, models.MatchAny):
        return qe.FieldCondition(condition.key, match=qe.MatchAny(cast(Any, list(condition.match.any))))
    raise TypeError(f"this filter condition is not translated to Qdrant Edge: {condition!r}")


def _record(record: Any) -> models.Record:
    """qdrant-client's record of an Edge record: the dense vector alone as a list, else every vector by name."""
    vector = record.vector
    if isinstance(vector, dict):
        if set(vector) == {""}:
            vector = vector[""]
        else:
            vector = {
                name: models.SparseVector(indices=list(v.indices), values=list(v.values))
                if isinstance(v, qe.SparseVector)
                else v
                for name, v in vector.items()
            }
    return models.Record.model_construct(id=str(record.id), payload=record.payload, vector=vector)


class EdgeSourceChunks(SourceChunks):
    """The sources that have chunks, as the one writer of an Edge index knows them: for skipping stale-chunk deletes.

    Any filtered read or delete right after a write costs Edge time in proportion to the shard's appendable segment
    (~1 ms per 40k points, measured): a filtered stale-chunk delete per source made writes slow down as the index grew.
    The values of the `source` keyword index are read once (a facet), then every write and delete keeps them.

    Args:
        client: The Edge client.
        collection: The chunk collection.
    """

    def __init__(self, client: EdgeClient, collection: str) -> None:
        self._client = client
        self._collection = collection
        self._sources: set[str] | None = None

    def may_have(self, source: str) -> bool:
        """Whether `source` has (or may have: an interrupted write) stored chunks."""
        if self._sources is None:
            self._sources = self._client.facet_values(self._collection, "source")
        return source in self._sources

    def written(self, sources: list[str]) -> None:
        """Chunks of `sources` are about to be written."""
        if self._sources is not None:
            self._sources.update(sources)

    def deleted(self, source: str) -> None:
        """Every chunk of `source` is deleted."""
        if self._sources is not None:
            self._sources.discard(source)


class EdgeStore(QdrantStore):
    """A `QdrantStore` embedded on Qdrant's engine (qdrant-edge-py): one shard folder per collection under `path`.

    Same arguments as `QdrantStore` without the server ones (`url`, `api_key`, `timeout`, `retries`, `backoff`), and:

    Args:
        exact: Search every vector exactly instead of through the HNSW graphs.
        hnsw_ef: The HNSW candidate list of every dense query (`EDGE_HNSW_EF`; larger: higher recall, slower).

    Closing a writer flushes the shards and runs Qdrant's optimizers (segment merging, HNSW for large segments).

    Raises:
        StoreUnavailableError: If another process has the index open.
        IndexNotFoundError: If the storage or the collection is missing and may not be created.
        IndexCorruptError: If a shard cannot be opened.
        IndexMismatchError: If the collection exists with another vector size or distance.
    """

    pydantic_points = False  # EdgeClient.upsert reads chunk points' id, vector and payload as they are

    def __init__(
        self,
        *,
        dimension: int,
        path: str | Path,
        collection: str = "tempscale",
        distance: Any = "cosine",
        batch_size: int = 256,
        create: bool = True,
        read_only: bool = False,
        progress: Any = None,
        exact: bool = False,
        hnsw_ef: int = EDGE_HNSW_EF,
        lexical: LexicalSettings | None = None,
    ) -> None:
        if isinstance(hnsw_ef, bool) or not isinstance(hnsw_ef, int) or hnsw_ef < 1:
            raise ValueError(
                f"hnsw_ef must be an integer >= 1 (the HNSW candidate list while searching), got {hnsw_ef!r}"
            )
        self._exact = exact
        self._hnsw_ef = hnsw_ef
        super().__init__(
            dimension=dimension,
            collection=collection,
            path=path,
            distance=distance,
            batch_size=batch_size,
            retries=0,
            create=create,
            read_only=read_only,
            progress=progress,
            lexical=lexical,
        )
        self.source_chunks = EdgeSourceChunks(self.edge, collection)

    def _open_client(self, api_key: str | None, timeout: float, *, create: bool) -> QdrantClient:
        params = qe.SearchParams(exact=True) if self._exact else qe.SearchParams(hnsw_ef=self._hnsw_ef)
        # EdgeClient implements the part of QdrantClient's API that QdrantStore calls (see the module docstring).
        return cast(QdrantClient, EdgeClient(Path(str(self.path)), create=create, search_params=params))

    @property
    def edge(self) -> EdgeClient:
        """The Edge client (its shards)."""
        return cast(EdgeClient, self._connection.client)

    def writer(self) -> QdrantStore:
        """Refused: qdrant-edge opens an index in one process, with one writer.

        Raises:
            ValueError: Always.
        """
        self._check_writable()
        raise ValueError(
            "Qdrant Edge allows one writer per index; parallel writers need a Qdrant server (--qdrant-url)"
        )

    def _describe_backend(self) -> dict[str, Any]:
        summary = super()._describe_backend()
        summary.update(mode="edge", exact=self._exact, hnsw_ef=self._hnsw_ef)
        return summary

    def _commit_backend(self, *, final: bool) -> None:
        self._check_open()
        if final:
            # Every update is already in the WAL; the optimizers merge segments and build HNSW, then a flush writes
            # the segments so the next open replays nothing.
            self.edge.optimize()
        self.edge.flush()


REPAIRED_FINGERPRINT = "repaired:unknown"
"""The fingerprint `repair_edge_index` gives sources whose record was lost: the next `index` re-indexes them."""


def repair_edge_index(path: str | Path, *, dimension: int, collection: str, distance: Any) -> list[str]:
    """Mend a Qdrant Edge index whose shards cannot be opened; returns what was done, one line each.

    The chunks shard holds the data; the other two are derived from it. A damaged documents shard is rebuilt from the
    chunks; a damaged sources shard is rebuilt with every stored source under `REPAIRED_FINGERPRINT` (so the next
    `index` re-writes them and `--prune` still sees them); a damaged chunks shard cannot be mended: the whole storage
    is set aside and the next `index` rebuilds it. Damaged shards are kept beside the others as `<name>.damaged`.

    Raises:
        StoreUnavailableError: If the index is open elsewhere.
    """
    root = Path(path)
    names = [collection, collection + "__sources", collection + "__documents"]
    damaged = []
    for name in names:
        client = EdgeClient(root, create=False)
        try:
            if (root / name).exists() and not client.collection_exists(name):
                raise IndexCorruptError(f"{root / name} has no {_CONFIG_FILE}")
            if (root / name).exists():
                client.get_collection(name)
        except IndexCorruptError as exc:
            damaged.append((name, str(exc)))
        finally:
            client.close()
    if not damaged:
        return [f"{root}: every Qdrant Edge shard opens; nothing to repair"]
    lines = [f"{root}: damaged: {problem}" for _, problem in damaged]
    if damaged[0][0] == collection:
        aside = root.with_name(root.name + ".damaged")
        root.rename(aside)
        return [*lines, f"the chunks cannot be recovered: the storage was moved to {aside}; run `tempscale-rag index`"]
    for name, _ in damaged:
        (root / name).rename(root / (name + ".damaged"))
    sources_lost = any(name == collection + "__sources" for name, _ in damaged)
    with EdgeStore(dimension=dimension, path=root, collection=collection, distance=distance) as store:
        # Opening recreates the missing collections; the documents collection is rebuilt from the chunks.
        if sources_lost:
            for source in sorted(store.scan_chunks(None)):
                point = models.PointStruct(
                    id=source_point_id(source),
                    vector={},
                    payload={"source": source, "fingerprint": REPAIRED_FINGERPRINT, "chunks": 0},
                )
                store.edge.upsert(store.sources_collection, [point])
            lines.append(f"{len(store.sources())} files kept, to be re-indexed by the next `tempscale-rag index`")
        lines.append(f"rebuilt from the {store.count()} stored chunks; damaged shards kept as <name>.damaged")
    return lines
