"""Ranking whole documents from their chunks: the aggregation every store and the evaluator share.

A RAG index already holds every document's chunks, so a document can be scored from them at no extra embedding cost
(BERT-MaxP, Dai & Callan 2019, scores a document by its best passage). An index may hold each document chunked at
several sizes (small chunks find a needle, larger ones carry a topic); the scores of different sizes are on different
scales, so each (document, chunk size) *group* is aggregated on its own and a document's score is the mean over its
groups. Within a group:

- `max`: the best chunk's cosine.
- `mean`: the cosine with the group's mean unit chunk vector (kept in the index, see `group_vectors`).
- `hybrid`: the average of `max` and `mean`.
- `topm`: the mean of the `top_m` best chunks' cosines (fewer when the group has fewer chunks).
- `softmax`: log-mean-exp pooling, `T * log(mean(exp(s / T)))`: `max` as T -> 0, the mean cosine as T -> inf.

`score_documents` is the exact reference: it scores every chunk of every document. Stores that search approximately
(HNSW, Qdrant) rescore their candidate documents with it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import DEFAULT_SOFTMAX_TEMPERATURE, DOC_SCORES, DocScore, check_softmax_temperature

DEFAULT_TOP_M = 3
"""Chunks averaged by `topm`."""


def check_doc_score(name: str) -> DocScore:
    """Validate an aggregation name.

    Raises:
        ValueError: If `name` is not one of `DOC_SCORES`.
    """
    if name not in DOC_SCORES:
        raise ValueError(f"unknown document score {name!r}; choose one of {', '.join(DOC_SCORES)}")
    return name  # type: ignore[return-value]


@dataclass(frozen=True)
class DocumentScoring:
    """An aggregation and its parameters.

    Attributes:
        method: One of `DOC_SCORES`.
        top_m: Chunks averaged by `topm`.
        softmax_temperature: T of `softmax` pooling.
    """

    method: DocScore = "max"
    top_m: int = DEFAULT_TOP_M
    softmax_temperature: float = DEFAULT_SOFTMAX_TEMPERATURE

    def __post_init__(self) -> None:
        check_doc_score(self.method)
        if isinstance(self.top_m, bool) or not isinstance(self.top_m, int) or self.top_m < 1:
            raise ValueError(f"top_m must be an integer >= 1, got {self.top_m!r}")
        check_softmax_temperature(self.softmax_temperature)

    @property
    def needs_group_vectors(self) -> bool:
        """Whether the aggregation uses the groups' mean vectors (`mean`, `hybrid`)."""
        return self.method in ("mean", "hybrid")


