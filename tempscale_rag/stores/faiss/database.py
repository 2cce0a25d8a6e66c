"""`chunks.sqlite`, the source of truth of a FAISS index: schema, validation, creation and transactions.

Table `chunks` (one row per chunk, the vector as a little-endian float32 blob, an integer `vid` that is the FAISS id
and is never reused), table `sources` (source -> fingerprint, written in the same transaction as that source's
chunks), table `groups` (each (source, chunk size) group's mean unit chunk vector, which `mean` and `hybrid` rank by,
derived from `chunks` in the same transaction) and table `meta` (schema version, store uuid, dimension, FAISS settings,
and a `generation` counter bumped by every transaction that changes the chunks). WAL journal, `synchronous=NORMAL`.
The optional lexical (BM25) tables and their meta keys are described in `lexical.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from tempscale_rag.ranking.candidates import source_groups
from tempscale_rag.stores.base import ChunkRecord, check_dimension, chunk_size_of, metadata_json
from tempscale_rag.stores.errors import IndexCorruptError, IndexMismatchError
from tempscale_rag.stores.manifest import TEMP_SUFFIX, FaissSettings, current_umask, fsync_dir

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

DB_NAME = "chunks.sqlite"
SCHEMA_VERSION = 1
# Keeps `IN (...)` lists under SQLite's bound-parameter limit on every version (999 before 3.32).
SQL_BATCH = 900

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

# Stores written before the groups table existed get it on their next writable open.
GROUPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    source TEXT NOT NULL,
    chunk_tokens INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (source, chunk_tokens)
) WITHOUT ROWID;
"""
# A chunk's size, read in SQL so that opening a large index does not parse every metadata blob in Python.
CHUNK_SIZE_SQL = "COALESCE(CAST(json_extract(metadata, '$.chunk_tokens') AS INTEGER), 0)"

ROW_COLUMNS = "chunk_id, source, position, token_length, bucket, text, metadata, vector"
HIT_COLUMNS = "vid, chunk_id, text, source, position, token_length, bucket, metadata"


@dataclass
class Change:
    """What one transaction did to the chunks, to mirror in the FAISS index once it has committed."""

    removed: list[int] = field(default_factory=list)
    added_ids: list[int] = field(default_factory=list)
    added_vectors: list[npt.NDArray[np.float32]] = field(default_factory=list)
    # The inserted records, parallel to `added_ids` (the lexical index analyses their texts in the same transaction).
    added_records: list[ChunkRecord] = field(default_factory=list)
    generation: int | None = None
    # Sources that lost a chunk to a record of another source with the same id: their groups need refreshing.
    displaced_sources: set[str] = field(default_factory=set)


class StoreMeta(NamedTuple):
    """The `meta` table of a store."""

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


