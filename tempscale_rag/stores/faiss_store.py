"""`FaissStore`: the embedded default store, an SQLite database of chunks plus a FAISS index derived from it.

Layout of a store folder:

- `chunks.sqlite`: the source of truth. Table `chunks` (one row per chunk, the vector as a little-endian float32
  blob, an integer `vid` that is the FAISS id and is never reused), table `sources` (source -> fingerprint, written
  in the same transaction as that source's chunks), table `meta` (schema version, store uuid, dimension, FAISS
  settings, and a `generation` counter bumped by every transaction that changes the chunks).
- `vectors.faiss`: a cache of the FAISS index, written atomically and tagged with the store uuid, the generation it
  reflects and a SHA-256 of its payload. A missing, torn or outdated file is rebuilt from `chunks.sqlite` on open.
- `writer.lock`: held (flock) by the one process that may write.

Each `replace_source`/`upsert`/`delete_source` is one SQLite transaction (WAL journal, `synchronous=NORMAL`), so a
crash, even `kill -9`, leaves either the state before the call or after it. `commit()` checkpoints the WAL (an fsync,
which also makes the changes survive a power loss) and rewrites `vectors.faiss` when the index is small (<= 50,000
vectors) or a quarter of it changed since the last write; `close()` always rewrites a stale `vectors.faiss`. An
out-of-date file only costs a rebuild from SQLite at the next open.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import struct
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple, ParamSpec, TypeVar

import faiss
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from tempscale_rag.ranking.documents import (
    ChunkGroups,
    DocumentScoring,
    RankedDocument,
    document_chunks,
    document_scores_from_groups,
    group_vectors,
    rank_documents,
)
from tempscale_rag.stores.base import (
    ChunkRecord,
    DocumentHit,
    IndexCorruptError,
    IndexMismatchError,
    IndexNotFoundError,
    SearchHit,
    StoreUnavailableError,
    VectorStore,
    as_query_matrix,
    check_dimension,
    check_fingerprint,
    check_k,
    check_records,
    check_source,
    chunk_size_of,
    metadata_json,
)
from tempscale_rag.stores.manifest import (
    TEMP_SUFFIX,
    FaissSettings,
    atomic_file,
    current_umask,
    fsync_dir,
    remove_stale_temp_files,
)

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

DB_NAME = "chunks.sqlite"
FAISS_NAME = "vectors.faiss"
LOCK_NAME = "writer.lock"
SCHEMA_VERSION = 1

# vectors.faiss = header + faiss.write_index payload. Header: magic, store uuid, generation, payload length, SHA-256.
_MAGIC = b"TSRAGFX1"
_HEADER = struct.Struct("<8s16sQQ32s")
_READ_CHUNK = 1 << 20
# Keeps `IN (...)` lists under SQLite's bound-parameter limit on every version (999 before 3.32).
_SQL_BATCH = 900
# commit() rewrites vectors.faiss when the index is this small, or this fraction of it changed since the last write.
_ALWAYS_REFRESH_BELOW = 50_000
_REFRESH_FRACTION = 0.25
# faiss GPU flat search supports k up to 2048.
_GPU_MAX_K = 2048

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE chunks (
    vid INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    position INTEGER NOT NULL,
    token_length INTEGER NOT NULL,
    bucket TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX chunks_by_source ON chunks (source, position);
CREATE TABLE sources (
    source TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
"""

# Derived from `chunks`, written in the same transaction: each (source, chunk size) group's mean unit chunk vector
# (`tempscale_rag.ranking.documents.group_vectors`), which the `mean` and `hybrid` document scores rank by. Stores written
# before it existed get it on their next writable open.
_GROUPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    source TEXT NOT NULL,
    chunk_tokens INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (source, chunk_tokens)
) WITHOUT ROWID;
"""
# A chunk's size, read in SQL so that opening a large index does not parse every metadata blob in Python.
_CHUNK_SIZE_SQL = "COALESCE(CAST(json_extract(metadata, '$.chunk_tokens') AS INTEGER), 0)"
# HNSW document ranking: chunks fetched per wanted document before the candidate documents are rescored exactly.
HNSW_DOCUMENT_OVERFETCH = 10

_ROW_COLUMNS = "chunk_id, source, position, token_length, bucket, text, metadata, vector"
_HIT_COLUMNS = "vid, chunk_id, text, source, position, token_length, bucket, metadata"


@dataclass
class _Change:
    """What one transaction did to the chunks, to mirror in the FAISS index once it has committed."""

    removed: list[int] = field(default_factory=list)
    added_ids: list[int] = field(default_factory=list)
    added_vectors: list[npt.NDArray[np.float32]] = field(default_factory=list)
    generation: int | None = None
    # Sources that lost a chunk to a record of another source with the same id: their groups need refreshing.
    displaced_sources: set[str] = field(default_factory=set)


@dataclass
class _DocumentView:
    """The chunks of the FAISS index grouped by (source, chunk size), for document ranking; rebuilt after writes.

    `positions[i]` is the row of chunk i in the FAISS storage matrix, `vids[i]` its SQLite id; `groups` is built over
    these chunks and `group_vectors` holds one unit vector per group, from the `groups` table.
    """

    key: tuple[Any, int, int]
    positions: npt.NDArray[np.int64]
    vids: npt.NDArray[np.int64]
    groups: ChunkGroups | None
    group_vectors: npt.NDArray[np.float32]
    all_positions: bool
    position_of_vid: dict[int, int] = field(default_factory=dict)


class _Meta(NamedTuple):
    store_uuid: uuid.UUID
    dimension: int
    settings: FaissSettings
    generation: int


def damaged_database_message(db_path: Path, problem: str) -> str:
    """The one-line report of a damaged `chunks.sqlite`: which file, what is wrong, and how to recover."""
    folder = db_path.parent
    return (
        f"the index database {db_path} is damaged ({' '.join(problem.split())}); run `tempscale-rag repair --out "
        f"{folder}` to rebuild it from its readable rows, then `tempscale-rag index` on your folders to re-embed "
        "what was lost"
    )


def _reports_damage(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn an `sqlite3.DatabaseError` raised while using the database into an `IndexCorruptError` naming the file.

    Damage the open-time check did not see (read-only opens skip it) surfaces on the first query that touches a bad
    page; the caller gets the same actionable error instead of a raw traceback.
    """

    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            store = args[0]
            # Damage is SQLITE_CORRUPT/NOTADB (plain DatabaseError); a locked or read-only file is another matter.
            if not isinstance(store, FaissStore) or type(exc) is not sqlite3.DatabaseError:
                raise
            raise IndexCorruptError(damaged_database_message(store.db_path, str(exc))) from None

    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = method.__qualname__
    wrapper.__doc__ = method.__doc__
    return wrapper


