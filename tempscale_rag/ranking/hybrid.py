"""Hybrid retrieval: the dense (TempScale vectors) and lexical (BM25) channels of a store, fused per query.

Written once for every store and for the evaluator. Each channel ranks on its own:

- dense: chunks by cosine, documents by the index's aggregation of their chunks (`tempscale_rag.ranking.candidates`);
- lexical: chunks of the lexical size by BM25 (`LexicalSource.lexical_chunks`); documents by two lists, each
  document's best such chunk and BM25 over the whole document (`lexical_documents`, its lexical chunks' terms).

Document search fuses three lists: dense, best lexical chunk, whole document. Measured on the shared sets
(research/hybrid/fused*.log), the whole-document list adds most where the chunk list is weakest (QMSum summaries:
dense + best chunk 82.9, + whole document 88.6 with one 499-token size), and the two lexical lists fused beat either.

Each channel's best `depth` results are normalised on their own list (distribution-based score fusion by default,
see `tempscale_rag.ranking.fusion`) and added with the channels' weights; a result one channel did not return gets
that channel's lowest listed score. Fusing the channels' top lists, not every document, is what every backend can do
(a vector database returns top lists) and keeps the normalisation about the head of each ranking, where it matters.

`retrieval` selects `hybrid` (both, the default), `dense` or `lexical`. A query without lexical terms (only stop
words) or a store without a lexical channel gives the dense ranking.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import RETRIEVALS, LexicalSettings, Retrieval
from tempscale_rag.ranking.candidates import DocumentSource, Ranked, rank_ranked, rescored, with_evidence
from tempscale_rag.ranking.documents import DocumentScoring
from tempscale_rag.ranking.fusion import FusionMethod, check_fusion, normalise
from tempscale_rag.ranking.lexical import SparseVector
from tempscale_rag.stores.base import DocumentHit, SearchHit

DEFAULT_FUSION_DEPTH = 1000
"""Results of each channel that take part in the fusion. Measured (research/hybrid/fused.log): on QMSum (197
meetings) fusing every document beats fusing each channel's best 100 by 2.1 nDCG@10 and its best 50 by 2.5; 1000
covers every document of the shared sets while keeping the normalisation to the head of a large corpus."""

LEXICAL_OVERFETCH = 10
"""An approximate store's lexical chunks fetched per wanted document (documents repeat among the best chunks)."""


def check_retrieval(retrieval: str) -> Retrieval:
    """Return `retrieval` if it is one of `RETRIEVALS`, else raise ValueError naming them."""
    if retrieval not in RETRIEVALS:
        raise ValueError(f"unknown retrieval {retrieval!r}; choose one of {', '.join(RETRIEVALS)}")
    return retrieval  # type: ignore[return-value]


@dataclass(frozen=True)
class Fusion:
    """How the channels are combined.

    Attributes:
        retrieval: `hybrid` (fuse both channels), `dense` or `lexical` (one channel alone).
        method: The per-list normalisation (`dbsf`, `minmax` or `rrf`).
        lexical_weight: Weight of the lexical list; the dense list weighs 1.
        depth: Results of each channel fused (documents for document search, chunks for chunk search).
    """

    retrieval: Retrieval = "hybrid"
    method: FusionMethod = "dbsf"
    lexical_weight: float = 1.0
    depth: int = DEFAULT_FUSION_DEPTH

    def __post_init__(self) -> None:
        check_retrieval(self.retrieval)
        check_fusion(self.method)
        if not np.isfinite(self.lexical_weight) or self.lexical_weight < 0:
            raise ValueError(f"lexical_weight must be a finite number >= 0, got {self.lexical_weight!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"fusion depth must be an integer >= 1, got {self.depth!r}")


class LexicalSource(Protocol):
    """What the lexical channel needs from a store (FAISS: SQLite postings; Qdrant: sparse vectors)."""

    @property
    def lexical(self) -> LexicalSettings | None:
        """The store's lexical channel, None when it has none."""

    def lexical_chunks(
        self, query: SparseVector, n: int | None
    ) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float32]]:
        """(keys, BM25 scores) of the best `n` lexical chunks (None: every matching one), best first."""

    def lexical_documents(
        self, query: SparseVector, n: int | None
    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]:
        """(sources, whole-document BM25 scores) of the best `n` documents (None: every matching one), best first."""


class HybridSource(DocumentSource, LexicalSource, Protocol):
    """A store with both channels: `DocumentSource` for dense ranking, `LexicalSource` for BM25."""

    def search_many(self, query_vectors: npt.ArrayLike, k: int = 10) -> list[list[SearchHit]]:
        """The `k` best chunks of each query by cosine."""

    def dense_chunks(
        self, query_vectors: npt.ArrayLike, n: int
    ) -> list[tuple[npt.NDArray[np.generic], npt.NDArray[np.float32]]]:
        """(keys, scores) of the best `n` chunks of each query by cosine, best first; the keys of `evidence_hits`."""


