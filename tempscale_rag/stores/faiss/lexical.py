"""The FAISS store's lexical (BM25) channel: an inverted index in `chunks.sqlite`, written in the chunks' transactions.

The chunks of one size (`LexicalSettings.chunk_size`) are analysed (`LexicalAnalyzer`) into term ids (`term_id`, CRC-32)
and each (chunk, term id) gets `SparseEncoder`'s document value `tf / (tf + k1 (1 - b + b len / pivot))` (terms that
share an id add their values, as `SparseEncoder` does), so a chunk's score for a query is exactly `PivotBM25`:
`sum count_q(t) idf(t) value(t, chunk)` with `idf = ln(1 + (N - n + 0.5) / (n + 0.5))`.

Tables (all written inside the transaction that writes the chunk rows, so a `kill -9` leaves both or neither):

- `lexical_chunks (vid PK, slot UNIQUE, length, terms)`: one row per lexical chunk (the forward index): its FAISS id,
  a dense *slot* number, its length in analysed terms and its term ids and values (`<u4` ids then `<f4` values).
  Deleting a chunk reads its terms here instead of re-analysing its text; a rebuild reads nothing else.
- `lexical_postings (term_id, block, offsets, vals) WITHOUT ROWID, PK (term_id, block)`: the inverted index, one row
  per term and block of 1024 slots holding the slot offsets (`<u2`) and values (`<f4`) of the chunks of that block
  that contain the term. A query reads a few rows per term (N / 1024 at most) as blobs instead of one Python tuple
  per posting: a plain `(term_id, vid, value)` table spent ~80 ms fetching the ~160,000 postings of a 15-term query at
  100,000 chunks, the blocks ~3 ms. Blocks are over slots, not FAISS ids, because lexical chunks are a small share
  of all ids (one size of several): blocks over ids would be mostly empty and the score array as long as every id.
  Additions append to a block (`ON CONFLICT ... DO UPDATE SET offsets = offsets || ...`), deletions rewrite it; a
  block holds at most 1024 postings of a term (6 KB), which bounds the cost of a write.
- `lexical_blocks (block PK, vids)`: the FAISS id of each slot of a block (`<i8`, 0 when free): maps the scored slots
  back to chunk keys with one row per 1024 chunks.
- `lexical_free (slot PK)`: slots freed by deletions, reused first, so the slot range stays about N with re-indexing.
- `lexical_terms (term_id PK, df)`: the number of lexical chunks holding each term id (BM25's n), kept incrementally.
- `meta` keys `lexical` (the `LexicalSettings` the tables were built with), `lexical_chunks` (N) and `lexical_slots`
  (the next unused slot).
- With `LexicalSettings.document_pivot`, the whole-document tables of `lexical_documents.py`, written by the same
  calls.

Values are stored rather than term counts because terms that share an id add their values (a sum of counts would
give another number) and because they are what Qdrant's sparse vectors hold, so both backends score alike.

A query reads N and the query terms' df (one row each), their postings, and the block maps of the chunks it returns;
scores are summed with `numpy.bincount` over the slot range: nothing is recomputed over the corpus. Measured with
`benchmarks/faiss_lexical.py` at 100,000 chunks of QMSum text on a loaded 2-core CPU: a 15-term query ~10 ms for the
best 100, ~14 ms for every match (86,000 chunks); `add_lexical` ~0.6 ms and a `replace_source` ~2 ms per lexical
chunk (one upsert per (term, block); blocks of 64 to 1024 slots wrote alike).
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from tempscale_rag.config import LexicalSettings
from tempscale_rag.ranking.lexical import ANALYZER_NAME, LexicalAnalyzer, term_id
from tempscale_rag.stores.base import ChunkRecord, chunk_size_of
from tempscale_rag.stores.errors import IndexCorruptError, IndexMismatchError
from tempscale_rag.stores.faiss import lexical_documents
from tempscale_rag.stores.faiss.database import CHUNK_SIZE_SQL, SQL_BATCH, snapshot, transaction
from tempscale_rag.stores.faiss.lexical_documents import DocumentTerms

logger = logging.getLogger(__name__)

BLOCK = 1024
"""Slots per postings block (offsets are stored as uint16, so at most 65,536)."""

TABLES = (
    "lexical_chunks",
    "lexical_postings",
    "lexical_blocks",
    "lexical_free",
    "lexical_terms",
    *lexical_documents.TABLES,
)
_META_KEYS = ("lexical", "lexical_chunks", "lexical_slots", lexical_documents.META_KEY)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lexical_chunks (
    vid INTEGER PRIMARY KEY,
    slot INTEGER NOT NULL UNIQUE,
    length INTEGER NOT NULL,
    terms BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS lexical_postings (
    term_id INTEGER NOT NULL,
    block INTEGER NOT NULL,
    offsets BLOB NOT NULL,
    vals BLOB NOT NULL,
    PRIMARY KEY (term_id, block)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lexical_blocks (block INTEGER PRIMARY KEY, vids BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS lexical_free (slot INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS lexical_terms (term_id INTEGER PRIMARY KEY, df INTEGER NOT NULL);
"""