def faiss_gpu_count() -> int:
    """Number of GPUs the installed faiss can use (0 for faiss-cpu); checked at run time, never at import."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return int(get_num_gpus()) if callable(get_num_gpus) else 0


class FaissStore(VectorStore):
    """Chunks in SQLite, vectors in a FAISS inner-product index (exact `flat` by default, or `hnsw`).

    Args:
        folder: The store folder (normally the index folder).
        dimension: Vector dimension; required to create a store, checked against an existing one when given.
        settings: FAISS settings for a new store; for an existing store its index kind must match when given.
        create: Create the store if the folder holds none (the folder is created too).
        read_only: Open for searching only: nothing in the folder is written, no lock is taken.
        use_gpu: None uses all GPUs when faiss has GPU support and the index is flat; True requires that; False
            stays on the CPU. The GPU holds a search copy; the CPU index stays the master.

    Raises:
        IndexNotFoundError: If the folder holds no store and `create` is False (or `read_only`).
        IndexCorruptError: If the database is corrupt or not a tempscale-rag store; nothing is modified.
        IndexMismatchError: If the existing store has another dimension or index kind.
        StoreUnavailableError: If another process holds the writer lock.
    """

    backend = "faiss"

    def __init__(
        self,
        folder: str | Path,
        *,
        dimension: int | None = None,
        settings: FaissSettings | None = None,
        create: bool = False,
        read_only: bool = False,
        use_gpu: bool | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.db_path = self.folder / DB_NAME
        self.faiss_path = self.folder / FAISS_NAME
        self._db: sqlite3.Connection | None = None
        self._lock: IO[bytes] | None = None
        self._gpu_index: Any = None
        self._gpu_id_map: npt.NDArray[np.int64] | None = None
        try:
            if self.db_path.exists():
                # Validate before taking the lock or opening for writing: a bad folder is reported, never modified.
                # A writer also checks the pages (PRAGMA quick_check, ~10 ms per 3 MB), so it never extends a
                # damaged database; readers find damage on first contact (`_reports_damage`) or `check_integrity`.
                meta = self._validate_existing(dimension, settings, integrity=not read_only)
                if not read_only:
                    self._lock = _acquire_lock(self.folder / LOCK_NAME)
            elif not create or read_only:
                raise IndexNotFoundError(
                    f"{self.folder} holds no FAISS store ({DB_NAME} is missing); "
                    f"build one with `tempscale-rag index DOCS --out {self.folder}`"
                )
            else:
                if dimension is None:
                    raise ValueError("dimension is required to create a FaissStore")
                check_dimension(dimension)
                self.folder.mkdir(parents=True, exist_ok=True)
                self._lock = _acquire_lock(self.folder / LOCK_NAME)
                if not self.db_path.exists():
                    self._create(dimension, settings or FaissSettings())
                meta = self._validate_existing(dimension, settings)
            super().__init__(meta.dimension, read_only=read_only)
            self._uuid = meta.store_uuid
            self._settings = meta.settings
            self._generation = meta.generation
            self._use_gpu = self._resolve_gpu(use_gpu)
            self._pending_ids: list[npt.NDArray[np.int64]] = []
            self._pending_vectors: list[npt.NDArray[np.float32]] = []
            self._pending_removals: list[int] = []
            self._needs_rebuild = False
            self._changed_since_file = 0
            if not read_only:
                remove_stale_temp_files(self.folder)
            self._db = self._connect(read_only)
            self._document_view: _DocumentView | None = None
            self._has_groups_table = self._ensure_groups_table(read_only)
            self._generation = self._read_meta(self._db).generation
            self._index, self._file_generation = self._load_index()
        except BaseException:
            self._close_backend()
            raise

    @property
    def settings(self) -> FaissSettings:
        """The FAISS settings this store was built with."""
        return self._settings

    @property
    def generation(self) -> int:
        """Counter bumped by every committed change to the chunks."""
        return self._generation

    @property
    def uses_gpu(self) -> bool:
        """Whether searches run on the GPU."""
        return self._use_gpu

    def check_integrity(self) -> None:
        """Check every page of `chunks.sqlite` (SQLite's `PRAGMA quick_check`: ~10 ms per 3 MB).

        Raises:
            IndexCorruptError: If the database is damaged; the message names the file and how to repair it.
        """
        _quick_check(self._connection(), self.db_path)

    @_reports_damage
    def replace_source(self, source: str, fingerprint: str, records: Iterable[ChunkRecord]) -> None:
        """Replace every chunk of `source` and record its fingerprint, in one transaction.

        Chunks that are stored already with identical content keep their FAISS id, so repeating the call changes
        nothing (and an HNSW index is not rebuilt for unchanged files).

        Args:
            source: The file path as indexed.
            fingerprint: The source's content fingerprint.
            records: The new chunks, all with `record.source == source`.
        """
        self._check_writable()
        check_source(source)
        check_fingerprint(fingerprint)
        batch = check_records(records, self.dimension, source=source)
        wanted = {record.id for record in batch}
        with self._transaction() as db:
            stale = [
                vid
                for vid, chunk_id in db.execute("SELECT vid, chunk_id FROM chunks WHERE source = ?", (source,))
                if chunk_id not in wanted
            ]
            _delete_vids(db, stale)
            change = self._write_records(db, batch)
            change.removed.extend(stale)
            _write_groups(db, source, batch)
            for other in change.displaced_sources:
                _refresh_groups(db, other)
            db.execute(
                "INSERT OR REPLACE INTO sources (source, fingerprint, chunks, updated_at) VALUES (?, ?, ?, ?)",
                (source, fingerprint, len(batch), datetime.now(UTC).isoformat()),
            )
            self._bump_generation(db, change)
        self._apply_change(change)

    @_reports_damage
    def upsert(self, records: Iterable[ChunkRecord]) -> None:
        """Add records in one transaction, replacing stored records with the same id. `sources()` is unchanged.

        Args:
            records: The records.
        """
        self._check_writable()
        batch = check_records(records, self.dimension)
        if not batch:
            return
        with self._transaction() as db:
            change = self._write_records(db, batch)
            for source in {record.source for record in batch} | change.displaced_sources:
                _refresh_groups(db, source)
            self._bump_generation(db, change)
        self._apply_change(change)

    @_reports_damage
    def delete_source(self, source: str) -> int:
        """Delete every chunk of `source` and its fingerprint, in one transaction.

        Args:
            source: The file path as indexed.

        Returns:
            The number of chunks deleted.
        """
        self._check_writable()
        check_source(source)
        with self._transaction() as db:
            vids = [vid for (vid,) in db.execute("SELECT vid FROM chunks WHERE source = ?", (source,))]
            _delete_vids(db, vids)
            db.execute("DELETE FROM sources WHERE source = ?", (source,))
            db.execute("DELETE FROM groups WHERE source = ?", (source,))
            change = _Change(removed=vids)
            self._bump_generation(db, change)
        self._apply_change(change)
        return len(vids)

    @_reports_damage
    def sources(self) -> dict[str, str]:
        """Map each fully stored source to its fingerprint."""
        db = self._connection()
        return dict(db.execute("SELECT source, fingerprint FROM sources ORDER BY source").fetchall())

    @_reports_damage
    def count(self) -> int:
        """The number of stored chunks."""
        db = self._connection()
        return int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    @_reports_damage
    def search_many(self, query_vectors: npt.ArrayLike, k: int = 10) -> list[list[SearchHit]]:
        """Search many queries with one FAISS call and one metadata lookup per 900 distinct hits.

        Args:
            query_vectors: A matrix of shape (n, dimension), L2-normalised.
            k: How many hits per query at most.

        Returns:
            One list of up to `k` hits per query, best first.
        """
        self._check_open()
        k = check_k(k)
        queries = as_query_matrix(query_vectors, self.dimension)
        self._sync_index()
        total = int(self._index.ntotal)
        if total == 0 or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        scores, ids = self._search_index(queries, min(k, total))
        rows = self._fetch_hit_rows(np.unique(ids[ids >= 0]))
        results: list[list[SearchHit]] = []
        for score_row, id_row in zip(scores.tolist(), ids.tolist(), strict=True):
            hits = []
            for score, vid in zip(score_row, id_row, strict=True):
                row = rows.get(vid)
                # -1 pads results beyond ntotal; a missing row was deleted by a writer after this reader opened.
                if vid < 0 or row is None:
                    continue
                hits.append(_search_hit(row, score))
            results.append(hits)
        return results

    @_reports_damage
    def _search_documents(
        self, queries: npt.NDArray[np.float32], k: int, scoring: DocumentScoring, evidence: int
    ) -> list[list[DocumentHit]]:
        """Rank documents: exactly on a flat index, by exactly rescored candidates on HNSW.

        Flat: every chunk is scored (one matrix product per 64 queries), so the ranking is exact. HNSW: the top
        `k * HNSW_DOCUMENT_OVERFETCH` chunks name the candidate documents (plus, for `mean` and `hybrid`, the best
        documents by their exact `mean` score), which are then rescored exactly from all their stored vectors.
        """
        self._sync_index()
        view = self._documents_view()
        groups = view.groups
        if groups is None:
            return [[] for _ in range(queries.shape[0])]
        matrix = self._storage_matrix()
        group_scores = queries @ view.group_vectors.T if scoring.needs_group_vectors else None
        ranked: list[list[tuple[RankedDocument, npt.NDArray[np.int64], npt.NDArray[np.float32]]]] = []
        if self._settings.index == "flat":
            for start in range(0, queries.shape[0], 64):
                block = queries[start : start + 64] @ matrix.T
                if not view.all_positions:
                    block = block[:, view.positions]
                for row, scores in enumerate(block, start):
                    best = rank_documents(
                        scores,
                        groups,
                        scoring,
                        k,
                        evidence=evidence,
                        group_scores=None if group_scores is None else group_scores[row],
                    )
                    ranked.append([(r, np.asarray(r.chunks, dtype=np.int64), scores[r.chunks]) for r in best])
        else:
            ranked = self._rank_candidates(queries, k, scoring, evidence, view, matrix, group_scores)
        chosen = [view.vids[c] for hits in ranked for _, c, _ in hits]
        vids = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
        rows = self._fetch_hit_rows(vids)
        results: list[list[DocumentHit]] = []
        for hits in ranked:
            documents = []
            for found, chunks, scores in hits:
                evidence_hits = [
                    _search_hit(rows[vid], score)
                    for vid, score in zip(view.vids[chunks].tolist(), scores.tolist(), strict=True)
                    if vid in rows
                ]
                source = str(groups.documents[found.document])
                documents.append(DocumentHit(source=source, score=found.score, chunks=evidence_hits))
            results.append(documents)
        return results

    def _rank_candidates(
        self,
        queries: npt.NDArray[np.float32],
        k: int,
        scoring: DocumentScoring,
        evidence: int,
        view: _DocumentView,
        matrix: npt.NDArray[np.float32],
        group_scores: npt.NDArray[np.float32] | None,
    ) -> list[list[tuple[RankedDocument, npt.NDArray[np.int64], npt.NDArray[np.float32]]]]:
        """HNSW: over-fetch chunks, then score every chunk of each candidate document exactly."""
        groups = view.groups
        if groups is None:  # pragma: no cover - the caller checked
            return []
        wanted = min(k, groups.n_documents)
        fetch = min(int(self._index.ntotal), wanted * HNSW_DOCUMENT_OVERFETCH)
        _, ids = self._search_index(queries, fetch)
        sorted_vids = np.argsort(view.vids)
        # Exact `mean` scores of every document (one product with the group vectors): candidates for `mean` and
        # `hybrid`, and the fill-up when the fetched chunks name fewer than k documents.
        all_group_scores = group_scores if group_scores is not None else queries @ view.group_vectors.T
        mean_scores = document_scores_from_groups(all_group_scores, groups)
        out: list[list[tuple[RankedDocument, npt.NDArray[np.int64], npt.NDArray[np.float32]]]] = []
        for row in range(queries.shape[0]):
            hit_vids = ids[row][ids[row] >= 0]
            where = np.searchsorted(view.vids, hit_vids, sorter=sorted_vids)
            where = np.clip(where, 0, len(sorted_vids) - 1)
            chunk_index = sorted_vids[where]
            chunk_index = chunk_index[view.vids[chunk_index] == hit_vids]
            candidates = list(dict.fromkeys(groups.group_document[groups.chunk_group[chunk_index]].tolist()))
            if group_scores is not None or len(candidates) < wanted:
                best_mean = np.argsort(-mean_scores[row], kind="stable")[: wanted * HNSW_DOCUMENT_OVERFETCH]
                if group_scores is None:
                    have = set(candidates)
                    best_mean = np.asarray([d for d in best_mean.tolist() if d not in have][: wanted - len(have)])
                candidates = list(dict.fromkeys(candidates + best_mean.tolist()))
            if not candidates:
                out.append([])
                continue
            chunk_lists = document_chunks(groups, candidates)
            index = np.concatenate(chunk_lists)
            sub = ChunkGroups.build(
                np.repeat(candidates, [len(c) for c in chunk_lists]).tolist(),
                groups.group_size[groups.chunk_group[index]].tolist(),
            )
            scores = matrix[view.positions[index]] @ queries[row]
            sub_group_scores = None
            if group_scores is not None:
                global_group = groups.chunk_group[index[sub.order[sub.group_starts]]]
                sub_group_scores = group_scores[row][global_group]
            found = rank_documents(scores, sub, scoring, k, evidence=evidence, group_scores=sub_group_scores)
            out.append(
                [
                    (
                        RankedDocument(document=candidates[r.document], score=r.score, chunks=r.chunks),
                        index[r.chunks],
                        scores[r.chunks],
                    )
                    for r in found
                ]
            )
        return out

    def _storage_matrix(self) -> npt.NDArray[np.float32]:
        """The vectors of the FAISS index as an (ntotal, dimension) view (no copy), in FAISS's internal order.

        Valid until the index changes; taken afresh for every search.
        """
        inner: Any = faiss.downcast_index(self._index.index)
        flat = inner if isinstance(inner, faiss.IndexFlat) else faiss.downcast_index(inner.storage)
        total = int(flat.ntotal)
        if total == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        data = faiss.rev_swig_ptr(flat.get_xb(), total * self.dimension)  # type: ignore[attr-defined]
        return np.asarray(data).reshape(total, self.dimension)

    def _documents_view(self) -> _DocumentView:
        """Group the indexed chunks by (source, chunk size); cached until the index or the generation changes."""
        # The index object itself (not its id(), which a new object may reuse) marks a rebuild.
        key = (self._index, self._generation, int(self._index.ntotal))
        view = self._document_view
        if view is not None and view.key[0] is key[0] and view.key[1:] == key[1:]:
            return view
        db = self._connection()
        id_map = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        db.execute("BEGIN")
        try:
            rows = db.execute(f"SELECT vid, source, {_CHUNK_SIZE_SQL} FROM chunks").fetchall()
            stored: dict[tuple[str, int], tuple[int, bytes]] = {}
            if self._has_groups_table:
                for source, size, count, blob in db.execute("SELECT source, chunk_tokens, chunks, vector FROM groups"):
                    stored[(source, int(size))] = (int(count), blob)
        finally:
            db.execute("COMMIT")
        row_vids = np.fromiter((row[0] for row in rows), np.int64, len(rows))
        by_vid = np.argsort(row_vids)
        where = np.clip(np.searchsorted(row_vids, id_map, sorter=by_vid), 0, max(len(rows) - 1, 0))
        row_of = by_vid[where] if len(rows) else np.zeros(0, dtype=np.int64)
        # A chunk in the index but not in the database was deleted by a writer after this reader opened: skip it.
        valid = row_vids[row_of] == id_map if len(rows) else np.zeros(len(id_map), dtype=bool)
        positions = np.flatnonzero(valid).astype(np.int64)
        vids = id_map[positions]
        if positions.size == 0:
            view = _DocumentView(key, positions, vids, None, np.zeros((0, self.dimension), np.float32), True)
            self._document_view = view
            return view
        picked = row_of[positions].tolist()
        groups = ChunkGroups.build([rows[j][1] for j in picked], [rows[j][2] for j in picked])
        vectors = np.empty((groups.n_groups, self.dimension), dtype=np.float32)
        missing = []
        for g, (doc, size, count) in enumerate(
            zip(groups.group_document.tolist(), groups.group_size.tolist(), groups.group_counts.tolist(), strict=True)
        ):
            entry = stored.get((str(groups.documents[doc]), size))
            if entry is None or entry[0] != count or len(entry[1]) != 4 * self.dimension:
                missing.append(g)
            else:
                vectors[g] = np.frombuffer(entry[1], dtype="<f4")
        if missing:
            # Only an index written before the groups table existed, opened read-only, gets here (or a reader racing
            # a writer): derive the vectors from the chunks, exactly as a write would have stored them.
            logger.info("computing %d document group vectors of %s in memory", len(missing), self.db_path)
            vectors[missing] = group_vectors(self._storage_matrix()[positions], groups)[missing]
        view = _DocumentView(
            key, positions, vids, groups, vectors, all_positions=len(positions) == len(id_map) and bool(valid.all())
        )
        self._document_view = view
        return view

    def _ensure_groups_table(self, read_only: bool) -> bool:
        """Whether the `groups` table exists; a writable open of an older store creates and fills it."""
        db = self._connection()
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'groups'").fetchone():
            return True
        if read_only:
            return False
        with self._transaction() as db:
            db.execute(_GROUPS_SCHEMA)
            for (source,) in db.execute("SELECT DISTINCT source FROM chunks").fetchall():
                _refresh_groups(db, source)
        logger.info("added document group vectors to %s", self.db_path)
        return True

    @_reports_damage
    def describe(self) -> dict[str, Any]:
        """Backend, index kind, counts, dimension, generation and folder, as JSON types."""
        db = self._connection()
        summary: dict[str, Any] = {
            "backend": self.backend,
            "index": self._settings.index,
            "metric": "inner_product",
            "count": self.count(),
            "sources": int(db.execute("SELECT COUNT(*) FROM sources").fetchone()[0]),
            "dimension": self.dimension,
            "generation": self._generation,
            "path": str(self.folder),
            "gpu": self._use_gpu,
            "read_only": self.read_only,
            **self._manifest_summary(),
        }
        if self._settings.index == "hnsw":
            summary["hnsw"] = {
                "m": self._settings.hnsw_m,
                "ef_construction": self._settings.hnsw_ef_construction,
                "ef_search": self._settings.hnsw_ef_search,
            }
        return summary

    @_reports_damage
    def _commit_backend(self, *, final: bool) -> None:
        db = self._connection()
        self._sync_index()
        # Durable database first: vectors.faiss must never claim a generation the database could lose on power loss.
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if self._file_generation != self._generation and (final or self._file_refresh_due()):
            self._write_faiss_file()

    def _file_refresh_due(self) -> bool:
        # An indexer commits after every batch; rewriting the whole file each time would make a long run quadratic in
        # I/O. Rewriting once the changes reach a quarter of the index keeps the bytes written linear overall.
        total = int(self._index.ntotal)
        return total <= _ALWAYS_REFRESH_BELOW or self._changed_since_file >= _REFRESH_FRACTION * total

    def _close_backend(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self._gpu_index = None

    def _create(self, dimension: int, settings: FaissSettings) -> None:
        """Create an empty store: build the database under a temp name, fsync it, then rename it into place."""
        meta = {
            "schema_version": str(SCHEMA_VERSION),
            "store_uuid": str(uuid.uuid4()),
            "dimension": str(dimension),
            "settings": settings.model_dump_json(),
            "generation": "0",
            "created_at": datetime.now(UTC).isoformat(),
        }
        fd, temp_name = tempfile.mkstemp(dir=self.folder, prefix=f".{DB_NAME}.", suffix=TEMP_SUFFIX)
        # mkstemp makes the file 0600 whatever the umask; the database gets the mode any new file would get.
        with contextlib.suppress(OSError, AttributeError):
            os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        try:
            db = sqlite3.connect(temp_name, isolation_level=None)
            try:
                db.executescript(f"BEGIN; {_SCHEMA} {_GROUPS_SCHEMA} COMMIT;")
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
            finally:
                db.close()
            fd = os.open(temp_name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp_name, self.db_path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        fsync_dir(self.folder)

    def _validate_existing(
        self, dimension: int | None, settings: FaissSettings | None, *, integrity: bool = False
    ) -> _Meta:
        """Read the store's meta through a read-only connection, so a bad file is reported and left untouched."""
        try:
            db = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise IndexCorruptError(f"cannot open {self.db_path}: {exc}") from None
        try:
            meta = self._read_meta(db)
            if integrity:
                _quick_check(db, self.db_path)
        finally:
            db.close()
        if dimension is not None and check_dimension(dimension) != meta.dimension:
            raise IndexMismatchError(
                f"FAISS store at {self.folder} holds {meta.dimension}-dimensional vectors; you asked for {dimension}: "
                "use --out for a new index or the model that built this one"
            )
        if settings is not None and settings.index != meta.settings.index:
            raise IndexMismatchError(
                f"FAISS store at {self.folder} is a {meta.settings.index!r} index; you asked for {settings.index!r}: "
                f"use --out for a new index or --faiss-index {meta.settings.index}"
            )
        return meta

    def _read_meta(self, db: sqlite3.Connection) -> _Meta:
        advice = f"delete {self.folder} and run `tempscale-rag index` again"
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"meta", "chunks", "sources"} <= tables:
                raise IndexCorruptError(f"{self.db_path} is an SQLite database but not a tempscale-rag store; {advice}")
            values = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(
                f"{self.db_path} is corrupt or not an SQLite database ({exc}); run `tempscale-rag repair --out "
                f"{self.folder}` to salvage what is readable, or {advice}"
            ) from None
        try:
            version = int(values["schema_version"])
            if version != SCHEMA_VERSION:
                raise IndexMismatchError(
                    f"{self.db_path} has schema version {version}; this tempscale-rag reads version {SCHEMA_VERSION}: "
                    "use the tempscale-rag version that wrote it, or re-index"
                )
            return _Meta(
                store_uuid=uuid.UUID(values["store_uuid"]),
                dimension=check_dimension(int(values["dimension"])),
                settings=FaissSettings.model_validate_json(values["settings"]),
                generation=int(values["generation"]),
            )
        except (KeyError, ValueError, ValidationError) as exc:
            if isinstance(exc, IndexMismatchError):
                raise
            raise IndexCorruptError(f"{self.db_path} has invalid store metadata ({exc!r}); {advice}") from None

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        if read_only:
            uri = f"{self.db_path.resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
        else:
            db = sqlite3.connect(self.db_path, isolation_level=None, timeout=30.0)
            # WAL: readers (a search running while indexing) never block the writer, and a commit is one append.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _connection(self) -> sqlite3.Connection:
        self._check_open()
        if self._db is None:
            raise RuntimeError("FaissStore has no database connection")
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _write_records(self, db: sqlite3.Connection, batch: list[ChunkRecord]) -> _Change:
        """Insert each record unless an identical one is stored (same id and content: it keeps its FAISS id)."""
        change = _Change()
        for record in batch:
            row = (
                record.id,
                record.source,
                record.position,
                record.token_length,
                record.bucket,
                record.text,
                metadata_json(record.metadata),
                record.vector.astype("<f4", copy=False).tobytes(),
            )
            old = db.execute(f"SELECT vid, {_ROW_COLUMNS} FROM chunks WHERE chunk_id = ?", (record.id,)).fetchone()
            if old is not None:
                if tuple(old[1:]) == row:
                    continue
                db.execute("DELETE FROM chunks WHERE vid = ?", (old[0],))
                change.removed.append(int(old[0]))
                if old[2] != record.source:
                    change.displaced_sources.add(old[2])
            cursor = db.execute(f"INSERT INTO chunks ({_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            if cursor.lastrowid is None:
                raise RuntimeError(f"SQLite returned no row id for chunk {record.id}")
            change.added_ids.append(cursor.lastrowid)
            change.added_vectors.append(record.vector)
        return change

    def _bump_generation(self, db: sqlite3.Connection, change: _Change) -> None:
        """Inside the transaction: advance the generation if the chunks change."""
        if change.removed or change.added_ids:
            change.generation = self._generation + 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(change.generation),))

    def _apply_change(self, change: _Change) -> None:
        """After the commit: queue the FAISS changes (applied lazily, in batches, at the next search or commit)."""
        self._modified = True
        if change.generation is None:
            return
        self._generation = change.generation
        self._changed_since_file += len(change.removed) + len(change.added_ids)
        self._queue_removals(change.removed)
        if change.added_ids:
            self._pending_ids.append(np.asarray(change.added_ids, dtype=np.int64))
            self._pending_vectors.append(np.stack(change.added_vectors))

    def _queue_removals(self, vids: list[int]) -> None:
        if not vids:
            return
        if self._settings.index == "hnsw":
            # HNSW graphs cannot remove nodes (faiss raises); rebuild once, at the next search or commit.
            self._needs_rebuild = True
            self._pending_ids.clear()
            self._pending_vectors.clear()
            return
        # Earlier additions go in first so that every queued removal refers to an id already in the index.
        self._flush_additions()
        self._pending_removals.extend(vids)

    def _flush_additions(self) -> None:
        if self._pending_ids and not self._needs_rebuild:
            self._index.add_with_ids(np.concatenate(self._pending_vectors), np.concatenate(self._pending_ids))
            self._gpu_index = None
        self._pending_ids.clear()
        self._pending_vectors.clear()

    def _sync_index(self) -> None:
        """Apply queued removals and additions (or the pending rebuild) to the in-memory index."""
        if self._needs_rebuild:
            self._index = self._rebuild_index()
            self._needs_rebuild = False
            self._pending_ids.clear()
            self._pending_vectors.clear()
            self._pending_removals.clear()
            self._gpu_index = None
            return
        if self._pending_removals:
            selector = faiss.IDSelectorBatch(np.asarray(self._pending_removals, dtype=np.int64))
            self._index.remove_ids(selector)
            self._pending_removals.clear()
            self._gpu_index = None
        self._flush_additions()

    def _new_index(self) -> Any:
        settings = self._settings
        inner: Any
        if settings.index == "flat":
            inner = faiss.IndexFlatIP(self.dimension)
        else:
            inner = faiss.IndexHNSWFlat(self.dimension, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = settings.hnsw_ef_construction
            inner.hnsw.efSearch = settings.hnsw_ef_search
        return faiss.IndexIDMap(inner)

    def _rebuild_index(self) -> Any:
        """Build the FAISS index from the chunks in SQLite (one consistent snapshot)."""
        db = self._connection()
        index = self._new_index()
        dimension = self.dimension
        try:
            db.execute("BEGIN")
            try:
                self._generation = self._read_meta(db).generation
                cursor = db.execute("SELECT vid, vector FROM chunks ORDER BY vid")
                while rows := cursor.fetchmany(16384):
                    blob = b"".join(row[1] for row in rows)
                    if len(blob) != 4 * dimension * len(rows):
                        raise IndexCorruptError(
                            f"{self.db_path} holds vectors of the wrong size (expected {dimension} float32 values); "
                            f"delete {self.folder} and run `tempscale-rag index` again"
                        )
                    vectors = np.frombuffer(blob, dtype="<f4").reshape(len(rows), dimension).astype(np.float32)
                    index.add_with_ids(vectors, np.fromiter((row[0] for row in rows), np.int64, len(rows)))
            finally:
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(damaged_database_message(self.db_path, str(exc))) from None
        return index

    def _load_index(self) -> tuple[Any, int | None]:
        """The index from `vectors.faiss` if it is intact and current, else rebuilt from SQLite.

        Returns:
            The index and the generation of the file on disk that matches it (None when rebuilt).
        """
        problem = self._check_faiss_file()
        if problem is None:
            try:
                with self.faiss_path.open("rb") as handle:
                    handle.seek(_HEADER.size)
                    # faiss's bundled stubs lack the callback IO classes that exist at run time.
                    reader = faiss.PyCallbackIOReader(handle.read)  # type: ignore[attr-defined]
                    index = faiss.read_index(reader)
                problem = self._check_loaded(index)
                if problem is None:
                    return index, self._generation
            except (OSError, RuntimeError) as exc:
                problem = f"faiss cannot read it ({exc})"
        if problem != "missing":
            logger.warning("rebuilding %s from %s: %s", self.faiss_path, DB_NAME, problem)
        return self._rebuild_index(), None

    def _check_faiss_file(self) -> str | None:
        """Why `vectors.faiss` cannot be used for the current generation, or None if it can."""
        try:
            with self.faiss_path.open("rb") as handle:
                header = handle.read(_HEADER.size)
                if len(header) != _HEADER.size:
                    return "the file is truncated"
                magic, store_uuid, generation, length, digest = _HEADER.unpack(header)
                if magic != _MAGIC:
                    return "it is not a tempscale-rag FAISS file"
                if store_uuid != self._uuid.bytes:
                    return "it belongs to another store"
                if generation != self._generation:
                    return f"it reflects generation {generation}, the database is at {self._generation}"
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

    def _check_loaded(self, index: Any) -> str | None:
        if not isinstance(index, faiss.IndexIDMap):
            return f"it holds a {type(index).__name__}, not an IndexIDMap"
        inner = faiss.downcast_index(index.index)
        expected = faiss.IndexFlatIP if self._settings.index == "flat" else faiss.IndexHNSWFlat
        if not isinstance(inner, expected) or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            return f"it holds a {type(inner).__name__}, expected an inner-product {expected.__name__}"
        if index.d != self.dimension:
            return f"its dimension is {index.d}, expected {self.dimension}"
        if index.ntotal != self.count():
            return f"it holds {index.ntotal} vectors, the database {self.count()}"
        return None

    def _write_faiss_file(self) -> None:
        """Write the index to `vectors.faiss` atomically, header last so that only a complete file validates."""
        hasher = hashlib.sha256()
        length = 0
        with atomic_file(self.faiss_path) as handle:
            handle.write(b"\0" * _HEADER.size)

            def sink(chunk: bytes) -> int:
                nonlocal length
                hasher.update(chunk)
                length += len(chunk)
                return handle.write(chunk)

            writer = faiss.PyCallbackIOWriter(sink)  # type: ignore[attr-defined]
            faiss.write_index(self._index, writer)
            del writer
            handle.seek(0)
            handle.write(_HEADER.pack(_MAGIC, self._uuid.bytes, self._generation, length, hasher.digest()))
        self._file_generation = self._generation
        self._changed_since_file = 0

    def _resolve_gpu(self, use_gpu: bool | None) -> bool:
        if use_gpu is False:
            return False
        available = faiss_gpu_count() > 0 and self._settings.index == "flat"
        if use_gpu and not available:
            raise ValueError(
                "use_gpu=True needs faiss with GPU support (a faiss-gpu package, faiss.get_num_gpus() > 0) and a "
                f"flat index; this faiss sees {faiss_gpu_count()} GPUs and the index is {self._settings.index!r}"
            )
        return available

    def _search_index(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if self._use_gpu and k <= _GPU_MAX_K:
            if self._gpu_index is None:
                self._gpu_index = faiss.index_cpu_to_all_gpus(faiss.downcast_index(self._index.index))
                self._gpu_id_map = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            scores, positions = self._gpu_index.search(queries, k)
            id_map = self._gpu_id_map
            if id_map is None:
                raise RuntimeError("GPU id map missing")
            ids = np.where(positions >= 0, id_map[np.clip(positions, 0, None)], -1)
            return scores, ids
        if self._settings.index == "hnsw":
            hnsw: Any = faiss.downcast_index(self._index.index)
            hnsw.hnsw.efSearch = max(self._settings.hnsw_ef_search, k)
        scores, ids = self._index.search(queries, k)
        return scores, ids

    def _fetch_hit_rows(self, vids: npt.NDArray[np.int64]) -> dict[int, tuple[Any, ...]]:
        db = self._connection()
        rows: dict[int, tuple[Any, ...]] = {}
        values = vids.tolist()
        for start in range(0, len(values), _SQL_BATCH):
            part = values[start : start + _SQL_BATCH]
            marks = ",".join("?" * len(part))
            for row in db.execute(f"SELECT {_HIT_COLUMNS} FROM chunks WHERE vid IN ({marks})", part):
                rows[row[0]] = row
        return rows


def _quick_check(db: sqlite3.Connection, db_path: Path) -> None:
    """Raise `IndexCorruptError` naming `db_path` unless `PRAGMA quick_check` finds every page intact."""
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(damaged_database_message(db_path, str(exc))) from None
    problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
    if problems:
        raise IndexCorruptError(damaged_database_message(db_path, problems[0].splitlines()[-1]))


def _search_hit(row: tuple[Any, ...], score: float) -> SearchHit:
    return SearchHit(
        id=row[1],
        score=float(score),
        text=row[2],
        source=row[3],
        position=row[4],
        token_length=row[5],
        bucket=row[6],
        metadata=_load_metadata(row[7]),
    )


def _write_groups(db: sqlite3.Connection, source: str, batch: list[ChunkRecord]) -> None:
    """Inside a transaction: store the group vectors of `source`, whose chunks are exactly `batch`."""
    db.execute("DELETE FROM groups WHERE source = ?", (source,))
    if batch:
        sizes = [chunk_size_of(record.metadata) for record in batch]
        _insert_groups(db, source, sizes, np.stack([record.vector for record in batch]))


def _refresh_groups(db: sqlite3.Connection, source: str) -> None:
    """Inside a transaction: recompute the group vectors of `source` from its stored chunks."""
    rows = db.execute(f"SELECT {_CHUNK_SIZE_SQL}, vector FROM chunks WHERE source = ?", (source,)).fetchall()
    db.execute("DELETE FROM groups WHERE source = ?", (source,))
    if rows:
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4").reshape(len(rows), -1)
        _insert_groups(db, source, [int(row[0]) for row in rows], vectors)


def _insert_groups(db: sqlite3.Connection, source: str, sizes: list[int], vectors: npt.NDArray[np.float32]) -> None:
    groups = ChunkGroups.build([source] * len(sizes), sizes)
    means = group_vectors(vectors, groups)
    db.executemany(
        "INSERT INTO groups (source, chunk_tokens, chunks, vector) VALUES (?, ?, ?, ?)",
        [
            (source, int(size), int(count), mean.astype("<f4").tobytes())
            for size, count, mean in zip(groups.group_size, groups.group_counts, means, strict=True)
        ],
    )


def _delete_vids(db: sqlite3.Connection, vids: list[int]) -> None:
    for start in range(0, len(vids), _SQL_BATCH):
        part = vids[start : start + _SQL_BATCH]
        db.execute(f"DELETE FROM chunks WHERE vid IN ({','.join('?' * len(part))})", part)


def _load_metadata(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _acquire_lock(path: Path) -> IO[bytes]:
    """Take the writer lock (flock) of a store, or raise StoreUnavailableError if another process holds it."""
    handle = path.open("a+b")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock; a second writer there is the user's responsibility.
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreUnavailableError(
            f"the index at {path.parent} is being written by another process (it holds {path}); wait for it to finish"
        ) from None
    return handle
