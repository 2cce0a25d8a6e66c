"""Replacing one source's chunks from a stream of batches, in one transaction, with memory bounded by a batch.

`FaissStore.replace_source` takes a list: a 50 MB text file at four chunk sizes is about a million records (1.5 GB of
vectors alone), which it would hold at once, twice over (the records, then the vectors queued for FAISS).
`FaissStore.replace_source_batches` writes the same rows through `write_batches` instead: every batch is checked and
written (chunk rows, and lexical postings when the store has that channel) inside one SQLite transaction, so a crash
(even `kill -9`) or Ctrl-C leaves the state before the call or after it, exactly as `replace_source`. What the
transaction did is kept in SQLite temporary tables (on disk, not in Python lists): the ids it wanted, the vids it
added and those it removed. Only after the commit does `apply_to_index` read the added vectors back in batches into
the FAISS index, which is a cache of the database: an interruption there leaves a committed database and an index to
rebuild.

A flat store does not mirror a streamed source at all: it releases its in-memory index instead (`FaissVectors.release`,
loaded again from `vectors.faiss` or the database at the next search), and `write_vectors_file` writes `vectors.faiss`
from the database a batch at a time. Indexing a big file then never holds its vectors, nor any other file's: the
index process's memory is bounded by a batch (plus 8 bytes a vector for the ids of the file being written).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tempscale_rag.stores.base import ChunkRecord, check_records, chunk_size_of
from tempscale_rag.stores.errors import IndexCorruptError
from tempscale_rag.stores.faiss import database as sql
from tempscale_rag.stores.faiss.lexical import LexicalIndex
from tempscale_rag.stores.faiss.vector_file import flat_layout_matches, write_flat_file, write_index_file
from tempscale_rag.stores.faiss.vectors import FaissVectors
from tempscale_rag.stores.manifest import FaissSettings

READ_BACK_ROWS = 4096
"""Vectors read back from SQLite into FAISS at a time after the commit."""

# Connection-local tables (`temp` schema: a file of their own, never the store's database). Inserting into them is
# part of the transaction, so a rollback empties them too.
_TEMP_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS replace_wanted (chunk_id TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TEMP TABLE IF NOT EXISTS replace_added (vid INTEGER PRIMARY KEY)",
    "CREATE TEMP TABLE IF NOT EXISTS replace_removed (vid INTEGER PRIMARY KEY)",
)
_NOT_WANTED = "source = ? AND chunk_id NOT IN (SELECT chunk_id FROM temp.replace_wanted)"


@dataclass
class BatchedReplace:
    """What `write_batches` committed.

    Attributes:
        chunks: Records the source has now.
        added: Rows inserted (vids in `temp.replace_added` until the next call).
        removed: Rows deleted (vids in `temp.replace_removed`).
        generation: The store's new generation, None when nothing changed.
    """

    chunks: int = 0
    added: int = 0
    removed: int = 0
    generation: int | None = None


class _GroupSums:
    """Running per-size sums of a source's unit vectors: the group vectors `write_groups` stores, batch by batch.

    The sums are float64 and added chunk by chunk in order, as `group_vectors` adds them, so the stored means are the
    ones `replace_source` stores for the same records.
    """

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self.sums: dict[int, npt.NDArray[np.float64]] = {}
        self.counts: dict[int, int] = {}

    def add(self, batch: list[ChunkRecord]) -> None:
        sizes = np.asarray([chunk_size_of(record.metadata) for record in batch], dtype=np.int64)
        vectors = np.stack([record.vector for record in batch]).astype(np.float32, copy=False)
        for size in np.unique(sizes).tolist():
            rows = vectors[sizes == size]
            total = self.sums.setdefault(size, np.zeros((1, self.dimension), dtype=np.float64))
            np.add.at(total, np.zeros(len(rows), dtype=np.int64), rows)
            self.counts[size] = self.counts.get(size, 0) + len(rows)

    def rows(self, source: str) -> list[tuple[str, int, int, bytes]]:
        out = []
        for size in sorted(self.sums):
            total = self.sums[size][0]
            norm = float(np.linalg.norm(total))
            mean = (total / (norm if norm > 0 else 1.0)).astype(np.float32)
            out.append((source, size, self.counts[size], mean.astype("<f4").tobytes()))
        return out


def write_batches(
    db: sqlite3.Connection,
    source: str,
    fingerprint: str,
    batches: Iterable[Iterable[ChunkRecord]],
    *,
    dimension: int,
    generation: int,
    lexical: LexicalIndex | None = None,
) -> BatchedReplace:
    """In one transaction: replace every chunk of `source` by the records of `batches`, then record its fingerprint.

    Rows that are stored already with identical content keep their vid, as in `replace_source`.

    Args:
        db: The store's connection (no transaction open).
        source: The source (checked by the caller).
        fingerprint: Its content fingerprint (checked by the caller).
        batches: The records, a batch at a time; each batch is checked as `replace_source` checks its records.
        dimension: The store's vector dimension.
        generation: The store's current generation.
        lexical: The store's lexical index, updated batch by batch in the same transaction (None: dense only).

    Raises:
        ValueError, TypeError: A record is invalid, or an id appears twice; nothing is written.
    """
    for statement in _TEMP_TABLES:
        db.execute(statement)
    out = BatchedReplace()
    groups = _GroupSums(dimension)
    displaced: set[str] = set()
    with sql.transaction(db):
        for table in ("replace_wanted", "replace_added", "replace_removed"):
            db.execute(f"DELETE FROM temp.{table}")
        for records in batches:
            batch = check_records(records, dimension, source=source)
            if not batch:
                continue
            try:
                db.executemany("INSERT INTO temp.replace_wanted (chunk_id) VALUES (?)", [(r.id,) for r in batch])
            except sqlite3.IntegrityError:
                raise ValueError(f"a chunk id of {source!r} appears in two batches; nothing was written") from None
            change = sql.write_records(db, batch)
            if lexical is not None:
                lexical.apply(db, change.removed, change.added_ids, change.added_records)
            db.executemany(
                "INSERT OR IGNORE INTO temp.replace_removed (vid) VALUES (?)", [(v,) for v in change.removed]
            )
            db.executemany("INSERT INTO temp.replace_added (vid) VALUES (?)", [(v,) for v in change.added_ids])
            displaced |= change.displaced_sources
            groups.add(batch)
            out.chunks += len(batch)
        # The source's rows no batch asked for (8 bytes each here, a part at a time for the lexical index).
        stale = np.fromiter(
            (vid for (vid,) in db.execute(f"SELECT vid FROM chunks WHERE {_NOT_WANTED}", (source,))), np.int64
        )
        for start in range(0, len(stale), READ_BACK_ROWS):
            part = stale[start : start + READ_BACK_ROWS].tolist()
            sql.delete_vids(db, part)
            db.executemany("INSERT OR IGNORE INTO temp.replace_removed (vid) VALUES (?)", [(v,) for v in part])
            if lexical is not None:
                lexical.apply(db, part, [], [])
        db.execute("DELETE FROM groups WHERE source = ?", (source,))
        db.executemany(
            "INSERT INTO groups (source, chunk_tokens, chunks, vector) VALUES (?, ?, ?, ?)", groups.rows(source)
        )
        for other in sorted(displaced - {source}):
            sql.refresh_groups(db, other)
        db.execute(
            "INSERT OR REPLACE INTO sources (source, fingerprint, chunks, updated_at) VALUES (?, ?, ?, ?)",
            (source, fingerprint, out.chunks, datetime.now(UTC).isoformat()),
        )
        out.added = int(db.execute("SELECT COUNT(*) FROM temp.replace_added").fetchone()[0])
        out.removed = int(db.execute("SELECT COUNT(*) FROM temp.replace_removed").fetchone()[0])
        db.execute("DELETE FROM temp.replace_wanted")
        if out.added or out.removed:
            out.generation = generation + 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(out.generation),))
    return out


def apply_to_index(db: sqlite3.Connection, vectors: FaissVectors, dimension: int, *, hnsw: bool) -> None:
    """After `write_batches` committed: mirror its removals and additions in the FAISS index, a batch at a time.

    Removals go first: a vid that SQLite reused for a new row (the table's last row replaced) is removed, then added.
    """
    removed = [vid for (vid,) in db.execute("SELECT vid FROM temp.replace_removed")]
    if removed:
        vectors.queue(removed, [], [])
        vectors.sync()
        if hnsw:
            return  # removing from an HNSW graph rebuilds it from the committed database: the additions are in
    cursor = db.execute(
        "SELECT c.vid, c.vector FROM temp.replace_added AS a JOIN chunks AS c ON c.vid = a.vid ORDER BY a.vid"
    )
    while rows := cursor.fetchmany(READ_BACK_ROWS):
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4").reshape(len(rows), dimension)
        vectors.queue([], [int(row[0]) for row in rows], list(matrix.astype(np.float32)))
        vectors.sync()
    forget_changes(db)


def forget_changes(db: sqlite3.Connection) -> None:
    """Empty the record of `write_batches`' additions and removals (mirrored, or not needed: the index is released)."""
    db.execute("DELETE FROM temp.replace_added")
    db.execute("DELETE FROM temp.replace_removed")


def settle(
    db: sqlite3.Connection, vectors: FaissVectors, done: BatchedReplace, dimension: int, settings: FaissSettings
) -> None:
    """After `write_batches` committed a change: release a flat index, else mirror the change in it.

    Mirroring a big source would hold all its vectors, and the rest of the index, in memory. A released flat index
    holds none: commits write `vectors.faiss` from the database (`write_vectors_file`), a search loads it again. An
    HNSW graph cannot be written without building it, nor can a flat index whose file layout faiss changed.
    """
    if settings.index == "flat" and flat_layout_matches(dimension):
        if vectors.released:
            vectors.count_released(done.added, done.removed)
        else:
            vectors.release(int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]))
        forget_changes(db)
    else:
        mirror_in_index(db, vectors, dimension, hnsw=settings.index == "hnsw")


