"""Candidate documents and their exact rescoring: the part of document ranking that touches a store, written once.

A store does storage and chunk search; it serves ranking through `DocumentSource`, a small contract that FAISS and
Qdrant implement:

- `document_table(sources)`: the stored chunks of some documents as a `ChunkTable` (their vectors, grouping by
  (document, chunk size), the group mean vectors kept in the store, and each chunk's store key).
- `chunk_candidates(queries, n_chunks, n_documents)`: the documents of the best chunks of an approximate search.
- `mean_candidates(queries, n)`: the documents with the best exact `mean` score.
- `evidence_hits(keys)`: the full records of the chunks shown with each document.
- `candidate_policy`: None when chunk search is exact (a flat index scores every chunk, so ranking is exact), else
  how much to over-fetch.

`rank_source` ranks with it: an exact store has every document scored from every chunk; an approximate one names
candidate documents from an over-fetched chunk search (plus, for `mean` and `hybrid`, the best documents by their
exact `mean` score, and the same as fill-up when the chunks name fewer than k documents), which are then rescored
exactly from all their stored vectors (`rank_documents`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tempscale_rag.ranking.documents import (
    ChunkGroups,
    DocumentScoring,
    RankedDocument,
    document_chunks,
    document_scores_from_groups,
    group_vectors,
    rank_documents,
)
from tempscale_rag.stores.base import DocumentHit, SearchHit

_KEY_ORDER: dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.int64]]] = {}
"""The sort order of the last chunk table's keys: a store hands out tables over one cached key array."""

_EXACT_BLOCK = 64
"""Queries scored together against every chunk (one matrix product) by an exact store."""


@dataclass(frozen=True)
class CandidatePolicy:
    """How an approximate store finds the documents that are rescored exactly (all counts per wanted document).

    Attributes:
        chunk_overfetch: Chunks fetched from the store's chunk search.
        documents: Candidate documents kept from those chunks, best first (None: every document they name).
        mean_documents: Documents taken from the best exact `mean` scores.
    """

    chunk_overfetch: int
    documents: int | None
    mean_documents: int


