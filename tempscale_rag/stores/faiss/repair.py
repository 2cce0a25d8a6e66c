"""Salvaging a damaged FAISS index: rebuild `chunks.sqlite` from its readable rows and `vectors.faiss` from that.

`tempscale-rag repair` calls `repair_faiss_index`. Under the index's writer lock it:

1. checks `chunks.sqlite` page by page (`PRAGMA quick_check`). An intact database only gets `vectors.faiss` and its
   lexical tables (when it has a lexical channel) rebuilt, the latter from the stored chunk texts.
2. otherwise reads every row it still can through a read-only connection: the `sources` table up to the first bad
   page, and the chunks by ranges of their integer id, narrowing a range that fails down to single rows, so one bad
   page costs only the rows on it.
3. writes a new store in a temporary folder beside the index holding each file whose chunks all survived (with its
   fingerprint, so the next `index` run skips it; the lexical channel the manifest records is rebuilt with the
   chunks), then swaps it in. The damaged database is kept beside it as
   `chunks.sqlite.damaged-<UTC time>` for the user to inspect or delete.

Files that lost any chunk are dropped, fingerprint and all, so the next `tempscale-rag index` on the same folders
embeds exactly those files again. Nothing outside the index folder is read: the source files are not needed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tempscale_rag.stores.base import ChunkRecord
from tempscale_rag.stores.errors import IndexCorruptError
from tempscale_rag.stores.faiss.database import DB_NAME
from tempscale_rag.stores.faiss.locking import acquire_lock
from tempscale_rag.stores.faiss.store import FaissStore
from tempscale_rag.stores.faiss.vector_file import FAISS_NAME
from tempscale_rag.stores.manifest import FaissSettings, IndexManifest, fsync_dir

logger = logging.getLogger(__name__)

_RANGE = 512
_COLUMNS = "vid, chunk_id, source, position, token_length, bucket, text, metadata, vector"


@dataclass
class RepairReport:
    """What `repair_faiss_index` found and did.

    `files_before`/`chunks_before` are what the index held before the damage (the most any readable record of each
    source says), `chunks_lost` is `chunks_before - chunks_kept`: the unreadable chunks plus `chunks_dropped`, the
    readable chunks of files that lost others (a file is kept whole or not at all).
    """

    folder: str
    database_damaged: bool
    problem: str = ""
    damaged_copy: str | None = None
    files_kept: int = 0
    chunks_kept: int = 0
    rows_unreadable: int = 0
    files_lost: list[str] = field(default_factory=list)
    files_before: int = 0
    chunks_before: int = 0
    chunks_dropped: int = 0

    @property
    def chunks_lost(self) -> int:
        """Chunks the index held before the damage and holds no more (unreadable ones and those of lost files)."""
        return max(0, self.chunks_before - self.chunks_kept)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (`chunks_lost` included)."""
        return {**self.__dict__, "chunks_lost": self.chunks_lost}

    def describe(self) -> str:
        """A few lines for the terminal."""
        if not self.database_damaged:
            return f"{self.folder}: {DB_NAME} is intact ({self.chunks_kept} chunks); {FAISS_NAME} was rebuilt from it"
        unreadable = self.chunks_lost - self.chunks_dropped
        lines = [
            f"{self.folder}: {DB_NAME} was damaged ({self.problem}); rebuilt from its readable rows",
            f"  kept {self.files_kept} of {self.files_before} files "
            f"({self.chunks_kept} of {self.chunks_before} chunks)",
            f"  lost {len(self.files_lost)} files and {self.chunks_lost} chunks ({unreadable} unreadable, "
            f"{self.chunks_dropped} readable but dropped with their file)",
            f"  the damaged database is kept as {self.damaged_copy}",
        ]
        if self.files_lost:
            lines.append(
                f"  {len(self.files_lost)} files lost chunks and were removed from the index; run `tempscale-rag "
                "index` on your folders again to re-embed them:"
            )
            lines.extend(f"    {source}" for source in self.files_lost[:20])
            if len(self.files_lost) > 20:
                lines.append(f"    ... and {len(self.files_lost) - 20} more (see --json)")
        return "\n".join(lines)