def mirror_in_index(db: sqlite3.Connection, vectors: FaissVectors, dimension: int, *, hnsw: bool) -> None:
    """`apply_to_index`; if interrupted, the index is left to be rebuilt from the database at its next use."""
    try:
        apply_to_index(db, vectors, dimension, hnsw=hnsw)
    except BaseException:
        # Committed, but mirrored in FAISS only in part (Ctrl-C): the index is rebuilt from the database.
        vectors.rebuild_later()
        raise


def write_file(
    db: sqlite3.Connection, db_path: Path, path: Path, vectors: FaissVectors, store_uuid: uuid.UUID, generation: int
) -> int:
    """Write `vectors.faiss` of `generation`: from the index, or from the database when the index is released.

    Returns:
        The generation the file reflects.
    """
    if vectors.released:
        return write_vectors_file(db, db_path, path, vectors.dimension, store_uuid)
    write_index_file(path, vectors.index, store_uuid, generation)
    return generation


def write_vectors_file(db: sqlite3.Connection, db_path: Path, path: Path, dimension: int, store_uuid: uuid.UUID) -> int:
    """Write `vectors.faiss` of a flat store from its database, a batch at a time, in one snapshot (`write_flat_file`).

    The file holds the vectors in vid order, as the index `FaissStore` rebuilds from the database: loading it gives
    the same index, and the same search results, as a rebuild.

    Returns:
        The generation the file reflects.

    Raises:
        IndexCorruptError: If the database is damaged or holds vectors of another size.
    """
    try:
        with sql.snapshot(db):
            generation = sql.read_meta(db, db_path).generation
            ntotal = int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
            write_flat_file(path, _stored_vectors(db, db_path, dimension), ntotal, dimension, store_uuid, generation)
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(sql.damaged_database_message(db_path, str(exc))) from None
    return generation


def _stored_vectors(
    db: sqlite3.Connection, db_path: Path, dimension: int
) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
    cursor = db.execute("SELECT vid, vector FROM chunks ORDER BY vid")
    while rows := cursor.fetchmany(READ_BACK_ROWS):
        blob = b"".join(row[1] for row in rows)
        if len(blob) != 4 * dimension * len(rows):
            raise IndexCorruptError(
                f"{db_path} holds vectors of the wrong size (expected {dimension} float32 values); "
                f"delete {db_path.parent} and run `tempscale-rag index` again"
            )
        vectors = np.frombuffer(blob, dtype="<f4").reshape(len(rows), dimension)
        yield vectors, np.fromiter((row[0] for row in rows), np.int64, len(rows))