@dataclass(frozen=True)
class ChunkGroups:
    """Which (document, chunk size) group each chunk belongs to, in a layout that aggregates fast.

    Build it with `ChunkGroups.build`. Groups are numbered in order of (document, size); documents in order of first
    appearance of their key.

    Attributes:
        documents: The document keys, in document-number order.
        chunk_group: Group number of every chunk (in the caller's chunk order).
        group_document: Document number of every group.
        group_size: Chunk size of every group.
        order: A permutation of the chunks that makes every group contiguous.
        group_starts: Start of each group within `order`.
        group_counts: Chunks in each group.
        document_groups: Groups per document.
    """

    documents: list[Hashable]
    chunk_group: npt.NDArray[np.int64]
    group_document: npt.NDArray[np.int64]
    group_size: npt.NDArray[np.int64]
    order: npt.NDArray[np.int64] = field(repr=False)
    group_starts: npt.NDArray[np.int64] = field(repr=False)
    group_counts: npt.NDArray[np.int64] = field(repr=False)
    document_groups: npt.NDArray[np.int64] = field(repr=False)

    @classmethod
    def build(cls, documents: Sequence[Hashable], sizes: Sequence[int] | None = None) -> ChunkGroups:
        """Group chunks by document and chunk size.

        Args:
            documents: Each chunk's document key (e.g. its source path).
            sizes: Each chunk's chunk size; None puts all of a document's chunks in one group.

        Returns:
            The grouping.

        Raises:
            ValueError: If the lengths differ or there are no chunks.
        """
        n = len(documents)
        if n == 0:
            raise ValueError("no chunks to group")
        size_list = [0] * n if sizes is None else [int(s) for s in sizes]
        if len(size_list) != n:
            raise ValueError(f"{n} document keys but {len(size_list)} chunk sizes")
        doc_number: dict[Hashable, int] = {}
        doc_ids = np.fromiter((doc_number.setdefault(d, len(doc_number)) for d in documents), np.int64, n)
        size_arr = np.asarray(size_list, dtype=np.int64)
        pairs, chunk_group = np.unique(np.stack([doc_ids, size_arr], axis=1), axis=0, return_inverse=True)
        chunk_group = chunk_group.reshape(-1).astype(np.int64)
        order = np.argsort(chunk_group, kind="stable").astype(np.int64)
        counts = np.bincount(chunk_group, minlength=len(pairs)).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        group_document = pairs[:, 0].astype(np.int64)
        return cls(
            documents=list(doc_number),
            chunk_group=chunk_group,
            group_document=group_document,
            group_size=pairs[:, 1].astype(np.int64),
            order=order,
            group_starts=starts,
            group_counts=counts,
            document_groups=np.bincount(group_document, minlength=len(doc_number)).astype(np.int64),
        )

    @property
    def n_chunks(self) -> int:
        """Number of chunks."""
        return len(self.chunk_group)

    @property
    def n_groups(self) -> int:
        """Number of (document, size) groups."""
        return len(self.group_document)

    @property
    def n_documents(self) -> int:
        """Number of documents."""
        return len(self.documents)