def reports_damage(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn an `sqlite3.DatabaseError` raised by a store method into an `IndexCorruptError` naming the file.

    Damage the open-time check did not see (read-only opens skip it) surfaces on the first query that touches a bad
    page; the caller gets the same actionable error instead of a raw traceback. The store must have a `db_path`.
    """

    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            db_path = getattr(args[0], "db_path", None)
            # Damage is SQLITE_CORRUPT/NOTADB (plain DatabaseError); a locked or read-only file is another matter.
            if not isinstance(db_path, Path) or type(exc) is not sqlite3.DatabaseError:
                raise
            raise IndexCorruptError(damaged_database_message(db_path, str(exc))) from None

    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = method.__qualname__
    wrapper.__doc__ = method.__doc__
    return wrapper


def quick_check(db: sqlite3.Connection, db_path: Path) -> None:
    """Raise `IndexCorruptError` naming `db_path` unless `PRAGMA quick_check` finds every page intact."""
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(damaged_database_message(db_path, str(exc))) from None
    problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
    if problems:
        raise IndexCorruptError(damaged_database_message(db_path, problems[0].splitlines()[-1]))


def read_meta(db: sqlite3.Connection, db_path: Path) -> StoreMeta:
    """Read and check the `meta` table.

    Raises:
        IndexCorruptError: If the file is not a readable tempscale-rag store.
        IndexMismatchError: If another schema version wrote it.
    """
    folder = db_path.parent
    advice = f"delete {folder} and run `tempscale-rag index` again"
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "chunks", "sources"} <= tables:
            raise IndexCorruptError(f"{db_path} is an SQLite database but not a tempscale-rag store; {advice}")
        values = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(
            f"{db_path} is corrupt or not an SQLite database ({exc}); run `tempscale-rag repair --out "
            f"{folder}` to salvage what is readable, or {advice}"
        ) from None
    try:
        version = int(values["schema_version"])
        if version != SCHEMA_VERSION:
            raise IndexMismatchError(
                f"{db_path} has schema version {version}; this tempscale-rag reads version {SCHEMA_VERSION}: "
                "use the tempscale-rag version that wrote it, or re-index"
            )
        return StoreMeta(
            store_uuid=uuid.UUID(values["store_uuid"]),
            dimension=check_dimension(int(values["dimension"])),
            settings=FaissSettings.model_validate_json(values["settings"]),
            generation=int(values["generation"]),
        )
    except (KeyError, ValueError, ValidationError) as exc:
        if isinstance(exc, IndexMismatchError):
            raise
        raise IndexCorruptError(f"{db_path} has invalid store metadata ({exc!r}); {advice}") from None


def validate_existing(
    db_path: Path, dimension: int | None, settings: FaissSettings | None, *, integrity: bool = False
) -> StoreMeta:
    """Read the store's meta through a read-only connection, so a bad file is reported and left untouched."""
    folder = db_path.parent
    try:
        db = read_only_connection(db_path)
    except sqlite3.Error as exc:
        raise IndexCorruptError(f"cannot open {db_path}: {exc}") from None
    try:
        meta = read_meta(db, db_path)
        if integrity:
            quick_check(db, db_path)
    finally:
        db.close()
    if dimension is not None and check_dimension(dimension) != meta.dimension:
        raise IndexMismatchError(
            f"FAISS store at {folder} holds {meta.dimension}-dimensional vectors; you asked for {dimension}: "
            "use --out for a new index or the model that built this one"
        )
    if settings is not None and settings.index != meta.settings.index:
        raise IndexMismatchError(
            f"FAISS store at {folder} is a {meta.settings.index!r} index; you asked for {settings.index!r}: "
            f"use --out for a new index or --faiss-index {meta.settings.index}"
        )
    return meta


def create_database(db_path: Path, dimension: int, settings: FaissSettings) -> None:
    """Create an empty store: build the database under a temp name, fsync it, then rename it into place."""
    folder = db_path.parent
    meta = {
        "schema_version": str(SCHEMA_VERSION),
        "store_uuid": str(uuid.uuid4()),
        "dimension": str(dimension),
        "settings": settings.model_dump_json(),
        "generation": "0",
        "created_at": datetime.now(UTC).isoformat(),
    }
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{db_path.name}.", suffix=TEMP_SUFFIX)
    # mkstemp makes the file 0600 whatever the umask; the database gets the mode any new file would get.
    with contextlib.suppress(OSError, AttributeError):
        os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        db = sqlite3.connect(temp_name, isolation_level=None)
        try:
            db.executescript(f"BEGIN; {_SCHEMA} {GROUPS_SCHEMA} COMMIT;")
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
        finally:
            db.close()
        fd = os.open(temp_name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_name, db_path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_dir(folder)


def read_only_connection(db_path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection that cannot write `db_path` (nor create it)."""
    return sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=timeout)


def connect(db_path: Path, *, read_only: bool) -> sqlite3.Connection:
    """The store's working connection (autocommit; transactions are explicit)."""
    if read_only:
        return read_only_connection(db_path, timeout=30.0)
    db = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
    # WAL: readers (a search running while indexing) never block the writer, and a commit is one append.
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any exception)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            # A ROLLBACK that fails (Ctrl-C landing while a statement of this transaction is still stepping gave
            # "database table is locked") must not replace the error being handled: the user pressed Ctrl-C, the
            # index is not damaged. SQLite discards an uncommitted transaction when its connection closes anyway.
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def snapshot(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Several reads that see one consistent state of the database."""
    db.execute("BEGIN")
    try:
        yield db
    finally:
        db.execute("COMMIT")


def write_records(db: sqlite3.Connection, batch: list[ChunkRecord]) -> Change:
    """Inside a transaction: insert each record unless an identical one is stored (it keeps its FAISS id)."""
    change = Change()
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
        old = db.execute(f"SELECT vid, {ROW_COLUMNS} FROM chunks WHERE chunk_id = ?", (record.id,)).fetchone()
        if old is not None:
            if tuple(old[1:]) == row:
                continue
            db.execute("DELETE FROM chunks WHERE vid = ?", (old[0],))
            change.removed.append(int(old[0]))
            if old[2] != record.source:
                change.displaced_sources.add(old[2])
        cursor = db.execute(f"INSERT INTO chunks ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        if cursor.lastrowid is None:
            raise RuntimeError(f"SQLite returned no row id for chunk {record.id}")
        change.added_ids.append(cursor.lastrowid)
        change.added_vectors.append(record.vector)
        change.added_records.append(record)
    return change


def bump_generation(db: sqlite3.Connection, change: Change, current: int) -> None:
    """Inside the transaction: advance the generation if the chunks change."""
    if change.removed or change.added_ids:
        change.generation = current + 1
        db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(change.generation),))


def delete_vids(db: sqlite3.Connection, vids: list[int]) -> None:
    """Inside a transaction: delete the given chunks."""
    for start in range(0, len(vids), SQL_BATCH):
        part = vids[start : start + SQL_BATCH]
        db.execute(f"DELETE FROM chunks WHERE vid IN ({','.join('?' * len(part))})", part)


def write_groups(db: sqlite3.Connection, source: str, batch: list[ChunkRecord]) -> None:
    """Inside a transaction: store the group vectors of `source`, whose chunks are exactly `batch`."""
    db.execute("DELETE FROM groups WHERE source = ?", (source,))
    if batch:
        sizes = [chunk_size_of(record.metadata) for record in batch]
        _insert_groups(db, source, sizes, np.stack([record.vector for record in batch]))


def refresh_groups(db: sqlite3.Connection, source: str) -> None:
    """Inside a transaction: recompute the group vectors of `source` from its stored chunks."""
    rows = db.execute(f"SELECT {CHUNK_SIZE_SQL}, vector FROM chunks WHERE source = ?", (source,)).fetchall()
    db.execute("DELETE FROM groups WHERE source = ?", (source,))
    if rows:
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4").reshape(len(rows), -1)
        _insert_groups(db, source, [int(row[0]) for row in rows], vectors)


def _insert_groups(db: sqlite3.Connection, source: str, sizes: list[int], vectors: npt.NDArray[np.float32]) -> None:
    db.executemany(
        "INSERT INTO groups (source, chunk_tokens, chunks, vector) VALUES (?, ?, ?, ?)",
        [
            (source, int(size), int(count), mean.astype("<f4").tobytes())
            for size, count, mean in source_groups(sizes, vectors)
        ],
    )


def fetch_hit_rows(db: sqlite3.Connection, vids: list[int]) -> dict[int, tuple[Any, ...]]:
    """The `HIT_COLUMNS` of the given chunks that exist, by vid."""
    rows: dict[int, tuple[Any, ...]] = {}
    for start in range(0, len(vids), SQL_BATCH):
        part = vids[start : start + SQL_BATCH]
        marks = ",".join("?" * len(part))
        for row in db.execute(f"SELECT {HIT_COLUMNS} FROM chunks WHERE vid IN ({marks})", part):
            rows[row[0]] = row
    return rows


def read_all_vectors(
    db: sqlite3.Connection,
    db_path: Path,
    dimension: int,
    add: Callable[[npt.NDArray[np.float32], npt.NDArray[np.int64]], None],
) -> int:
    """Pass every stored vector with its vid to `add`, in batches, from one snapshot; return its generation.

    Raises:
        IndexCorruptError: If the database is damaged or holds vectors of another size.
    """
    try:
        with snapshot(db):
            generation = read_meta(db, db_path).generation
            cursor = db.execute("SELECT vid, vector FROM chunks ORDER BY vid")
            while rows := cursor.fetchmany(16384):
                blob = b"".join(row[1] for row in rows)
                if len(blob) != 4 * dimension * len(rows):
                    raise IndexCorruptError(
                        f"{db_path} holds vectors of the wrong size (expected {dimension} float32 values); "
                        f"delete {db_path.parent} and run `tempscale-rag index` again"
                    )
                vectors = np.frombuffer(blob, dtype="<f4").reshape(len(rows), dimension).astype(np.float32)
                add(vectors, np.fromiter((row[0] for row in rows), np.int64, len(rows)))
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(damaged_database_message(db_path, str(exc))) from None
    return generation


def ensure_groups_table(db: sqlite3.Connection, db_path: Path, *, read_only: bool) -> bool:
    """Whether the `groups` table exists; a writable open of an older store creates and fills it."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'groups'").fetchone():
        return True
    if read_only:
        return False
    with transaction(db):
        db.execute(GROUPS_SCHEMA)
        for (source,) in db.execute("SELECT DISTINCT source FROM chunks").fetchall():
            refresh_groups(db, source)
    logger.info("added document group vectors to %s", db_path)
    return True