@dataclass(frozen=True)
class ChunkTable:
    """Stored chunks of some documents, as exact rescoring reads them.

    Attributes:
        groups: The chunks grouped by (document, chunk size); `groups.documents` are the source names.
        keys: Each chunk's key in the store (FAISS id, Qdrant point id), for `DocumentSource.evidence_hits`.
        matrix: Vector storage (not copied: a FAISS index's own matrix).
        rows: Row of each chunk in `matrix`; None when chunk i is row i.
        group_vectors: Each group's mean unit vector (`group_vectors` of the documents module), in group order.
    """

    groups: ChunkGroups
    keys: npt.NDArray[Any]
    matrix: npt.NDArray[np.float32]
    rows: npt.NDArray[np.int64] | None
    group_vectors: npt.NDArray[np.float32]

    def documents_of(self, keys: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        """The document number of each chunk key (-1 for a key not in the table)."""
        cached = _KEY_ORDER.get("keys")
        if cached is None or cached[0] is not self.keys:
            cached = (self.keys, np.argsort(self.keys, kind="stable"))
            _KEY_ORDER["keys"] = cached
        order = cached[1]
        if self.keys.size == 0 or keys.size == 0:
            return np.full(keys.size, -1, dtype=np.int64)
        at = np.searchsorted(self.keys, keys, sorter=order).clip(max=self.keys.size - 1)
        chunks = order[at]
        found = self.keys[chunks] == keys
        documents = self.groups.group_document[self.groups.chunk_group[chunks]]
        return np.where(found, documents, -1).astype(np.int64)

    @cached_property
    def number(self) -> dict[Hashable, int]:
        """Document number of each source name."""
        return {name: i for i, name in enumerate(self.groups.documents)}

    def scores(self, queries: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n_queries, n_chunks) inner products of `queries` with every chunk."""
        block = queries @ self.matrix.T
        return block if self.rows is None else block[:, self.rows]

    def vectors(self, chunks: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The vectors of the given chunks (a copy)."""
        return self.matrix[chunks if self.rows is None else self.rows[chunks]]

    def subset(self, documents: Sequence[int]) -> ChunkTable:
        """The table of the given documents (by number here), numbered in the given order."""
        chunk_lists = document_chunks(self.groups, documents)
        index = np.concatenate(chunk_lists)
        groups = ChunkGroups.build(
            np.repeat(np.asarray(documents, dtype=np.int64), [len(c) for c in chunk_lists]).tolist(),
            self.groups.group_size[self.groups.chunk_group[index]].tolist(),
        )
        groups = dataclasses.replace(groups, documents=[self.groups.documents[d] for d in documents])
        # The first chunk of each new group names the group it had here.
        old_groups = self.groups.chunk_group[index[groups.order[groups.group_starts]]]
        rows = index if self.rows is None else self.rows[index]
        return ChunkTable(groups, self.keys[index], self.matrix, rows, self.group_vectors[old_groups])

    def best_mean(self, queries: npt.NDArray[np.float32], n: int) -> list[list[str]]:
        """Per query, the `n` documents with the best exact `mean` score, best first (ties by document number)."""
        scores = document_scores_from_groups(queries @ self.group_vectors.T, self.groups)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        return [[str(self.groups.documents[d]) for d in row] for row in best.tolist()]


def source_groups(
    sizes: Sequence[int], vectors: npt.NDArray[np.float32]
) -> list[tuple[int, int, npt.NDArray[np.float32]]]:
    """The (chunk size, chunk count, mean unit vector) of each group of one document, by increasing size.

    What a store keeps per document so that `mean` and `hybrid` need not read every chunk.

    Args:
        sizes: Each chunk's size.
        vectors: The chunks' unit vectors, (n_chunks, dim).
    """
    groups = ChunkGroups.build([0] * len(sizes), sizes)
    means = group_vectors(vectors, groups)
    return list(zip(groups.group_size.tolist(), groups.group_counts.tolist(), means, strict=True))


class DocumentSource(Protocol):
    """What document ranking needs from a store (see the module docstring)."""

    @property
    def dimension(self) -> int:
        """Length of the stored vectors."""

    @property
    def closed(self) -> bool:
        """True once the store is closed."""

    @property
    def candidate_policy(self) -> CandidatePolicy | None:
        """None when chunk search is exact (rank from every chunk), else how to find candidates."""

    @property
    def unit_queries(self) -> bool:
        """Whether the store compares with unit queries (Qdrant's cosine), so rescoring must too."""

    def document_table(self, sources: Sequence[str] | None) -> ChunkTable | None:
        """The stored chunks of `sources` (None: all) or a table holding more; None when nothing is stored."""

    def chunk_candidates(
        self, queries: npt.NDArray[np.float32], n_chunks: int, n_documents: int | None
    ) -> list[list[str]]:
        """Per query, the distinct documents of its best `n_chunks` chunks, best first, at most `n_documents`."""

    def mean_candidates(self, queries: npt.NDArray[np.float32], n: int) -> list[list[str]]:
        """Per query, the `n` documents with the best exact `mean` score, best first."""

    def evidence_hits(self, keys: Sequence[Hashable]) -> dict[Hashable, SearchHit]:
        """The records of the given chunk keys that still exist (their `score` is filled in by the caller)."""


Ranked = list[tuple[str, float, npt.NDArray[Any], npt.NDArray[np.float32]]]
"""One query's documents: (source, score, evidence chunk keys, their scores)."""


def rank_source(
    store: DocumentSource, queries: npt.NDArray[np.float32], k: int, scoring: DocumentScoring, evidence: int
) -> list[list[DocumentHit]]:
    """Rank documents for validated queries (at least one row) with the store's exact or candidate path."""
    return with_evidence(store, rank_ranked(store, queries, k, scoring, evidence))


def rank_ranked(
    store: DocumentSource,
    queries: npt.NDArray[np.float32],
    k: int,
    scoring: DocumentScoring,
    evidence: int,
    evidence_documents: int | None = None,
) -> list[Ranked]:
    """`rank_source` without reading the evidence records: per query, (source, score, chunk keys, chunk scores).

    `evidence_documents`: only the best this many documents get evidence chunks (None: all `k`).
    """
    if store.unit_queries:
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        queries = (queries / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    policy = store.candidate_policy
    shown = {"evidence": evidence, "evidence_documents": evidence_documents}
    if policy is None:
        return _rank_exact(store, queries, k, scoring, shown)
    return _rank_candidates(store, policy, queries, k, scoring, shown)


def _rank_exact(
    store: DocumentSource, queries: npt.NDArray[np.float32], k: int, scoring: DocumentScoring, shown: dict[str, Any]
) -> list[Ranked]:
    table = store.document_table(None)
    if table is None:
        return [[] for _ in range(queries.shape[0])]
    group_scores = queries @ table.group_vectors.T if scoring.needs_group_vectors else None
    out: list[Ranked] = []
    for start in range(0, queries.shape[0], _EXACT_BLOCK):
        for row, scores in enumerate(table.scores(queries[start : start + _EXACT_BLOCK]), start):
            mean = None if group_scores is None else group_scores[row]
            found = rank_documents(scores, table.groups, scoring, k, group_scores=mean, **shown)
            out.append(_ranked(table, found, scores))
    return out


def _rank_candidates(
    store: DocumentSource,
    policy: CandidatePolicy,
    queries: npt.NDArray[np.float32],
    k: int,
    scoring: DocumentScoring,
    shown: dict[str, Any],
) -> list[Ranked]:
    documents = None if policy.documents is None else k * policy.documents
    candidates = store.chunk_candidates(queries, k * policy.chunk_overfetch, documents)
    if scoring.needs_group_vectors or any(len(found) < k for found in candidates):
        best_mean = store.mean_candidates(queries, k * policy.mean_documents)
        for found, more in zip(candidates, best_mean, strict=True):
            if not scoring.needs_group_vectors:
                have = set(found)
                more = [name for name in more if name not in have][: max(0, k - len(found))]
            found.extend(more)
    table = store.document_table(sorted({name for found in candidates for name in found}))
    out: list[Ranked] = []
    for query, found in zip(queries, candidates, strict=True):
        names = [] if table is None else [name for name in dict.fromkeys(found) if name in table.number]
        if table is None or not names:
            out.append([])
            continue
        sub = table.subset([table.number[name] for name in names])
        scores = sub.vectors(np.arange(sub.groups.n_chunks)) @ query
        mean = sub.group_vectors @ query if scoring.needs_group_vectors else None
        found_documents = rank_documents(scores, sub.groups, scoring, k, group_scores=mean, **shown)
        out.append(_ranked(sub, found_documents, scores))
    return out


def _ranked(table: ChunkTable, found: list[RankedDocument], scores: npt.NDArray[np.float32]) -> Ranked:
    return [(str(table.groups.documents[r.document]), r.score, table.keys[r.chunks], scores[r.chunks]) for r in found]


def with_evidence(store: DocumentSource, ranked: list[Ranked]) -> list[list[DocumentHit]]:
    """The ranked documents as `DocumentHit`s, their evidence chunks read from the store (one read for all)."""
    keys = list(dict.fromkeys(key for hits in ranked for _, _, chunk_keys, _ in hits for key in chunk_keys.tolist()))
    hits = store.evidence_hits(keys) if keys else {}
    return [
        [
            DocumentHit(
                source=source,
                score=score,
                chunks=[
                    rescored(hits[key], value)
                    for key, value in zip(chunk_keys.tolist(), chunk_scores.tolist(), strict=True)
                    if key in hits
                ],
            )
            for source, score, chunk_keys, chunk_scores in documents
        ]
        for documents in ranked
    ]


def rescored(hit: SearchHit, score: float) -> SearchHit:
    """`hit` with `score` (and its own metadata dict: a chunk can be evidence for several queries)."""
    return SearchHit(
        hit.id, float(score), hit.text, hit.source, hit.position, hit.token_length, hit.bucket, dict(hit.metadata)
    )
