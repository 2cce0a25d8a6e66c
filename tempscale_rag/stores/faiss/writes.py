"""The FAISS store's write transactions on `chunks.sqlite`: chunk rows, document groups and lexical postings.

Each function is one SQLite transaction (a crash leaves the state before it or after it) and returns the `Change` that
`FaissStore` queues for the FAISS index afterwards: the index is a cache of the database, updated after the commit.
`streaming.py` writes a source from a stream of batches instead.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from tempscale_rag.stores.base import ChunkRecord
from tempscale_rag.stores.faiss import database as sql
from tempscale_rag.stores.faiss.database import Change
from tempscale_rag.stores.faiss.lexical import LexicalIndex


def apply_lexical(db: sqlite3.Connection, change: Change, lexical: LexicalIndex | None) -> None:
    """Inside the chunks' transaction: mirror the change in the lexical tables (nothing for a dense-only store)."""
    if lexical is not None:
        lexical.apply(db, change.removed, change.added_ids, change.added_records)


def replace_rows(
    db: sqlite3.Connection,
    source: str,
    fingerprint: str,
    batch: list[ChunkRecord],
    *,
    generation: int,
    lexical: LexicalIndex | None,
) -> Change:
    """Replace every chunk of `source` by `batch` and record its fingerprint, in one transaction.

    Rows stored already with identical content keep their vid (see `database.write_records`).

    Args:
        db: The store's connection (no transaction open).
        source: The source (checked by the caller).
        fingerprint: Its content fingerprint (checked by the caller).
        batch: The checked records, all of `source`.
        generation: The store's current generation.
        lexical: The store's lexical channel (None: dense only).

    Returns:
        What changed, with the new generation when anything did.
    """
    wanted = {record.id for record in batch}
    with sql.transaction(db):
        stale = [
            vid
            for vid, chunk_id in db.execute("SELECT vid, chunk_id FROM chunks WHERE source = ?", (source,))
            if chunk_id not in wanted
        ]
        sql.delete_vids(db, stale)
        change = sql.write_records(db, batch)
        change.removed.extend(stale)
        sql.write_groups(db, source, batch)
        for other in change.displaced_sources:
            sql.refresh_groups(db, other)
        apply_lexical(db, change, lexical)
        db.execute(
            "INSERT OR REPLACE INTO sources (source, fingerprint, chunks, updated_at) VALUES (?, ?, ?, ?)",
            (source, fingerprint, len(batch), datetime.now(UTC).isoformat()),
        )
        sql.bump_generation(db, change, generation)
    return change


def upsert_rows(
    db: sqlite3.Connection, batch: list[ChunkRecord], *, generation: int, lexical: LexicalIndex | None
) -> Change:
    """Add the checked, non-empty `batch` in one transaction, replacing stored records with the same id."""
    with sql.transaction(db):
        change = sql.write_records(db, batch)
        for source in {record.source for record in batch} | change.displaced_sources:
            sql.refresh_groups(db, source)
        apply_lexical(db, change, lexical)
        sql.bump_generation(db, change, generation)
    return change


def delete_rows(db: sqlite3.Connection, source: str, *, generation: int, lexical: LexicalIndex | None) -> Change:
    """Delete every chunk of `source`, its fingerprint and its groups in one transaction (`removed`: their vids)."""
    with sql.transaction(db):
        vids = [vid for (vid,) in db.execute("SELECT vid FROM chunks WHERE source = ?", (source,))]
        sql.delete_vids(db, vids)
        db.execute("DELETE FROM sources WHERE source = ?", (source,))
        db.execute("DELETE FROM groups WHERE source = ?", (source,))
        change = Change(removed=vids)
        apply_lexical(db, change, lexical)
        sql.bump_generation(db, change, generation)
    return change