_APPEND_POSTINGS = (
    "INSERT INTO lexical_postings (term_id, block, offsets, vals) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (term_id, block) DO UPDATE SET offsets = CAST(offsets || excluded.offsets AS BLOB), "
    "vals = CAST(vals || excluded.vals AS BLOB)"
)
# `||` makes text (its length() stops at a NUL byte); the cast gives the same bytes back as a blob.
_ADD_DF = (
    "INSERT INTO lexical_terms (term_id, df) VALUES (?, ?) ON CONFLICT (term_id) DO UPDATE SET df = df + excluded.df"
)

Keys = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]


def stored_settings(db: sqlite3.Connection, db_path: Path) -> LexicalSettings | None:
    """The settings the lexical tables of the database were built with; None when it has no lexical channel.

    Raises:
        IndexCorruptError: If the recorded settings are unreadable.
    """
    row = db.execute("SELECT value FROM meta WHERE key = 'lexical'").fetchone()
    if row is None:
        return None
    try:
        return LexicalSettings.model_validate_json(row[0])
    except ValidationError as exc:
        raise IndexCorruptError(
            f"{db_path} records unreadable lexical settings ({exc.errors()[0]['msg']}); run `tempscale-rag repair "
            f"--out {db_path.parent}` to rebuild the lexical index"
        ) from None


def drop_tables(db: sqlite3.Connection) -> None:
    """Inside a transaction: remove the lexical channel (tables and meta keys)."""
    for table in TABLES:
        db.execute(f"DROP TABLE IF EXISTS {table}")
    db.execute(f"DELETE FROM meta WHERE key IN ({','.join('?' * len(_META_KEYS))})", _META_KEYS)