def group_vectors(chunk_vectors: npt.ArrayLike, groups: ChunkGroups) -> npt.NDArray[np.float32]:
    """Each group's mean unit chunk vector, L2-normalised: what `mean` and `hybrid` score against.

    Args:
        chunk_vectors: (n_chunks, dim) unit vectors, in the order `groups` was built with.
        groups: The grouping.

    Returns:
        (n_groups, dim) float32 unit vectors (a zero mean stays zero).
    """
    vectors = np.asarray(chunk_vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != groups.n_chunks:
        raise ValueError(f"expected ({groups.n_chunks}, dim) chunk vectors, got shape {vectors.shape}")
    sums = np.zeros((groups.n_groups, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, groups.chunk_group, vectors)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def score_groups(
    chunk_scores: npt.ArrayLike,
    groups: ChunkGroups,
    scoring: DocumentScoring,
    group_scores: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float32]:
    """Aggregate chunk scores into one score per (document, size) group.

    Args:
        chunk_scores: (n_queries, n_chunks) cosines of every query with every chunk.
        groups: The grouping of the chunks.
        scoring: The aggregation.
        group_scores: (n_queries, n_groups) cosines with the groups' mean vectors; needed by `mean` and `hybrid`.

    Returns:
        (n_queries, n_groups) float32 group scores.
    """
    scores = np.asarray(chunk_scores, dtype=np.float32)
    if scores.ndim == 1:
        scores = scores[None, :]
    if scores.shape[1] != groups.n_chunks:
        raise ValueError(f"expected scores for {groups.n_chunks} chunks, got {scores.shape[1]}")
    mean: npt.NDArray[np.float32] | None = None
    if scoring.needs_group_vectors:
        if group_scores is None:
            raise ValueError(f"document score {scoring.method!r} needs the cosines with the group mean vectors")
        mean = np.asarray(group_scores, dtype=np.float32).reshape(len(scores), groups.n_groups)
        if scoring.method == "mean":
            return mean
    ordered = scores[:, groups.order]
    starts = groups.group_starts
    best = np.maximum.reduceat(ordered, starts, axis=1)
    if scoring.method == "max":
        return best
    if scoring.method == "hybrid":
        if mean is None:  # pragma: no cover - needs_group_vectors guarantees it
            raise ValueError("hybrid needs group scores")
        return ((best + mean) / 2).astype(np.float32)
    if scoring.method == "softmax":
        t = float(scoring.softmax_temperature)
        # Subtract each group's max before exp: exact and overflow-free.
        shifted = np.exp((ordered - np.repeat(best, groups.group_counts, axis=1)) / t)
        means = np.add.reduceat(shifted, starts, axis=1) / groups.group_counts
        return (best + t * np.log(means)).astype(np.float32)
    # topm: sort each group's scores descending (groups are contiguous in `ordered`), then average the first m.
    group_of_column = np.repeat(np.arange(groups.n_groups), groups.group_counts)
    key = group_of_column[None, :] * 4.0 + (1.0 - ordered.astype(np.float64))
    ranked = np.take_along_axis(ordered, np.argsort(key, axis=1), axis=1)
    m = np.minimum(groups.group_counts, scoring.top_m)
    total = np.zeros((len(scores), groups.n_groups), dtype=np.float64)
    for j in range(int(m.max())):
        has = m > j
        total[:, has] += ranked[:, starts[has] + j]
    return (total / m).astype(np.float32)


def document_scores_from_groups(group_scores: npt.ArrayLike, groups: ChunkGroups) -> npt.NDArray[np.float32]:
    """A document's score: the mean of its groups' scores (one group per chunk size).

    Args:
        group_scores: (n_queries, n_groups) from `score_groups`.
        groups: The grouping.

    Returns:
        (n_queries, n_documents) float32.
    """
    values = np.asarray(group_scores, dtype=np.float64)
    totals = np.zeros((len(values), groups.n_documents), dtype=np.float64)
    np.add.at(totals.T, groups.group_document, values.T)
    return (totals / groups.document_groups).astype(np.float32)


def score_documents(
    chunk_scores: npt.ArrayLike,
    groups: ChunkGroups,
    scoring: DocumentScoring | None = None,
    group_scores: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float32]:
    """Score every document from every one of its chunks (the exact reference).

    Args:
        chunk_scores: (n_queries, n_chunks) cosines of every query with every chunk (a 1-D array is one query).
        groups: The grouping of the chunks.
        scoring: The aggregation; None is `max`.
        group_scores: (n_queries, n_groups) cosines with the groups' mean vectors (`mean`, `hybrid`).

    Returns:
        (n_queries, n_documents) float32 document scores; columns follow `groups.documents`.
    """
    scoring = scoring or DocumentScoring()
    return document_scores_from_groups(score_groups(chunk_scores, groups, scoring, group_scores), groups)


def document_chunks(groups: ChunkGroups, documents: npt.ArrayLike) -> list[npt.NDArray[np.int64]]:
    """The chunk indices of each given document (all its sizes), in group order.

    Args:
        groups: The grouping.
        documents: Document numbers.

    Returns:
        One int64 array of chunk indices (in the caller's chunk order) per document.
    """
    first_group = np.concatenate([[0], np.cumsum(groups.document_groups)]).astype(np.int64)
    ends = groups.group_starts + groups.group_counts
    out = []
    for d in np.asarray(documents, dtype=np.int64).tolist():
        start = int(groups.group_starts[first_group[d]])
        stop = int(ends[first_group[d + 1] - 1])
        out.append(groups.order[start:stop])
    return out


@dataclass(frozen=True)
class RankedDocument:
    """One document of a ranking, as returned by `rank_documents`.

    Attributes:
        document: Document number (index into `ChunkGroups.documents`).
        score: Its exact score.
        chunks: Its best chunks (indices in the caller's chunk order), best first.
    """

    document: int
    score: float
    chunks: list[int]


def rank_documents(
    chunk_scores: npt.ArrayLike,
    groups: ChunkGroups,
    scoring: DocumentScoring,
    k: int,
    *,
    evidence: int = 3,
    group_scores: npt.ArrayLike | None = None,
    evidence_documents: int | None = None,
) -> list[RankedDocument]:
    """The `k` best documents for one query, with exact scores (`score_documents`) and their best chunks.

    `topm` sorts every group, which costs a sort of all chunks; it is evaluated only on the documents that can still
    make the top `k`: a group's top-m mean (and its log-mean-exp) never exceeds its best chunk, so the `max` score
    bounds each document from above, and documents are scored exactly in order of that bound until the k-th exact score
    reaches the next bound.

    Args:
        chunk_scores: (n_chunks,) cosines of the query with every chunk of `groups`.
        groups: The grouping of those chunks.
        scoring: The aggregation.
        k: How many documents at most.
        evidence: Best chunks returned per document.
        group_scores: (n_groups,) cosines with the groups' mean vectors (`mean`, `hybrid`).
        evidence_documents: Only the best this many documents get their evidence (None: all `k`): a hybrid search
            ranks deep but shows few.

    Returns:
        Up to `k` documents, best first (ties broken by document number).
    """
    scores = np.asarray(chunk_scores, dtype=np.float32).reshape(-1)
    mean = None if group_scores is None else np.asarray(group_scores, dtype=np.float32).reshape(1, -1)
    k = min(k, groups.n_documents)
    if scoring.method != "topm":
        doc_scores = score_documents(scores, groups, scoring, mean)[0]
        best = _top(doc_scores, np.arange(groups.n_documents), k)
        chosen = [(int(d), float(doc_scores[d])) for d in best]
    else:
        chosen = _top_bounded(scores, groups, scoring, k)
    shown = len(chosen) if evidence_documents is None else min(len(chosen), evidence_documents)
    with_chunks = [
        RankedDocument(document=d, score=s, chunks=_best_chunks(scores, chunks, evidence))
        for (d, s), chunks in zip(chosen[:shown], document_chunks(groups, [d for d, _ in chosen[:shown]]), strict=True)
    ]
    return with_chunks + [RankedDocument(document=d, score=s, chunks=[]) for d, s in chosen[shown:]]


def _top(values: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.int64]:
    """The `k` ids with the highest values, best first, ties by id."""
    if k < len(values):
        # Keep every value tied with the k-th so the tie-break below sees them all.
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth
        values, ids = values[keep], ids[keep]
    order = np.lexsort((ids, -values.astype(np.float64)))[:k]
    return ids[order]


def _best_chunks(scores: npt.NDArray[np.float32], chunks: npt.NDArray[np.int64], evidence: int) -> list[int]:
    if evidence <= 0:
        return []
    order = np.lexsort((chunks, -scores[chunks].astype(np.float64)))[:evidence]
    return [int(c) for c in chunks[order]]


def _top_bounded(
    scores: npt.NDArray[np.float32], groups: ChunkGroups, scoring: DocumentScoring, k: int
) -> list[tuple[int, float]]:
    bound = score_documents(scores, groups, DocumentScoring(method="max"))[0].astype(np.float64)
    by_bound = np.lexsort((np.arange(groups.n_documents), -bound))
    exact: dict[int, float] = {}
    batch = max(4 * k, 32)
    done = 0
    while done < groups.n_documents:
        todo = by_bound[done : done + batch]
        done += len(todo)
        chunk_lists = document_chunks(groups, todo)
        index = np.concatenate(chunk_lists)
        keys = np.repeat(todo, [len(c) for c in chunk_lists])
        sub = ChunkGroups.build(keys.tolist(), groups.group_size[groups.chunk_group[index]].tolist())
        values = score_documents(scores[index], sub, scoring)[0]
        # `sub` numbers documents in order of first appearance, which is the order of `todo`.
        exact.update(zip(todo.tolist(), values.tolist(), strict=True))
        batch *= 2
        if len(exact) >= k and done < groups.n_documents:
            kth = sorted(exact.values(), reverse=True)[k - 1]
            if kth > bound[by_bound[done]]:
                break
    ids = np.fromiter(exact, np.int64, len(exact))
    values = np.fromiter(exact.values(), np.float32, len(exact))
    best = _top(values, ids, k)
    return [(int(d), exact[int(d)]) for d in best]
