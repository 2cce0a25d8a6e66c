"""Whole-document BM25 in the FAISS store: each document's term counts, kept in step with its lexical chunks.

A document's terms are the terms of its chunks of the lexical size (`LexicalSettings.chunk_size`; their overlap of a
few tokens is counted twice, as in every backend and the evaluator). Its score for a query is `PivotBM25` over
documents: `sum count_q(t) idf(t) tf / (tf + k1 (1 - b + b len / document_pivot))`, with `idf = ln(1 + (N - n + 0.5) /
(n + 0.5))`, N documents and n of them holding `t`.

Tables (written by `LexicalIndex` inside the chunks' transactions, so a `kill -9` leaves them in step):

- `lexical_chunk_terms (vid PK, doc, counts)`: each lexical chunk's document and term counts (`<u4` ids then `<u4`
  counts): what a deleted chunk takes away from its document, without re-analysing its text.
- `lexical_documents (doc PK, source UNIQUE, chunks, length, counts)`: each document with lexical chunks: how many, its
  length in analysed terms and its summed term counts (the forward index).
- `lexical_document_postings (term_id, doc, tf) WITHOUT ROWID, PK (term_id, doc)`: the inverted index.
- `lexical_document_terms (term_id PK, df)`: documents holding each term (BM25's n); meta `lexical_documents` is N.

Raw counts are stored, not BM25 values, because a document's length changes whenever one of its chunks does (a large
file is written batch by batch): a write then updates only the terms it touches, and a query computes the length
normalisation from the documents' stored lengths. Terms that share an id (CRC-32, rare) add their counts here, where
`SparseEncoder` adds their values: the one place the backends can differ.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import LexicalSettings
from tempscale_rag.stores.errors import IndexCorruptError
from tempscale_rag.stores.faiss.database import SQL_BATCH

TABLES = ("lexical_chunk_terms", "lexical_documents", "lexical_document_postings", "lexical_document_terms")
META_KEY = "lexical_documents"

SCHEMA = """
CREATE TABLE IF NOT EXISTS lexical_chunk_terms (vid INTEGER PRIMARY KEY, doc INTEGER NOT NULL, counts BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS lexical_documents (
    doc INTEGER PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    chunks INTEGER NOT NULL,
    length INTEGER NOT NULL,
    counts BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS lexical_document_postings (
    term_id INTEGER NOT NULL,
    doc INTEGER NOT NULL,
    tf INTEGER NOT NULL,
    PRIMARY KEY (term_id, doc)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lexical_document_terms (term_id INTEGER PRIMARY KEY, df INTEGER NOT NULL);
"""

Counts = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
"""Sorted distinct term ids and their counts."""


def _blob(ids: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> bytes:
    return ids.astype("<u4").tobytes() + counts.astype("<u4").tobytes()


def _unblob(blob: bytes) -> Counts:
    n = len(blob) // 8
    ids = np.frombuffer(blob, dtype="<u4", count=n).astype(np.int64)
    return ids, np.frombuffer(blob, dtype="<u4", offset=4 * n, count=n).astype(np.int64)


def _merge(parts: Sequence[Counts], signs: Sequence[int]) -> Counts:
    """The signed sum of several count vectors, as sorted ids and counts (zeros kept)."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ids = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] * s for p, s in zip(parts, signs, strict=True)])
    unique, inverse = np.unique(ids, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)


class DocumentTerms:
    """The whole-document tables of one store; every method runs on the caller's connection and transaction.

    Args:
        settings: The lexical settings (`document_pivot` set).
    """

    def __init__(self, settings: LexicalSettings) -> None:
        if settings.document_pivot is None:
            raise ValueError("whole-document BM25 needs LexicalSettings.document_pivot")
        self.settings = settings
        self.pivot = float(settings.document_pivot)

    # --- writing --------------------------------------------------------------------------------------------------

    def add(
        self, db: sqlite3.Connection, vids: Sequence[int], sources: Sequence[str], counts: Sequence[Counts]
    ) -> None:
        """Add lexical chunks (FAISS ids, their sources, their term counts) to their documents."""
        docs = self._doc_ids(db, sorted(set(sources)))
        db.executemany(
            "INSERT INTO lexical_chunk_terms (vid, doc, counts) VALUES (?, ?, ?)",
            ((vid, docs[s], _blob(*c)) for vid, s, c in zip(vids, sources, counts, strict=True)),
        )
        by_doc: dict[int, list[Counts]] = {}
        for source, c in zip(sources, counts, strict=True):
            by_doc.setdefault(docs[source], []).append(c)
        for doc, parts in by_doc.items():
            self._update(db, doc, _merge(parts, [1] * len(parts)), len(parts))

    def remove(self, db: sqlite3.Connection, vids: Sequence[int]) -> None:
        """Take deleted chunks (FAISS ids; those without a row are skipped) away from their documents."""
        rows: list[tuple[int, int, bytes]] = []
        for start in range(0, len(vids), SQL_BATCH):
            part = list(vids[start : start + SQL_BATCH])
            marks = ",".join("?" * len(part))
            rows.extend(db.execute(f"SELECT vid, doc, counts FROM lexical_chunk_terms WHERE vid IN ({marks})", part))
            db.execute(f"DELETE FROM lexical_chunk_terms WHERE vid IN ({marks})", part)
        by_doc: dict[int, list[Counts]] = {}
        for _, doc, blob in rows:
            by_doc.setdefault(int(doc), []).append(_unblob(blob))
        for doc, parts in by_doc.items():
            self._update(db, doc, _merge(parts, [-1] * len(parts)), -len(parts))

    def _doc_ids(self, db: sqlite3.Connection, sources: list[str]) -> dict[str, int]:
        """The document number of each source, a new empty document row for a source without one."""
        found: dict[str, int] = {}
        for start in range(0, len(sources), SQL_BATCH):
            part = sources[start : start + SQL_BATCH]
            marks = ",".join("?" * len(part))
            found.update(db.execute(f"SELECT source, doc FROM lexical_documents WHERE source IN ({marks})", part))
        for source in sources:
            if source not in found:
                cursor = db.execute(
                    "INSERT INTO lexical_documents (source, chunks, length, counts) VALUES (?, 0, 0, x'')", (source,)
                )
                found[source] = int(cursor.lastrowid or 0)
                db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", (META_KEY,))
        return found

    def _update(self, db: sqlite3.Connection, doc: int, delta: Counts, chunks: int) -> None:
        """Apply a signed change of term counts and chunk count to one document, its postings and the df."""
        row = db.execute("SELECT chunks, counts FROM lexical_documents WHERE doc = ?", (doc,)).fetchone()
        if row is None:
            raise IndexCorruptError("a lexical chunk refers to a missing document row; run `tempscale-rag repair`")
        old = _unblob(row[1])
        ids, new = _merge([old, delta], [1, 1])
        before = np.zeros(len(ids), np.int64)
        before[np.searchsorted(ids, old[0])] = old[1]
        if (new < 0).any() or int(row[0]) + chunks < 0:
            raise IndexCorruptError("the whole-document term counts are out of step; run `tempscale-rag repair`")
        changed = new != before
        upserts = changed & (new > 0)
        db.executemany(
            "INSERT OR REPLACE INTO lexical_document_postings (term_id, doc, tf) VALUES (?, ?, ?)",
            ((t, doc, c) for t, c in zip(ids[upserts].tolist(), new[upserts].tolist(), strict=True)),
        )
        gone = changed & (new == 0)
        db.executemany(
            "DELETE FROM lexical_document_postings WHERE term_id = ? AND doc = ?",
            ((t, doc) for t in ids[gone].tolist()),
        )
        born = (before == 0) & (new > 0)
        db.executemany(
            "INSERT INTO lexical_document_terms (term_id, df) VALUES (?, 1) "
            "ON CONFLICT (term_id) DO UPDATE SET df = df + 1",
            ((t,) for t in ids[born].tolist()),
        )
        db.executemany(
            "UPDATE lexical_document_terms SET df = df - 1 WHERE term_id = ?", ((t,) for t in ids[gone].tolist())
        )
        db.executemany(
            "DELETE FROM lexical_document_terms WHERE term_id = ? AND df <= 0", ((t,) for t in ids[gone].tolist())
        )
        if int(row[0]) + chunks == 0:
            db.execute("DELETE FROM lexical_documents WHERE doc = ?", (doc,))
            db.execute("UPDATE meta SET value = CAST(value AS INTEGER) - 1 WHERE key = ?", (META_KEY,))
            return
        keep = new > 0
        db.execute(
            "UPDATE lexical_documents SET chunks = chunks + ?, length = ?, counts = ? WHERE doc = ?",
            (chunks, int(new.sum()), _blob(ids[keep], new[keep]), doc),
        )

    # --- reading --------------------------------------------------------------------------------------------------

    def search(
        self, db: sqlite3.Connection, ids: npt.NDArray[np.int64], counts: npt.NDArray[np.float64], n: int | None
    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]:
        """The best `n` documents (None: every matching one) for merged query term ids and counts, best first.

        Ties are broken by source. Call inside one read snapshot.
        """
        empty = (np.empty(0, dtype=object), np.zeros(0, np.float32))
        total = self.count(db)
        if len(ids) == 0 or total <= 0 or n == 0:
            return empty
        marks = ",".join("?" * len(ids))
        df_of = dict(
            db.execute(f"SELECT term_id, df FROM lexical_document_terms WHERE term_id IN ({marks})", ids.tolist())
        )
        weight_of = {
            t: c * math.log1p((total - df_of[t] + 0.5) / (df_of[t] + 0.5))
            for t, c in zip(ids.tolist(), counts.tolist(), strict=True)
            if t in df_of
        }
        if not weight_of:
            return empty
        marks = ",".join("?" * len(weight_of))
        rows = db.execute(
            f"SELECT term_id, doc, tf FROM lexical_document_postings WHERE term_id IN ({marks})", list(weight_of)
        ).fetchall()
        if not rows:
            return empty
        docs = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        tf = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
        weights = np.fromiter((weight_of[r[0]] for r in rows), dtype=np.float64, count=len(rows))
        matched, inverse = np.unique(docs, return_inverse=True)
        info = self._lengths(db, matched.tolist())
        lengths = np.array([info[d][1] for d in matched.tolist()], dtype=np.float64)
        s = self.settings
        norms = s.k1 * (1.0 - s.b + s.b * lengths / self.pivot)
        scores = np.bincount(inverse, weights=weights * tf / (tf + norms[inverse]), minlength=len(matched))
        sources = [info[d][0] for d in matched.tolist()]
        scores32 = scores.astype(np.float32)
        order = sorted(range(len(sources)), key=lambda i: (-scores32[i], sources[i]))[:n]
        return np.array([sources[i] for i in order], dtype=object), scores32[order]

    def _lengths(self, db: sqlite3.Connection, docs: list[int]) -> dict[int, tuple[str, int]]:
        out: dict[int, tuple[str, int]] = {}
        for start in range(0, len(docs), SQL_BATCH):
            part = docs[start : start + SQL_BATCH]
            marks = ",".join("?" * len(part))
            for doc, source, length in db.execute(
                f"SELECT doc, source, length FROM lexical_documents WHERE doc IN ({marks})", part
            ):
                out[int(doc)] = (str(source), int(length))
        if len(out) != len(docs):
            raise IndexCorruptError("whole-document postings refer to missing documents; run `tempscale-rag repair`")
        return out

    def count(self, db: sqlite3.Connection) -> int:
        """N, the number of documents with lexical chunks."""
        row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
        return int(row[0]) if row is not None else 0

    def describe(self, db: sqlite3.Connection) -> dict[str, Any]:
        """The number of documents and of distinct term ids."""
        terms = int(db.execute("SELECT COUNT(*) FROM lexical_document_terms").fetchone()[0])
        return {"documents": self.count(db), "document_terms": terms}

    def problem(self, db: sqlite3.Connection) -> str | None:
        """What is out of step in the whole-document tables, or None (reads every row)."""
        rows = db.execute("SELECT doc, chunks, length, counts FROM lexical_documents").fetchall()
        if len(rows) != self.count(db):
            return f"it records {self.count(db)} lexical documents but holds {len(rows)}"
        expected: dict[int, list[Counts]] = {}
        chunks: dict[int, int] = {}
        for doc, blob in db.execute("SELECT doc, counts FROM lexical_chunk_terms"):
            expected.setdefault(int(doc), []).append(_unblob(blob))
            chunks[int(doc)] = chunks.get(int(doc), 0) + 1
        forward = {int(doc): (int(k), int(length), _unblob(blob)) for doc, k, length, blob in rows}
        if set(forward) != set(expected):
            return "its documents differ from the documents of its lexical chunks"
        postings = 0
        for doc, (k, length, (ids, counts)) in forward.items():
            want_ids, want = _merge(expected[doc], [1] * len(expected[doc]))
            keep = want > 0
            if k != chunks[doc] or not (np.array_equal(ids, want_ids[keep]) and np.array_equal(counts, want[keep])):
                return "a document's term counts differ from the sum of its chunks'"
            if length != int(counts.sum()):
                return "a document's length differs from its term counts"
            postings += len(ids)
        stored: dict[int, dict[int, int]] = {}
        for term, doc, tf in db.execute("SELECT term_id, doc, tf FROM lexical_document_postings"):
            stored.setdefault(int(doc), {})[int(term)] = int(tf)
        for doc, (_, _, (ids, counts)) in forward.items():
            if stored.pop(doc, {}) != dict(zip(ids.tolist(), counts.tolist(), strict=True)):
                return f"its whole-document postings differ from its documents' {postings} (document, term) pairs"
        if stored:
            return "its whole-document postings list documents it does not hold"
        wrong_df = db.execute(
            "SELECT COUNT(*) FROM (SELECT term_id, COUNT(*) AS n FROM lexical_document_postings GROUP BY term_id) p "
            "LEFT JOIN lexical_document_terms t USING (term_id) WHERE t.df IS NOT p.n"
        ).fetchone()[0]
        terms = int(db.execute("SELECT COUNT(*) FROM lexical_document_terms").fetchone()[0])
        distinct = int(db.execute("SELECT COUNT(DISTINCT term_id) FROM lexical_document_postings").fetchone()[0])
        if wrong_df or terms != distinct:
            return "its whole-document frequencies differ from its postings"
        return None