def has_lexical(store: object) -> bool:
    """Whether `store` has a lexical channel."""
    return getattr(store, "lexical", None) is not None


def has_whole_documents(store: object) -> bool:
    """Whether `store`'s lexical channel also ranks whole documents (`LexicalSettings.document_pivot`)."""
    settings = getattr(store, "lexical", None)
    return settings is not None and settings.document_pivot is not None and hasattr(store, "lexical_documents")


RankedList = Sequence[tuple[Hashable, float]]


def fuse_ranked(
    dense: RankedList, lexical: RankedList, fusion: Fusion, whole: RankedList = ()
) -> list[tuple[Hashable, float]]:
    """Fuse ranked lists (best first) into one: the fusion rule of every store and of the evaluator.

    Args:
        dense: The dense channel's (key, score) list, best first.
        lexical: The lexical channel's (key, score) list, best first (empty: no lexical terms).
        fusion: The method, the lexical weight and the depth (each list is cut to `depth` first).
        whole: Document search only: whole-document BM25's (key, score) list, a second lexical list.

    Returns:
        (key, fused score), best first; ties keep the dense list's order, then the lexical lists'. One non-empty
        list of those `fusion.retrieval` selects is returned with its own scores.
    """
    picked = {
        "hybrid": [(dense, 1.0), (lexical, fusion.lexical_weight), (whole, fusion.lexical_weight)],
        "dense": [(dense, 1.0)],
        "lexical": [(lexical, 1.0), (whole, 1.0)],
    }[fusion.retrieval]
    lists = [(list(ranked)[: fusion.depth], weight) for ranked, weight in picked if ranked]
    if not lists:
        return []
    if len(lists) == 1:
        return [(key, float(score)) for key, score in lists[0][0]]
    keys = list(dict.fromkeys(key for ranked, _ in lists for key, _ in ranked))
    total = np.zeros(len(keys), dtype=np.float64)
    for ranked, weight in lists:
        scores = np.array([score for _, score in ranked], dtype=np.float64)
        listed = dict(zip([key for key, _ in ranked], normalise(scores, fusion.method).tolist(), strict=True))
        # Absent from a list: that list's lowest listed score (no term matched / below the dense cut).
        floor = min(listed.values())
        total += weight * np.array([listed.get(key, floor) for key in keys])
    order = np.argsort(-total, kind="stable")
    return [(keys[i], float(total[i])) for i in order]


def lexical_documents(store: HybridSource, query: SparseVector, depth: int) -> list[tuple[str, float, Hashable]]:
    """The lexical channel's documents for one query: (source, best chunk's BM25, that chunk's key), best first.

    An exact store scores every matching chunk and maps keys to documents through its chunk table; an approximate
    one reads the sources of its `depth * LEXICAL_OVERFETCH` best chunks.
    """
    if not query[0]:
        return []
    if store.candidate_policy is None:
        keys, scores = store.lexical_chunks(query, None)
        table = store.document_table(None)
        if table is None or keys.size == 0:
            return []
        numbers = table.documents_of(keys)
        sources = [None if d < 0 else table.groups.documents[d] for d in numbers.tolist()]
    else:
        keys, scores = store.lexical_chunks(query, depth * LEXICAL_OVERFETCH)
        hits = store.evidence_hits(keys.tolist()) if keys.size else {}
        sources = [hits[key].source if key in hits else None for key in keys.tolist()]
    out: list[tuple[str, float, Hashable]] = []
    seen: set[str] = set()
    for key, score, source in zip(keys.tolist(), scores.tolist(), sources, strict=True):
        if source is None or source in seen:
            continue
        seen.add(str(source))
        out.append((str(source), float(score), key))
        if len(out) == depth:
            break
    return out