class LexicalIndex:
    """The lexical tables of one store, for one `LexicalSettings`; every method runs on the caller's connection.

    Args:
        settings: What is indexed and how it is scored.
    """

    def __init__(self, settings: LexicalSettings) -> None:
        if not isinstance(settings, LexicalSettings):
            raise TypeError(f"lexical settings must be LexicalSettings, got {type(settings).__name__}")
        self.settings = settings
        self._analyzer = LexicalAnalyzer()
        # Whole-document BM25 (`lexical_documents.py`), absent from channels built before it.
        self.documents = DocumentTerms(settings) if settings.document_pivot is not None else None

    def check_analyzer(self, folder: Path) -> None:
        """Raise `IndexMismatchError` unless the channel's terms come from this version's analyser."""
        if self.settings.analyzer != ANALYZER_NAME:
            raise IndexMismatchError(
                f"the lexical index in {folder} was built with analyser {self.settings.analyzer!r}; this tempscale-rag "
                f"analyses queries with {ANALYZER_NAME!r}: rebuild the lexical index (`add_lexical`) or use the "
                "version that built it"
            )

    # --- writing (inside the caller's transaction) ----------------------------------------------------------------

    def rebuild(self, db: sqlite3.Connection) -> int:
        """Inside a transaction: (re)create the tables from the stored texts of the chunks of `chunk_size`.

        Returns:
            The number of lexical chunks.

        Raises:
            ValueError: If the settings name an analyser this version does not have.
        """
        if self.settings.analyzer != ANALYZER_NAME:
            raise ValueError(
                f"lexical analyser {self.settings.analyzer!r} is not this tempscale-rag's ({ANALYZER_NAME!r}): build "
                "the lexical channel with the current analyser"
            )
        drop_tables(db)
        _create_tables(db)
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("lexical", self.settings.model_dump_json()),
                ("lexical_chunks", "0"),
                ("lexical_slots", "0"),
                (lexical_documents.META_KEY, "0"),
            ],
        )
        vids = [
            int(vid)
            for (vid,) in db.execute(
                f"SELECT vid FROM chunks WHERE {CHUNK_SIZE_SQL} = ? ORDER BY vid", (self.settings.chunk_size,)
            )
        ]
        for start in range(0, len(vids), SQL_BATCH):
            part = vids[start : start + SQL_BATCH]
            marks = ",".join("?" * len(part))
            rows = {
                vid: (text, source)
                for vid, text, source in db.execute(
                    f"SELECT vid, text, source FROM chunks WHERE vid IN ({marks})", part
                )
            }
            self._add(db, part, [str(rows[vid][0]) for vid in part], [str(rows[vid][1]) for vid in part])
        return len(vids)

    def apply(
        self, db: sqlite3.Connection, removed: Sequence[int], added_ids: Sequence[int], added: Sequence[ChunkRecord]
    ) -> None:
        """Inside the chunks' transaction: drop the removed chunks, index the added ones of `chunk_size`.

        Args:
            db: The connection, inside the transaction that wrote the chunk rows.
            removed: FAISS ids of deleted chunks (any size: those without a lexical row are skipped).
            added_ids: FAISS ids of inserted chunks.
            added: Their records, parallel to `added_ids`.
        """
        if removed:
            self._remove(db, list(removed))
        size = self.settings.chunk_size
        picked = [(vid, r) for vid, r in zip(added_ids, added, strict=True) if chunk_size_of(r.metadata) == size]
        if picked:
            self._add(db, [vid for vid, _ in picked], [r.text for _, r in picked], [r.source for _, r in picked])

    def analyse(self, text: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int, npt.NDArray[np.int64]]:
        """A chunk's term ids (sorted), `SparseEncoder` values, length in analysed terms and the ids' term counts."""
        terms = self._analyzer.terms(text)
        s = self.settings
        norm = s.k1 * (1.0 - s.b + s.b * len(terms) / s.pivot)
        counts = Counter(terms)
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        ids = np.fromiter(map(term_id, counts), dtype=np.int64, count=len(counts))
        # Distinct terms with one CRC-32 share an id: their values add up, as in `SparseEncoder`.
        unique, inverse = np.unique(ids, return_inverse=True)
        values = np.bincount(inverse, weights=tf / (tf + norm), minlength=len(unique)).astype(np.float64)
        summed = np.bincount(inverse, weights=tf, minlength=len(unique)).astype(np.int64)
        return unique, values, len(terms), summed

    def _add(self, db: sqlite3.Connection, vids: list[int], texts: list[str], sources: list[str]) -> None:
        slots = _allocate_slots(db, len(vids))
        rows = []
        all_ids, all_slots, all_vals = [], [], []
        chunk_counts = []
        for vid, slot, text in zip(vids, slots, texts, strict=True):
            ids, vals, length, counts = self.analyse(text)
            chunk_counts.append((ids, counts))
            rows.append((vid, slot, length, ids.astype("<u4").tobytes() + vals.astype("<f4").tobytes()))
            all_ids.append(ids)
            all_slots.append(np.full(len(ids), slot, dtype=np.int64))
            all_vals.append(vals)
        db.executemany("INSERT INTO lexical_chunks (vid, slot, length, terms) VALUES (?, ?, ?, ?)", rows)
        _set_block_vids(db, np.asarray(slots, dtype=np.int64), np.asarray(vids, dtype=np.int64))
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
        slot_of = np.concatenate(all_slots) if all_slots else np.zeros(0, np.int64)
        vals = np.concatenate(all_vals) if all_vals else np.zeros(0, np.float64)
        order = np.lexsort((slot_of, slot_of // BLOCK, ids))
        ids, slot_of, vals = ids[order], slot_of[order], vals[order]
        offsets = (slot_of % BLOCK).astype("<u2").tobytes()
        values = vals.astype("<f4").tobytes()
        db.executemany(
            _APPEND_POSTINGS,
            (
                (tid, block, offsets[2 * lo : 2 * hi], values[4 * lo : 4 * hi])
                for tid, block, lo, hi in _groups(ids, slot_of // BLOCK)
            ),
        )
        terms, df = np.unique(ids, return_counts=True)
        db.executemany(_ADD_DF, zip(terms.tolist(), df.tolist(), strict=True))
        _add_meta(db, "lexical_chunks", len(vids))
        if self.documents is not None:
            self.documents.add(db, vids, sources, chunk_counts)

    def _remove(self, db: sqlite3.Connection, vids: list[int]) -> None:
        if self.documents is not None:
            self.documents.remove(db, vids)
        found: list[tuple[int, int, bytes]] = []
        for start in range(0, len(vids), SQL_BATCH):
            part = vids[start : start + SQL_BATCH]
            marks = ",".join("?" * len(part))
            found.extend(db.execute(f"SELECT vid, slot, terms FROM lexical_chunks WHERE vid IN ({marks})", part))
        if not found:
            return
        gone_vids = [int(vid) for vid, _, _ in found]
        slots = np.asarray([int(slot) for _, slot, _ in found], dtype=np.int64)
        for start in range(0, len(gone_vids), SQL_BATCH):
            part = gone_vids[start : start + SQL_BATCH]
            db.execute(f"DELETE FROM lexical_chunks WHERE vid IN ({','.join('?' * len(part))})", part)
        db.executemany("INSERT INTO lexical_free (slot) VALUES (?)", ((s,) for s in slots.tolist()))
        _set_block_vids(db, slots, np.zeros(len(slots), dtype=np.int64))
        ids_list, slot_list = [], []
        for (_, _, blob), s in zip(found, slots.tolist(), strict=True):
            ids = np.frombuffer(blob, dtype="<u4", count=len(blob) // 8).astype(np.int64)
            ids_list.append(ids)
            slot_list.append(np.full(len(ids), s, dtype=np.int64))
        ids = np.concatenate(ids_list)
        slot_of = np.concatenate(slot_list)
        order = np.lexsort((slot_of // BLOCK, ids))
        ids, slot_of = ids[order], slot_of[order]
        for tid, block, lo, hi in _groups(ids, slot_of // BLOCK):
            row = db.execute(
                "SELECT offsets, vals FROM lexical_postings WHERE term_id = ? AND block = ?", (tid, block)
            ).fetchone()
            if row is None:
                raise IndexCorruptError(
                    f"the lexical postings of term {tid} lack chunks that hold it; run `tempscale-rag repair`"
                )
            offsets = np.frombuffer(row[0], dtype="<u2")
            keep = ~np.isin(offsets, slot_of[lo:hi] - block * BLOCK)
            if keep.any():
                db.execute(
                    "UPDATE lexical_postings SET offsets = ?, vals = ? WHERE term_id = ? AND block = ?",
                    (offsets[keep].tobytes(), np.frombuffer(row[1], dtype="<f4")[keep].tobytes(), tid, block),
                )
            else:
                db.execute("DELETE FROM lexical_postings WHERE term_id = ? AND block = ?", (tid, block))
        terms, df = np.unique(ids, return_counts=True)
        pairs = list(zip(df.tolist(), terms.tolist(), strict=True))
        db.executemany("UPDATE lexical_terms SET df = df - ? WHERE term_id = ?", pairs)
        db.executemany("DELETE FROM lexical_terms WHERE term_id = ? AND df <= 0", ((t,) for _, t in pairs))
        _add_meta(db, "lexical_chunks", -len(found))

    # --- reading --------------------------------------------------------------------------------------------------

    def search(
        self, db: sqlite3.Connection, query: tuple[Sequence[int], Sequence[float]], n: int | None, folder: Path
    ) -> tuple[Keys, Scores]:
        """The best `n` lexical chunks for a sparse query (term ids, counts); call inside one read snapshot.

        Returns:
            (FAISS ids, float32 scores), best first, ties by id; empty when no chunk holds a query term.
        """
        if n is not None and (isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0):
            raise ValueError(f"n must be None or an integer >= 0, got {n!r}")
        self.check_analyzer(folder)
        ids, counts = _check_query(query)
        ids = ids[counts > 0]
        counts = counts[counts > 0]
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        if len(ids) == 0 or n == 0:
            return empty
        total = _meta_int(db, "lexical_chunks")
        marks = ",".join("?" * len(ids))
        df_of = dict(db.execute(f"SELECT term_id, df FROM lexical_terms WHERE term_id IN ({marks})", ids.tolist()))
        if total <= 0 or not df_of:
            return empty
        weight_of = {
            t: c * math.log1p((total - df_of[t] + 0.5) / (df_of[t] + 0.5))
            for t, c in zip(ids.tolist(), counts.tolist(), strict=True)
            if t in df_of
        }
        marks = ",".join("?" * len(weight_of))
        rows = db.execute(
            f"SELECT term_id, block, offsets, vals FROM lexical_postings WHERE term_id IN ({marks})", list(weight_of)
        ).fetchall()
        if not rows:
            return empty
        lengths = np.fromiter((len(r[2]) // 2 for r in rows), dtype=np.int64, count=len(rows))
        blocks = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        weights = np.fromiter((weight_of[r[0]] for r in rows), dtype=np.float64, count=len(rows))
        slots = np.repeat(blocks * BLOCK, lengths) + np.frombuffer(b"".join(r[2] for r in rows), dtype="<u2")
        contributions = np.repeat(weights, lengths) * np.frombuffer(b"".join(r[3] for r in rows), dtype="<f4")
        base = int(slots.min())
        summed = np.bincount(slots - base, weights=contributions)
        # Every posting adds a positive amount (idf > 0 as n <= N, values > 0 as tf >= 1): matched means above 0.
        matched = np.flatnonzero(summed)
        scores = summed[matched].astype(np.float32)
        matched += base
        if n is not None and n < len(matched):
            # Keep every chunk tied with the n-th score, so that ties are broken by id below, not by partition order.
            kth = np.partition(scores, len(scores) - n)[len(scores) - n]
            keep = scores >= kth
            matched, scores = matched[keep], scores[keep]
        vids, scores = _best_first(scores, _vids_of_slots(db, matched))
        return (vids, scores) if n is None else (vids[:n], scores[:n])

    def search_documents(
        self, db: sqlite3.Connection, query: tuple[Sequence[int], Sequence[float]], n: int | None, folder: Path
    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]:
        """The best `n` documents by whole-document BM25 for a sparse query; call inside one read snapshot.

        Returns:
            (sources, float32 scores), best first, ties by source; empty when no document holds a query term or the
            channel has no whole-document list.
        """
        if n is not None and (isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0):
            raise ValueError(f"n must be None or an integer >= 0, got {n!r}")
        self.check_analyzer(folder)
        ids, counts = _check_query(query)
        if self.documents is None:
            return np.empty(0, dtype=object), np.zeros(0, np.float32)
        return self.documents.search(db, ids[counts > 0], counts[counts > 0], n)

    def count(self, db: sqlite3.Connection) -> int:
        """N, the number of lexical chunks."""
        return _meta_int(db, "lexical_chunks")

    def describe(self, db: sqlite3.Connection) -> dict[str, Any]:
        """The channel's settings, chunk count and number of distinct term ids."""
        return {
            **self.settings.model_dump(),
            "chunks": self.count(db),
            "terms": int(db.execute("SELECT COUNT(*) FROM lexical_terms").fetchone()[0]),
            **(self.documents.describe(db) if self.documents is not None else {}),
        }

    def check(self, db: sqlite3.Connection, db_path: Path) -> None:
        """Raise `IndexCorruptError`, naming the repair, if the lexical tables are out of step with the chunks."""
        problem = self.problem(db)
        if problem is not None:
            raise IndexCorruptError(
                f"the lexical index in {db_path} is out of step with its chunks ({problem}); run `tempscale-rag "
                f"repair --out {db_path.parent}` to rebuild it from the stored chunk texts"
            )

    def problem(self, db: sqlite3.Connection) -> str | None:
        """What is out of step between the lexical tables and the chunk rows, or None (scans every lexical row)."""
        size = self.settings.chunk_size
        count = _meta_int(db, "lexical_chunks")
        rows = int(db.execute("SELECT COUNT(*) FROM lexical_chunks").fetchone()[0])
        if rows != count:
            return f"it records {count} lexical chunks but holds {rows}"
        missing = db.execute(
            f"SELECT COUNT(*) FROM chunks WHERE {CHUNK_SIZE_SQL} = ? AND vid NOT IN (SELECT vid FROM lexical_chunks)",
            (size,),
        ).fetchone()[0]
        if missing:
            return f"{missing} chunks of size {size} are missing from it"
        extra = db.execute(
            f"SELECT COUNT(*) FROM lexical_chunks l WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.vid = l.vid "
            f"AND {CHUNK_SIZE_SQL} = ?)",
            (size,),
        ).fetchone()[0]
        if extra:
            return f"it holds {extra} chunks that are not stored chunks of size {size}"
        forward = int(db.execute("SELECT COALESCE(SUM(length(terms)), 0) FROM lexical_chunks").fetchone()[0]) // 8
        postings = int(db.execute("SELECT COALESCE(SUM(length(offsets)), 0) FROM lexical_postings").fetchone()[0]) // 2
        if forward != postings:
            return f"its chunks hold {forward} (chunk, term) pairs but its postings {postings}"
        wrong_df = db.execute(
            "SELECT COUNT(*) FROM (SELECT term_id, SUM(length(offsets)) / 2 AS n FROM lexical_postings GROUP BY "
            "term_id) p LEFT JOIN lexical_terms t USING (term_id) WHERE t.df IS NOT p.n"
        ).fetchone()[0]
        terms = int(db.execute("SELECT COUNT(*) FROM lexical_terms").fetchone()[0])
        distinct = int(db.execute("SELECT COUNT(DISTINCT term_id) FROM lexical_postings").fetchone()[0])
        if wrong_df or terms != distinct:
            return "its document frequencies differ from its postings"
        mapped = _all_block_vids(db)
        slots, vids = _pairs(db)
        if len(mapped) < (int(slots.max()) + 1 if len(slots) else 0) or not np.array_equal(mapped[slots], vids):
            return "its slot map differs from its chunks"
        if int(np.count_nonzero(mapped)) != len(slots):
            return "its slot map lists chunks it does not hold"
        if self.documents is not None:
            return self.documents.problem(db)
        return None


def _create_tables(db: sqlite3.Connection) -> None:
    for statement in (_SCHEMA + lexical_documents.SCHEMA).split(";"):
        if statement.strip():
            db.execute(statement)


def _best_first(scores: Scores, vids: Keys) -> tuple[Keys, Scores]:
    """Sort by descending score, ties by ascending id.

    Scores are positive float32, whose bit patterns order like the numbers: while ids fit in 32 bits, one sort of
    `(~score bits) << 32 | id` as uint64 does it (several times faster than a lexsort of ~100,000 entries).
    """
    if len(vids) and int(vids.max()) < 2**32 and bool((scores > 0).all()):
        inverted = np.invert(scores.astype(np.float32).view(np.uint32)).astype(np.uint64)
        keys = (inverted << np.uint64(32)) | vids.astype(np.uint64)
        keys.sort()
        best = np.invert((keys >> np.uint64(32)).astype(np.uint32)).view(np.float32)
        return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64), best
    order = np.lexsort((vids, -scores))
    return vids[order], scores[order]


def _check_query(query: tuple[Sequence[int], Sequence[float]]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Term ids and counts as arrays, repeated ids merged (their counts added)."""
    if not isinstance(query, tuple | list) or len(query) != 2:
        raise TypeError("a lexical query is a pair (term ids, counts), as `SparseEncoder().query(text)` returns")
    raw_ids, raw_counts = query
    if len(raw_ids) != len(raw_counts):
        raise ValueError(f"a lexical query needs one count per term id, got {len(raw_ids)} ids and {len(raw_counts)}")
    ids = np.asarray(raw_ids, dtype=np.int64).reshape(-1)
    counts = np.asarray(raw_counts, dtype=np.float64).reshape(-1)
    if len(ids) and (ids.min() < 0 or ids.max() > 0xFFFFFFFF):
        raise ValueError("lexical term ids are 32-bit unsigned integers (`term_id`)")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("lexical query counts must be finite and >= 0")
    unique, inverse = np.unique(ids, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.float64)


def _groups(ids: npt.NDArray[np.int64], blocks: npt.NDArray[np.int64]) -> list[tuple[int, int, int, int]]:
    """(term id, block, start, end) of each run of equal (id, block) in arrays sorted by them."""
    if len(ids) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, (ids[1:] != ids[:-1]) | (blocks[1:] != blocks[:-1])])
    ends = np.r_[starts[1:], len(ids)]
    return list(zip(ids[starts].tolist(), blocks[starts].tolist(), starts.tolist(), ends.tolist(), strict=True))


def _meta_int(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row is not None else 0


def _add_meta(db: sqlite3.Connection, key: str, delta: int) -> None:
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = ?", (delta, key))


def _allocate_slots(db: sqlite3.Connection, k: int) -> list[int]:
    """`k` slots: freed ones first (smallest first), then new ones past the end."""
    free = [int(s) for (s,) in db.execute("SELECT slot FROM lexical_free ORDER BY slot LIMIT ?", (k,))]
    db.executemany("DELETE FROM lexical_free WHERE slot = ?", ((s,) for s in free))
    start = _meta_int(db, "lexical_slots")
    fresh = list(range(start, start + k - len(free)))
    _add_meta(db, "lexical_slots", len(fresh))
    return free + fresh


def _set_block_vids(db: sqlite3.Connection, slots: npt.NDArray[np.int64], vids: npt.NDArray[np.int64]) -> None:
    """Write `vids` (0: free) into the slot map."""
    for block in np.unique(slots // BLOCK).tolist():
        row = db.execute("SELECT vids FROM lexical_blocks WHERE block = ?", (block,)).fetchone()
        mapped = np.frombuffer(row[0], dtype="<i8").copy() if row else np.zeros(BLOCK, dtype="<i8")
        here = slots // BLOCK == block
        mapped[slots[here] - block * BLOCK] = vids[here]
        if mapped.any():
            db.execute("INSERT OR REPLACE INTO lexical_blocks (block, vids) VALUES (?, ?)", (block, mapped.tobytes()))
        else:
            db.execute("DELETE FROM lexical_blocks WHERE block = ?", (block,))


def _vids_of_slots(db: sqlite3.Connection, slots: npt.NDArray[np.int64]) -> Keys:
    """The FAISS ids of ascending `slots`, from the slot maps of their blocks."""
    block_of = slots // BLOCK
    blocks = block_of[np.r_[True, block_of[1:] != block_of[:-1]]].tolist()
    maps: dict[int, bytes] = {}
    for start in range(0, len(blocks), SQL_BATCH):
        part = blocks[start : start + SQL_BATCH]
        marks = ",".join("?" * len(part))
        maps.update(db.execute(f"SELECT block, vids FROM lexical_blocks WHERE block IN ({marks})", part))
    if len(maps) != len(blocks):
        raise IndexCorruptError("the lexical slot map lacks blocks that postings refer to; run `tempscale-rag repair`")
    first = blocks[0]
    table = np.zeros((blocks[-1] - first + 1) * BLOCK, dtype=np.int64)
    for block, blob in maps.items():
        table[(block - first) * BLOCK : (block - first + 1) * BLOCK] = np.frombuffer(blob, dtype="<i8")
    vids = table[slots - first * BLOCK]
    if (vids == 0).any():
        raise IndexCorruptError("the lexical postings refer to freed slots; run `tempscale-rag repair` on the index")
    return vids


def _all_block_vids(db: sqlite3.Connection) -> npt.NDArray[np.int64]:
    """The whole slot map as one array (slot -> vid, 0 when free)."""
    rows = db.execute("SELECT block, vids FROM lexical_blocks ORDER BY block").fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64)
    mapped = np.zeros((int(rows[-1][0]) + 1) * BLOCK, dtype=np.int64)
    for block, blob in rows:
        mapped[int(block) * BLOCK : (int(block) + 1) * BLOCK] = np.frombuffer(blob, dtype="<i8")
    return mapped


def _pairs(db: sqlite3.Connection) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rows = db.execute("SELECT slot, vid FROM lexical_chunks").fetchall()
    slots = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return slots, np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))


def open_lexical(
    db: sqlite3.Connection, db_path: Path, wanted: LexicalSettings | None, *, read_only: bool
) -> tuple[LexicalIndex | None, bool]:
    """The lexical channel of an opened store, built first when a writable open asks for one the database lacks.

    Args:
        db: The store's connection.
        db_path: Its file, for messages.
        wanted: The settings the manifest records (None: whatever the database holds, maybe nothing).
        read_only: Whether the store may be written.

    Returns:
        The channel (None: dense only) and whether it was (re)built now.

    Raises:
        IndexCorruptError: A read-only open asks for a channel the database lacks.
        IndexMismatchError: A read-only open asks for other settings than the database's.
    """
    stored = stored_settings(db, db_path)
    if wanted is None or stored == wanted:
        return (LexicalIndex(stored) if stored is not None else None), False
    folder = db_path.parent
    if read_only:
        if stored is None:
            raise IndexCorruptError(
                f"{db_path} has no lexical index although the index manifest records one; run `tempscale-rag repair "
                f"--out {folder}` to build it from the stored chunk texts"
            )
        raise IndexMismatchError(
            f"the lexical index in {db_path} was built with {stored.model_dump()}, the manifest records "
            f"{wanted.model_dump()}; run `tempscale-rag repair --out {folder}` to rebuild it"
        )
    index = LexicalIndex(wanted)
    with transaction(db):
        count = index.rebuild(db)
    logger.info("built the lexical index of %s over %d chunks of size %d", db_path, count, wanted.chunk_size)
    return index, True


def build_lexical(db: sqlite3.Connection, settings: LexicalSettings) -> tuple[LexicalIndex, int]:
    """A lexical channel with `settings`, (re)built from the stored chunk texts in one transaction.

    Returns:
        The channel and the number of chunks it indexes.

    Raises:
        ValueError: If `settings` names an analyser this version does not have.
    """
    index = LexicalIndex(settings)
    with transaction(db):
        count = index.rebuild(db)
    return index, count


def search_lexical(
    index: LexicalIndex | None,
    db: sqlite3.Connection,
    query: tuple[list[int], list[float]],
    n: int | None,
    folder: Path,
) -> tuple[Keys, Scores]:
    """`LexicalIndex.search` in one snapshot of the database; both arrays empty for a dense-only store (None)."""
    if index is None:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    with snapshot(db):
        return index.search(db, query, n, folder)


def search_lexical_documents(
    index: LexicalIndex | None,
    db: sqlite3.Connection,
    query: tuple[list[int], list[float]],
    n: int | None,
    folder: Path,
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]:
    """`LexicalIndex.search_documents` in one snapshot; both arrays empty for a dense-only store (None)."""
    if index is None:
        return np.empty(0, dtype=object), np.zeros(0, np.float32)
    with snapshot(db):
        return index.search_documents(db, query, n, folder)


def check_lexical(index: LexicalIndex | None, db: sqlite3.Connection, db_path: Path) -> None:
    """`LexicalIndex.check` in one snapshot of the database; nothing to check for a dense-only store."""
    if index is not None:
        with snapshot(db):
            index.check(db, db_path)


def describe_lexical(index: LexicalIndex | None, db: sqlite3.Connection) -> dict[str, Any] | None:
    """`LexicalIndex.describe`, None for a dense-only store."""
    return None if index is None else index.describe(db)