def repair_faiss_index(folder: str | Path, manifest: IndexManifest) -> RepairReport:
    """Repair the FAISS index in `folder` in place (see the module docstring).

    Args:
        folder: The index folder.
        manifest: Its manifest (gives the dimension and the FAISS settings).

    Returns:
        The report.

    Raises:
        ValueError: If the index is not a FAISS index.
        StoreUnavailableError: If another process is writing the index.
    """
    folder = Path(folder)
    if not isinstance(manifest.backend, FaissSettings):
        raise ValueError(f"{folder} is a {manifest.store} index; only FAISS indexes can be repaired")
    db_path = folder / DB_NAME
    lock = acquire_lock(folder)
    try:
        problem = _database_problem(db_path) if db_path.exists() else f"{DB_NAME} is missing"
        if problem is None:
            (folder / FAISS_NAME).unlink(missing_ok=True)
            lock.close()  # the store takes the lock itself
            with FaissStore(
                folder, dimension=manifest.dimension, settings=manifest.backend, create=True, lexical=manifest.lexical
            ) as store:
                kept = store.count()
                if store.lexical is not None:
                    # quick_check sees pages, not meaning: the lexical tables are rebuilt from the chunk texts anyway.
                    store.add_lexical(store.lexical)
                store.commit()
            return RepairReport(folder=str(folder), database_damaged=False, chunks_kept=kept)
        report = RepairReport(folder=str(folder), database_damaged=True, problem=problem)
        sources, rows, unreadable = _salvage(db_path, manifest.dimension) if db_path.exists() else ({}, {}, 0)
        report.rows_unreadable = unreadable
        before = _chunks_before(db_path, rows) if db_path.exists() else {}
        report.files_before = len(set(before) | set(sources))
        report.chunks_before = max(sum(before.values()), _total_before(db_path) if db_path.exists() else 0)
        scratch = Path(tempfile.mkdtemp(dir=folder, prefix=".repair-"))
        try:
            with FaissStore(
                scratch, dimension=manifest.dimension, settings=manifest.backend, create=True, lexical=manifest.lexical
            ) as store:
                for source in sorted(set(sources) | set(rows)):
                    records = rows.get(source, [])
                    fingerprint, expected = sources.get(source, ("", -1))
                    if not fingerprint or len(records) != expected:
                        report.files_lost.append(source)
                        report.chunks_dropped += len(records)
                        continue
                    store.replace_source(source, fingerprint, records)
                    report.files_kept += 1
                    report.chunks_kept += len(records)
                store.commit()
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            if db_path.exists():
                damaged = folder / f"{DB_NAME}.damaged-{stamp}"
                db_path.replace(damaged)
                report.damaged_copy = str(damaged)
            for suffix in ("-wal", "-shm"):
                leftover = folder / f"{DB_NAME}{suffix}"
                if leftover.exists():
                    leftover.replace(folder / f"{DB_NAME}.damaged-{stamp}{suffix}")
            (scratch / DB_NAME).replace(db_path)
            (folder / FAISS_NAME).unlink(missing_ok=True)
            if (scratch / FAISS_NAME).exists():
                (scratch / FAISS_NAME).replace(folder / FAISS_NAME)
            fsync_dir(folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return report
    finally:
        lock.close()


def _database_problem(db_path: Path) -> str | None:
    """What `PRAGMA quick_check` reports for `db_path` (its first line), or None if the database is intact."""
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()
    problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
    return " ".join(problems[0].split()) if problems else None


def _salvage(db_path: Path, dimension: int) -> tuple[dict[str, tuple[str, int]], dict[str, list[ChunkRecord]], int]:
    """Every readable `sources` row and chunk of a damaged database.

    Returns:
        source -> (fingerprint, chunk count); source -> readable records; the number of unreadable chunk rows.
    """
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        sources: dict[str, tuple[str, int]] = {}
        with contextlib.suppress(sqlite3.DatabaseError):
            for source, fingerprint, chunks in db.execute("SELECT source, fingerprint, chunks FROM sources"):
                sources[str(source)] = (str(fingerprint), int(chunks))
        last = _last_vid(db)
        rows: dict[str, list[ChunkRecord]] = {}
        unreadable = 0
        stack = [(lo, min(lo + _RANGE - 1, last)) for lo in range(1, last + 1, _RANGE)][::-1]
        while stack:
            lo, hi = stack.pop()
            try:
                fetched = db.execute(f"SELECT {_COLUMNS} FROM chunks WHERE vid BETWEEN ? AND ?", (lo, hi)).fetchall()
            except sqlite3.DatabaseError:
                if lo == hi:
                    unreadable += 1
                else:
                    mid = (lo + hi) // 2
                    stack.extend([(mid + 1, hi), (lo, mid)])
                continue
            for row in fetched:
                record = _record(row, dimension)
                if record is None:
                    unreadable += 1
                else:
                    rows.setdefault(record.source, []).append(record)
        return sources, rows, unreadable
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(
            f"{db_path} is too damaged to read any chunks ({exc}); delete {db_path.parent} and run "
            "`tempscale-rag index` again"
        ) from None
    finally:
        db.close()


def _read_pairs(db: sqlite3.Connection, query: str) -> list[tuple[str, int]]:
    """The (source, count) rows of `query` up to the first unreadable page."""
    out: list[tuple[str, int]] = []
    with contextlib.suppress(sqlite3.DatabaseError, TypeError, ValueError):
        for source, count in db.execute(query):
            out.append((str(source), int(count)))
    return out


def _chunks_before(db_path: Path, rows: dict[str, list[ChunkRecord]]) -> dict[str, int]:
    """Each source's chunk count before the damage, from every record of it that is still readable.

    The `sources` table, the `groups` table and the `chunks_by_source` index each record the counts in other pages
    than the chunk rows, so one damaged page rarely hides a source from all of them; the readable rows are a floor.
    """
    counts = {source: len(records) for source, records in rows.items()}
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        for query in (
            "SELECT source, chunks FROM sources",
            "SELECT source, SUM(chunks) FROM groups GROUP BY source",
            "SELECT source, COUNT(*) FROM chunks INDEXED BY chunks_by_source GROUP BY source",
        ):
            for source, count in _read_pairs(db, query):
                counts[source] = max(counts.get(source, 0), count)
    finally:
        db.close()
    return counts


def _total_before(db_path: Path) -> int:
    """The number of chunks before the damage by the `chunk_id` index (0 if unreadable); counts unknown sources too."""
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        with contextlib.suppress(sqlite3.DatabaseError, TypeError, ValueError):
            row = db.execute("SELECT COUNT(chunk_id) FROM chunks INDEXED BY sqlite_autoindex_chunks_1").fetchone()
            return int(row[0])
        return 0
    finally:
        db.close()


def _last_vid(db: sqlite3.Connection) -> int:
    """The largest chunk id ever given (AUTOINCREMENT keeps it in sqlite_sequence), 0 if unknown."""
    for query in ("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'", "SELECT max(vid) FROM chunks"):
        with contextlib.suppress(sqlite3.DatabaseError, TypeError):
            row = db.execute(query).fetchone()
            if row and row[0] is not None:
                return int(row[0])
    return 0


def _record(row: tuple[Any, ...], dimension: int) -> ChunkRecord | None:
    """A record from a salvaged row, or None when a value is unreadable."""
    _vid, chunk_id, source, position, token_length, bucket, text, metadata, vector = row
    if not isinstance(vector, bytes) or len(vector) != 4 * dimension:
        return None
    try:
        meta = json.loads(metadata)
        return ChunkRecord(
            id=chunk_id,
            text=text,
            vector=np.frombuffer(vector, dtype="<f4").astype(np.float32),
            source=source,
            position=position,
            token_length=token_length,
            bucket=bucket,
            metadata=meta if isinstance(meta, dict) else {},
        )
    except (TypeError, ValueError):
        return None