def search_documents_hybrid(
    store: HybridSource,
    query_vectors: npt.NDArray[np.float32],
    sparse_queries: Sequence[SparseVector],
    k: int,
    scoring: DocumentScoring,
    evidence: int,
    fusion: Fusion,
) -> list[list[DocumentHit]]:
    """Document search with the channels of `fusion.retrieval`, for validated queries (see `search_documents_many`).

    A fused document's evidence is its best dense chunks; a document only the lexical channel found shows its best
    lexical chunk. `DocumentHit.score` is the fused score (the channel's own score with one channel).
    """
    lexical_on = fusion.retrieval != "dense" and has_lexical(store)
    if fusion.retrieval == "lexical" and not has_lexical(store):
        raise ValueError("this index has no lexical channel; search it with retrieval 'dense' or 'hybrid'")
    depth = max(k, fusion.depth) if lexical_on else k  # dense alone: exactly `search_documents_many`
    dense: list[Ranked] = (
        # Evidence for the dense top k only: a fused top-k document below it is one the lexical list found (a
        # document absent from that list is beaten by the k dense ones), shown with its best lexical chunk.
        rank_ranked(store, query_vectors, depth, scoring, evidence, evidence_documents=k)
        if fusion.retrieval != "lexical"
        else [[] for _ in range(len(sparse_queries))]
    )
    whole_on = lexical_on and has_whole_documents(store)
    out: list[Ranked] = []
    for dense_docs, sparse in zip(dense, sparse_queries, strict=True):
        lexical = lexical_documents(store, sparse, depth) if lexical_on else []
        whole = store.lexical_documents(sparse, depth) if whole_on and sparse[0] else ((), ())
        fused = fuse_ranked(
            [(source, score) for source, score, _, _ in dense_docs],
            [(source, score) for source, score, _ in lexical],
            Fusion(fusion.retrieval, fusion.method, fusion.lexical_weight, depth),
            [(str(source), float(score)) for source, score in zip(whole[0], whole[1], strict=True)],
        )[:k]
        by_dense = {source: (keys, scores) for source, _, keys, scores in dense_docs}
        by_lexical = {source: (key, score) for source, score, key in lexical}
        ranked: Ranked = []
        for source, score in fused:
            if source in by_dense and (len(by_dense[str(source)][0]) or source not in by_lexical):
                keys, scores = by_dense[str(source)]
                ranked.append((str(source), score, keys, scores))
            elif source not in by_lexical:
                # Found by the whole-document list alone (its best chunk below the chunk list's depth): no evidence.
                ranked.append((str(source), score, np.empty(0, dtype=object), np.empty(0, dtype=np.float32)))
            else:
                key, lexical_score = by_lexical[str(source)]
                keys = np.array([key][:evidence], dtype=object)
                ranked.append((str(source), score, keys, np.array([lexical_score][:evidence], dtype=np.float32)))
        out.append(ranked)
    return with_evidence(store, out)


def search_chunks_hybrid(
    store: HybridSource,
    query_vectors: npt.NDArray[np.float32],
    sparse_queries: Sequence[SparseVector],
    k: int,
    fusion: Fusion,
) -> list[list[SearchHit]]:
    """Chunk search with the channels of `fusion.retrieval`: each channel's best `depth` chunks, fused, best `k`.

    The channels' lists are fused on chunk keys and scores alone; only the fused top `k` chunks' records are read
    (a store's record lookup, texts included, costs more than both searches). `SearchHit.score` is the fused score
    (the channel's own score with one channel).
    """
    lexical_on = fusion.retrieval != "dense" and has_lexical(store)
    if fusion.retrieval == "lexical" and not has_lexical(store):
        raise ValueError("this index has no lexical channel; search it with retrieval 'dense' or 'hybrid'")
    depth = max(k, fusion.depth)
    if fusion.retrieval == "dense" or not lexical_on:
        return [hits[:k] for hits in store.search_many(query_vectors, k)]
    empty = (np.empty(0, dtype=object), np.empty(0, dtype=np.float32))
    dense = store.dense_chunks(query_vectors, depth) if fusion.retrieval != "lexical" else [empty] * len(sparse_queries)
    out: list[list[SearchHit]] = []
    for (dense_keys, dense_scores), sparse in zip(dense, sparse_queries, strict=True):
        keys, scores = store.lexical_chunks(sparse, depth) if sparse[0] else empty
        fused = fuse_ranked(
            list(zip(dense_keys.tolist(), dense_scores.tolist(), strict=True)),
            list(zip(keys.tolist(), scores.tolist(), strict=True)),
            Fusion(fusion.retrieval, fusion.method, fusion.lexical_weight, depth),
        )
        out.append(_fused_hits(store, fused, k))
    return out


def _fused_hits(store: HybridSource, fused: list[tuple[Hashable, float]], k: int) -> list[SearchHit]:
    """The records of the first `k` fused keys that still exist, with their fused scores.

    A key without a record was deleted by a writer after this reader opened; the next keys take its place.
    """
    out: list[SearchHit] = []
    start = 0
    while len(out) < k and start < len(fused):
        part = fused[start : start + k - len(out)]
        start += len(part)
        records = store.evidence_hits([key for key, _ in part])
        out.extend(rescored(records[key], score) for key, score in part if key in records)
    return out
