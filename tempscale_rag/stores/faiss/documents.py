"""The FAISS store's side of document ranking: its chunks as one `ChunkTable` over the FAISS storage matrix.

The grouping of every indexed chunk by (source, chunk size) and the group vectors (from the `groups` table) are built
once per index state and cached; the matrix is the FAISS index's own storage, taken afresh for every search.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tempscale_rag.ranking.candidates import ChunkTable
from tempscale_rag.ranking.documents import ChunkGroups, group_vectors
from tempscale_rag.stores.faiss.database import CHUNK_SIZE_SQL, snapshot
from tempscale_rag.stores.faiss.vectors import FaissVectors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DocumentView:
    """The indexed chunks grouped for document ranking; valid while `key` (index object, generation, size) holds.

    Attributes:
        key: What the view was built for.
        positions: Row of each grouped chunk in the FAISS storage matrix.
        vids: SQLite id of each grouped chunk.
        groups: Their grouping by (source, chunk size); None when nothing is indexed.
        group_vectors: One unit vector per group.
        all_positions: Whether chunk i is row i of the storage matrix (no reindexing needed).
    """

    key: tuple[Any, int, int]
    positions: npt.NDArray[np.int64]
    vids: npt.NDArray[np.int64]
    groups: ChunkGroups | None
    group_vectors: npt.NDArray[np.float32]
    all_positions: bool

    def fresh(self, key: tuple[Any, int, int]) -> bool:
        """Whether the view still describes the index state `key`."""
        # The index object itself (not its id(), which a new object may reuse) marks a rebuild.
        return self.key[0] is key[0] and self.key[1:] == key[1:]

    def table(self, matrix: npt.NDArray[np.float32]) -> ChunkTable | None:
        """The view over the current storage matrix, None when nothing is indexed."""
        if self.groups is None:
            return None
        rows = None if self.all_positions else self.positions
        return ChunkTable(self.groups, self.vids, matrix, rows, self.group_vectors)


def build_view(
    db: sqlite3.Connection,
    key: tuple[Any, int, int],
    id_map: npt.NDArray[np.int64],
    matrix: npt.NDArray[np.float32],
    *,
    has_groups_table: bool,
) -> DocumentView:
    """Group the chunks of the FAISS index (ids `id_map`, vectors `matrix`) by (source, chunk size)."""
    dimension = matrix.shape[1]
    with snapshot(db):
        rows = db.execute(f"SELECT vid, source, {CHUNK_SIZE_SQL} FROM chunks").fetchall()
        stored: dict[tuple[str, int], tuple[int, bytes]] = {}
        if has_groups_table:
            for source, size, count, blob in db.execute("SELECT source, chunk_tokens, chunks, vector FROM groups"):
                stored[(source, int(size))] = (int(count), blob)
    row_vids = np.fromiter((row[0] for row in rows), np.int64, len(rows))
    by_vid = np.argsort(row_vids)
    where = np.clip(np.searchsorted(row_vids, id_map, sorter=by_vid), 0, max(len(rows) - 1, 0))
    row_of = by_vid[where] if len(rows) else np.zeros(0, dtype=np.int64)
    # A chunk in the index but not in the database was deleted by a writer after this reader opened: skip it.
    valid = row_vids[row_of] == id_map if len(rows) else np.zeros(len(id_map), dtype=bool)
    positions = np.flatnonzero(valid).astype(np.int64)
    vids = id_map[positions]
    if positions.size == 0:
        return DocumentView(key, positions, vids, None, np.zeros((0, dimension), np.float32), True)
    picked = row_of[positions].tolist()
    groups = ChunkGroups.build([rows[j][1] for j in picked], [rows[j][2] for j in picked])
    vectors = np.empty((groups.n_groups, dimension), dtype=np.float32)
    missing = []
    for g, (doc, size, count) in enumerate(
        zip(groups.group_document.tolist(), groups.group_size.tolist(), groups.group_counts.tolist(), strict=True)
    ):
        entry = stored.get((str(groups.documents[doc]), size))
        if entry is None or entry[0] != count or len(entry[1]) != 4 * dimension:
            missing.append(g)
        else:
            vectors[g] = np.frombuffer(entry[1], dtype="<f4")
    if missing:
        # Only an index written before the groups table existed, opened read-only, gets here (or a reader racing
        # a writer): derive the vectors from the chunks, exactly as a write would have stored them.
        logger.info("computing %d document group vectors in memory", len(missing))
        vectors[missing] = group_vectors(matrix[positions], groups)[missing]
    all_positions = len(positions) == len(id_map) and bool(valid.all())
    return DocumentView(key, positions, vids, groups, vectors, all_positions)


def current_view(
    db: sqlite3.Connection,
    vectors: FaissVectors,
    dimension: int,
    generation: int,
    cached: DocumentView | None,
    *,
    has_groups_table: bool,
) -> tuple[DocumentView, npt.NDArray[np.float32]]:
    """The view of the synced index `vectors` at `generation` (`cached` while fresh) and its current storage matrix."""
    key = (vectors.index, generation, vectors.ntotal)
    matrix = vectors.storage_matrix(dimension)
    if cached is not None and cached.fresh(key):
        return cached, matrix
    return build_view(db, key, vectors.id_map(), matrix, has_groups_table=has_groups_table), matrix


def chunk_documents(view: DocumentView, ids: npt.NDArray[np.int64], limit: int | None) -> list[str]:
    """The distinct sources of the chunks `ids` (vids, -1 padded), best first, at most `limit`."""
    groups = view.groups
    if groups is None:
        return []
    hit_vids = ids[ids >= 0]
    sorted_vids = np.argsort(view.vids)
    where = np.clip(np.searchsorted(view.vids, hit_vids, sorter=sorted_vids), 0, len(sorted_vids) - 1)
    chunk_index = sorted_vids[where]
    chunk_index = chunk_index[view.vids[chunk_index] == hit_vids]
    numbers = dict.fromkeys(groups.group_document[groups.chunk_group[chunk_index]].tolist())
    names = [str(groups.documents[d]) for d in numbers]
    return names if limit is None else names[:limit]


def candidate_sources(
    view: DocumentView | None,
    vectors: FaissVectors,
    queries: npt.NDArray[np.float32],
    fetch: int,
    limit: int | None,
) -> list[list[str]]:
    """The sources of the best `fetch` chunks of the FAISS search, per query, at most `limit` each.

    `view` must describe the current state of `vectors` (the caller has just built or checked it).
    """
    if view is None:  # pragma: no cover - the caller built it
        raise RuntimeError("document view missing")
    _, ids = vectors.search(queries, fetch)
    return [chunk_documents(view, row, limit) for row in ids]
