"""`FaissStore`: the embedded default store, an SQLite database of chunks plus a FAISS index derived from it.

Layout of a store folder: `chunks.sqlite` (the source of truth, see `database.py`), `vectors.faiss` (a cache of the
FAISS index, see `vector_file.py`; a missing, torn or outdated file is rebuilt from the database on open) and
`writer.lock` (held by the one process that may write, see `locking.py`).

Each `replace_source`/`upsert`/`delete_source` is one SQLite transaction, so a crash, even `kill -9`, leaves either the
state before the call or after it. `commit()` checkpoints the WAL (an fsync, which also makes the changes survive a
power loss) and rewrites `vectors.faiss` when the index is small (<= 50,000 vectors) or a quarter of it changed since
the last write; `close()` always rewrites a stale `vectors.faiss`. An out-of-date file only costs a rebuild from
SQLite at the next open. A flat store that streamed a big source (`replace_source_batches`) releases its in-memory
index until the next search and writes `vectors.faiss` from SQLite instead (`streaming.py`), so that indexing never
holds the vectors.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import LexicalSettings
from tempscale_rag.ranking.candidates import CandidatePolicy, ChunkTable
from tempscale_rag.stores.base import (
    ChunkRecord,
    SearchHit,
    VectorStore,
    as_query_matrix,
    check_dimension,
    check_fingerprint,
    check_k,
    check_records,
    check_source,
)
from tempscale_rag.stores.errors import IndexNotFoundError
from tempscale_rag.stores.faiss import database as sql
from tempscale_rag.stores.faiss import streaming, writes
from tempscale_rag.stores.faiss.database import DB_NAME, Change, reports_damage
from tempscale_rag.stores.faiss.documents import DocumentView, candidate_sources, current_view
from tempscale_rag.stores.faiss.lexical import (
    build_lexical,
    check_lexical,
    describe_lexical,
    open_lexical,
    search_lexical,
    search_lexical_documents,
)
from tempscale_rag.stores.faiss.locking import acquire_lock
from tempscale_rag.stores.faiss.vector_file import FAISS_NAME, file_problem, read_index_file
from tempscale_rag.stores.faiss.vectors import FaissVectors, hnsw_summary, loaded_index_problem, new_index, resolve_gpu
from tempscale_rag.stores.manifest import FaissSettings, remove_stale_temp_files

logger = logging.getLogger(__name__)

# commit() rewrites vectors.faiss when the index is this small, or this fraction of it changed since the last write.
_ALWAYS_REFRESH_BELOW = 50_000
_REFRESH_FRACTION = 0.25
HNSW_DOCUMENT_OVERFETCH = 10
"""HNSW document ranking: chunks fetched, and documents taken by `mean` score, per wanted document."""
HNSW_POLICY = CandidatePolicy(
    chunk_overfetch=HNSW_DOCUMENT_OVERFETCH, documents=None, mean_documents=HNSW_DOCUMENT_OVERFETCH
)


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
        lexical: The lexical (BM25) channel the manifest records (`lexical.py`), None: whatever the database holds
            (none: dense only). A writable open builds it from the stored texts if missing or different.

    Raises:
        IndexNotFoundError: If the folder holds no store and `create` is False (or `read_only`).
        IndexCorruptError: If the database is corrupt or not a tempscale-rag store; nothing is modified.
        IndexMismatchError: If the existing store has another dimension or index kind, or (read-only) other
            lexical settings.
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
        lexical: LexicalSettings | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.db_path = self.folder / DB_NAME
        self.faiss_path = self.folder / FAISS_NAME
        self._db: sqlite3.Connection | None = None
        self._lock: IO[bytes] | None = None
        self._vectors: FaissVectors | None = None
        try:
            meta = self._open_files(dimension, settings, create=create, read_only=read_only)
            super().__init__(meta.dimension, read_only=read_only)
            self._uuid = meta.store_uuid
            self._settings = meta.settings
            self._generation = meta.generation
            use = resolve_gpu(use_gpu, self._settings)
            self._changed_since_file = 0
            if not read_only:
                remove_stale_temp_files(self.folder)
            self._db = sql.connect(self.db_path, read_only=read_only)
            self._document_view: DocumentView | None = None
            self._has_groups_table = sql.ensure_groups_table(self._db, self.db_path, read_only=read_only)
            self._generation = sql.read_meta(self._db, self.db_path).generation
            self._lexical, built = open_lexical(self._db, self.db_path, lexical, read_only=read_only)
            self._modified = built
            index, self._file_generation = self._load_index()
            self._vectors = FaissVectors(index, self._settings, self._rebuild_index, use_gpu=use)
        except BaseException:
            self._close_backend()
            raise

    def _open_files(
        self, dimension: int | None, settings: FaissSettings | None, *, create: bool, read_only: bool
    ) -> sql.StoreMeta:
        """Validate an existing database (then lock it for writing) or create one; nothing else is opened yet."""
        if self.db_path.exists():
            # Validate before taking the lock or opening for writing: a bad folder is reported, never modified. A
            # writer also checks the pages (PRAGMA quick_check, ~10 ms per 3 MB), so it never extends a damaged
            # database; readers find damage on first contact (`reports_damage`) or `check_integrity`.
            meta = sql.validate_existing(self.db_path, dimension, settings, integrity=not read_only)
            if not read_only:
                self._lock = acquire_lock(self.folder)
            return meta
        if not create or read_only:
            raise IndexNotFoundError(
                f"{self.folder} holds no FAISS store ({DB_NAME} is missing); "
                f"build one with `tempscale-rag index DOCS --out {self.folder}`"
            )
        if dimension is None:
            raise ValueError("dimension is required to create a FaissStore")
        check_dimension(dimension)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = acquire_lock(self.folder)
        if not self.db_path.exists():
            sql.create_database(self.db_path, dimension, settings or FaissSettings())
        return sql.validate_existing(self.db_path, dimension, settings)

    @property
    def settings(self) -> FaissSettings:
        """The FAISS settings this store was built with."""
        return self._settings

    @property
    def lexical(self) -> LexicalSettings | None:
        """The lexical channel's settings; None when the store is dense only."""
        return None if self._lexical is None else self._lexical.settings

    @property
    def generation(self) -> int:
        """Counter bumped by every committed change to the chunks."""
        return self._generation

    @property
    def uses_gpu(self) -> bool:
        """Whether searches run on the GPU."""
        return self._index().use_gpu

    @property
    def gpu_index(self) -> Any:
        """The GPU copy searches go to (made by the first GPU search), else None."""
        return self._index().gpu_index

    def check_integrity(self) -> None:
        """Check every page of `chunks.sqlite` (SQLite's `PRAGMA quick_check`: ~10 ms per 3 MB).

        Raises:
            IndexCorruptError: If the database is damaged; the message names the file and how to repair it.
        """
        db = self._connection()
        sql.quick_check(db, self.db_path)
        check_lexical(self._lexical, db, self.db_path)

    @reports_damage
    def add_lexical(self, settings: LexicalSettings) -> int:
        """Give the store a lexical channel (or rebuild it) from the stored texts of the chunks of its size.

        One transaction, no embedding: the vectors are untouched. The caller records `settings` in the manifest.

        Returns:
            The number of chunks indexed lexically.

        Raises:
            ValueError: If `settings` names an analyser this version does not have.
            StoreUnavailableError: If the store is read-only.
        """
        self._check_writable()
        self._lexical, count = build_lexical(self._connection(), settings)
        self._modified = True
        return count

    @reports_damage
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
        db = self._connection()
        self._apply_change(
            writes.replace_rows(db, source, fingerprint, batch, generation=self._generation, lexical=self._lexical)
        )

    @reports_damage
    def replace_source_batches(self, source: str, fingerprint: str, batches: Iterable[Iterable[ChunkRecord]]) -> int:
        """`replace_source` from a stream of batches, in one transaction, holding one batch at a time (`streaming`).

        Args:
            source: The file path as indexed.
            fingerprint: The source's content fingerprint.
            batches: The new chunks, in batches; each record must have `record.source == source`.

        Returns:
            The number of chunks the source has now.
        """
        self._check_writable()
        check_source(source)
        check_fingerprint(fingerprint)
        db = self._connection()
        done = streaming.write_batches(
            db,
            source,
            fingerprint,
            batches,
            dimension=self.dimension,
            generation=self._generation,
            lexical=self._lexical,
        )
        self._modified = True
        if done.generation is not None:
            self._generation = done.generation
            self._changed_since_file += done.added + done.removed
            streaming.settle(db, self._index(), done, self.dimension, self._settings)
        return done.chunks

    @reports_damage
    def upsert(self, records: Iterable[ChunkRecord]) -> None:
        """Add records in one transaction, replacing stored records with the same id. `sources()` is unchanged.

        Args:
            records: The records.
        """
        self._check_writable()
        batch = check_records(records, self.dimension)
        if batch:
            db = self._connection()
            self._apply_change(writes.upsert_rows(db, batch, generation=self._generation, lexical=self._lexical))

    @reports_damage
    def delete_source(self, source: str) -> int:
        """Delete every chunk of `source` and its fingerprint, in one transaction.

        Args:
            source: The file path as indexed.

        Returns:
            The number of chunks deleted.
        """
        self._check_writable()
        check_source(source)
        change = writes.delete_rows(self._connection(), source, generation=self._generation, lexical=self._lexical)
        self._apply_change(change)
        return len(change.removed)

    @reports_damage
    def sources(self) -> dict[str, str]:
        """Map each fully stored source to its fingerprint."""
        db = self._connection()
        return dict(db.execute("SELECT source, fingerprint FROM sources ORDER BY source").fetchall())

    @reports_damage
    def count(self) -> int:
        """The number of stored chunks."""
        db = self._connection()
        return int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    @reports_damage
    def search_many(self, query_vectors: npt.ArrayLike, k: int = 10) -> list[list[SearchHit]]:
        """Search many queries with one FAISS call and one metadata lookup per 900 distinct hits.

        Args:
            query_vectors: A matrix of shape (n, dimension), L2-normalised.
            k: How many hits per query at most.

        Returns:
            One list of up to `k` hits per query, best first.
        """
        found = self.dense_chunks(query_vectors, k)
        distinct = np.unique(np.concatenate([np.empty(0, dtype=np.int64), *(ids for ids, _ in found)]))
        rows = sql.fetch_hit_rows(self._connection(), distinct.tolist())
        # A missing row was deleted by a writer after this reader opened.
        hits = ((zip(ids.tolist(), scores.tolist(), strict=True)) for ids, scores in found)
        return [
            [_search_hit(row, score) for vid, score in pairs if (row := rows.get(vid)) is not None] for pairs in hits
        ]

    @reports_damage
    def dense_chunks(
        self, query_vectors: npt.ArrayLike, n: int
    ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[Any]]]:
        """(FAISS ids, scores) of each query's best `n` chunks, no record read: what hybrid chunk search fuses."""
        self._check_open()
        return search_keys(self._synced(), as_query_matrix(query_vectors, self.dimension), check_k(n))

    @reports_damage
    def lexical_chunks(self, query: tuple[list[int], list[float]], n: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The best `n` chunks of the lexical channel for one query, by `PivotBM25` over the stored lexical chunks.

        Args:
            query: (term ids, counts), as `SparseEncoder().query(text)` returns.
            n: How many chunks at most; None: every chunk that holds a query term.

        Returns:
            (keys, scores): the chunks' FAISS ids (int64, the keys of `ChunkTable.keys` and `evidence_hits`) and
            their float32 scores, best first, ties by key; both empty for an empty query or a dense-only store.

        Raises:
            ValueError: If the ids and counts differ in length, an id is not 32-bit unsigned, or `n` < 0.
            IndexMismatchError: If the channel was built with another analyser than this version's.
        """
        return search_lexical(self._lexical, self._connection(), query, n, self.folder)

    @reports_damage
    def lexical_documents(self, query: tuple[list[int], list[float]], n: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The best `n` documents by whole-document BM25 (`lexical_documents.py`) for one query.

        Args:
            query: (term ids, counts), as `SparseEncoder().query(text)` returns.
            n: How many documents at most; None: every document that holds a query term.

        Returns:
            (sources, float32 scores), best first, ties by source; both empty for an empty query, a dense-only store
            or a lexical channel built without the whole-document list.
        """
        return search_lexical_documents(self._lexical, self._connection(), query, n, self.folder)

    # --- the document-ranking contract (`tempscale_rag.ranking.candidates.DocumentSource`) ---------------------------

    @property
    def candidate_policy(self) -> CandidatePolicy | None:
        """None on a flat index (exact: every chunk is scored); HNSW over-fetches `HNSW_DOCUMENT_OVERFETCH` x."""
        return None if self._settings.index == "flat" else HNSW_POLICY

    @property
    def unit_queries(self) -> bool:
        """False: FAISS ranks by the raw inner product."""
        return False

    @reports_damage
    def document_table(self, sources: Sequence[str] | None) -> ChunkTable | None:
        """Every indexed chunk (a superset of any `sources`) over the current FAISS storage matrix."""
        vectors = self._synced()
        self._document_view, matrix = current_view(
            self._connection(),
            vectors,
            self.dimension,
            self._generation,
            self._document_view,
            has_groups_table=self._has_groups_table,
        )
        return self._document_view.table(matrix)

    def chunk_candidates(
        self, queries: npt.NDArray[np.float32], n_chunks: int, n_documents: int | None
    ) -> list[list[str]]:
        """The sources of the best `n_chunks` chunks of the FAISS search, per query."""
        vectors = self._synced()
        fetch = min(vectors.ntotal, n_chunks)
        if fetch == 0:
            return [[] for _ in range(queries.shape[0])]
        self.document_table(None)
        return candidate_sources(self._document_view, vectors, queries, fetch, n_documents)

    def mean_candidates(self, queries: npt.NDArray[np.float32], n: int) -> list[list[str]]:
        """The `n` documents with the best exact `mean` score, per query (one product with the group vectors)."""
        table = self.document_table(None)
        return [[] for _ in range(queries.shape[0])] if table is None else table.best_mean(queries, n)

    @reports_damage
    def evidence_hits(self, keys: Sequence[Hashable]) -> dict[Hashable, SearchHit]:
        """The stored chunks with the given vids, with score 0."""
        rows = sql.fetch_hit_rows(self._connection(), [int(str(key)) for key in keys])
        return {vid: _search_hit(row) for vid, row in rows.items()}

    # --- files, commits, the in-memory index ---------------------------------------------------------------------

    @reports_damage
    def _describe_backend(self) -> dict[str, Any]:
        db = self._connection()
        return {
            "backend": self.backend,
            "index": self._settings.index,
            "metric": "inner_product",
            "count": self.count(),
            "sources": int(db.execute("SELECT COUNT(*) FROM sources").fetchone()[0]),
            "dimension": self.dimension,
            "generation": self._generation,
            "path": str(self.folder),
            "gpu": self.uses_gpu,
            "read_only": self.read_only,
            "lexical": describe_lexical(self._lexical, db),
            **hnsw_summary(self._settings),
        }

    @reports_damage
    def _commit_backend(self, *, final: bool) -> None:
        db = self._connection()
        vectors = self._index()
        if not vectors.released:  # released (a big source was streamed in): the file is written from the database
            vectors = self._synced()
        # Durable database first: vectors.faiss must never claim a generation the database could lose on power loss.
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if self._file_generation != self._generation and (final or self._file_refresh_due()):
            self._file_generation = streaming.write_file(
                db, self.db_path, self.faiss_path, vectors, self._uuid, self._generation
            )
            self._changed_since_file = 0

    def _file_refresh_due(self) -> bool:
        # An indexer commits after every batch; rewriting the whole file each time would make a long run quadratic in
        # I/O. Rewriting once the changes reach a quarter of the index keeps the bytes written linear overall.
        total = self._index().ntotal
        return total <= _ALWAYS_REFRESH_BELOW or self._changed_since_file >= _REFRESH_FRACTION * total

    def _close_backend(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._vectors is not None:
            self._vectors.drop_gpu_copy()

    def _apply_change(self, change: Change) -> None:
        """After the commit: queue the FAISS changes (applied lazily, in batches, at the next search or commit)."""
        self._modified = True
        if change.generation is None:
            return
        self._generation = change.generation
        self._changed_since_file += len(change.removed) + len(change.added_ids)
        self._index().queue(change.removed, change.added_ids, change.added_vectors)

    def _index(self) -> FaissVectors:
        if self._vectors is None:
            raise RuntimeError("FaissStore has no FAISS index")
        return self._vectors

    def _synced(self) -> FaissVectors:
        """The FAISS index with every queued change applied (loaded again if it was released)."""
        self._check_open()
        vectors = self._index()
        if vectors.released:  # vectors.faiss is current if a commit wrote it since the release, else outdated
            fresh = self._file_generation == self._generation
            index, self._file_generation = self._load_index() if fresh else (self._rebuild_index(), None)
            vectors.restore(index)
        vectors.sync()
        return vectors

    def _rebuild_index(self) -> Any:
        """Build the FAISS index from the chunks in SQLite (one consistent snapshot)."""
        index = new_index(self._settings, self.dimension)
        self._generation = sql.read_all_vectors(self._connection(), self.db_path, self.dimension, index.add_with_ids)
        return index

    def _load_index(self) -> tuple[Any, int | None]:
        """The index from `vectors.faiss` if it is intact and current, else rebuilt from SQLite.

        Returns:
            The index and the generation of the file on disk that matches it (None when rebuilt).
        """
        problem = file_problem(self.faiss_path, self._uuid, self._generation)
        if problem is None:
            try:
                index = read_index_file(self.faiss_path)
                problem = loaded_index_problem(index, self._settings, self.dimension, self.count())
                if problem is None:
                    return index, self._generation
            except (OSError, RuntimeError) as exc:
                problem = f"faiss cannot read it ({exc})"
        if problem != "missing":
            logger.warning("rebuilding %s from %s: %s", self.faiss_path, DB_NAME, problem)
        return self._rebuild_index(), None

    def _connection(self) -> sqlite3.Connection:
        self._check_open()
        if self._db is None:
            raise RuntimeError("FaissStore has no database connection")
        return self._db


def _search_hit(row: tuple[Any, ...], score: float = 0.0) -> SearchHit:
    metadata = json.loads(row[7])
    return SearchHit(
        id=row[1],
        score=float(score),
        text=row[2],
        source=row[3],
        position=row[4],
        token_length=row[5],
        bucket=row[6],
        metadata=metadata if isinstance(metadata, dict) else {},
    )


def search_keys(vectors: Any, queries: npt.NDArray[np.float32], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each query's (FAISS ids, float32 scores) of its best `n` chunks, best first."""
    if vectors.ntotal == 0 or queries.shape[0] == 0:
        return [(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)) for _ in range(queries.shape[0])]
    scores, ids = vectors.search(queries, min(n, vectors.ntotal))
    kept = ids >= 0  # -1 pads results beyond ntotal
    return [(ids[row][kept[row]], scores[row][kept[row]]) for row in range(queries.shape[0])]
