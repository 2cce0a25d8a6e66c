"""Document search over any store: `search_documents` and `search_documents_many`, and the aggregation in force.

Search an index's documents with the index's own aggregation::

    from tempscale_rag.ranking import document_scoring, search_documents
    scoring = document_scoring(None, manifest.chunking)          # the index's aggregation and parameters
    for hit in search_documents(store, query_vector, k=5, scoring=scoring):
        print(hit.source, hit.score, hit.chunks[0].text)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import ChunkingConfig
from tempscale_rag.ranking.candidates import DocumentSource, rank_source
from tempscale_rag.ranking.documents import DocumentScoring, check_doc_score
from tempscale_rag.stores.base import DocumentHit, as_query_matrix, check_k

DEFAULT_EVIDENCE = 3
"""Best chunks returned with each document."""


def check_evidence(evidence: int) -> int:
    """Return `evidence` (chunks shown per document) if it is an int >= 0, else raise."""
    if isinstance(evidence, bool) or not isinstance(evidence, int | np.integer) or evidence < 0:
        raise ValueError(f"evidence must be an integer >= 0 (chunks returned per document), got {evidence!r}")
    return int(evidence)


def document_scoring(
    doc_score: str | DocumentScoring | None = None, chunking: ChunkingConfig | None = None
) -> DocumentScoring:
    """Resolve an aggregation: a name, a `DocumentScoring`, or None for the index's default.

    Args:
        doc_score: One of `DOC_SCORES`, a `DocumentScoring` (returned as is), or None for `chunking.doc_score`
            (`max` without chunking).
        chunking: The index's chunking (its manifest's `chunking`); gives the default name, `top_m` and the softmax T.

    Raises:
        ValueError: If the name is not one of `DOC_SCORES`.
        TypeError: If `doc_score` is neither a str, a `DocumentScoring` nor None.
    """
    if isinstance(doc_score, DocumentScoring):
        return doc_score
    options: dict[str, Any] = {}
    for name in ("top_m", "softmax_temperature"):
        value = getattr(chunking, name, None)
        if value is not None:
            options[name] = value
    if doc_score is None:
        doc_score = chunking.doc_score if chunking is not None else "max"
    if not isinstance(doc_score, str):
        raise TypeError(f"doc_score must be a str, a DocumentScoring or None, got {type(doc_score).__name__}")
    return DocumentScoring(method=check_doc_score(doc_score), **options)


def search_documents_many(
    store: DocumentSource,
    query_vectors: npt.ArrayLike,
    k: int = 10,
    *,
    scoring: str | DocumentScoring | None = None,
    evidence: int = DEFAULT_EVIDENCE,
) -> list[list[DocumentHit]]:
    """The `k` stored documents (sources) that score best for each query, best first.

    A document is scored from its chunks (see `tempscale_rag.ranking.documents`): each (document, chunk size) group is
    aggregated by `scoring`, and the document's score is the mean over its groups. Every returned score equals that
    formula over all of the document's chunks: an exact store (FAISS flat) scores every chunk; approximate ones (HNSW,
    Qdrant) rescore candidate documents exactly (see `tempscale_rag.ranking.candidates`).

    Args:
        store: An open store (`FaissStore`, `QdrantStore`).
        query_vectors: A matrix of shape (n, dimension), L2-normalised.
        k: How many documents per query at most.
        scoring: A `DocumentScoring`, one of `DOC_SCORES` (default parameters), or None for `max`; use
            `document_scoring(name, manifest.chunking)` for an index's own aggregation.
        evidence: How many of each document's best chunks to return with it (0 for none).

    Returns:
        One list of up to `k` documents per query, best first, in query order.

    Raises:
        ValueError: On k < 1, an unknown aggregation, a negative `evidence` or a wrong query shape.
        RuntimeError: If the store is closed.
    """
    if store.closed:
        raise RuntimeError(f"this {type(store).__name__} is closed; open the index again")
    k = check_k(k)
    resolved = document_scoring(scoring)
    evidence = check_evidence(evidence)
    queries = as_query_matrix(query_vectors, store.dimension)
    if queries.shape[0] == 0:
        return []
    return rank_source(store, queries, k, resolved, evidence)


def search_documents(
    store: DocumentSource,
    query_vector: npt.ArrayLike,
    k: int = 10,
    *,
    scoring: str | DocumentScoring | None = None,
    evidence: int = DEFAULT_EVIDENCE,
) -> list[DocumentHit]:
    """The `k` documents that score best for one query (see `search_documents_many`).

    Args:
        store: An open store.
        query_vector: A 1-D vector of the store's dimension (L2-normalised).
        k: How many documents at most.
        scoring: The aggregation (see `search_documents_many`).
        evidence: Best chunks returned per document.

    Returns:
        Up to `k` documents, best first.
    """
    query = as_query_matrix(query_vector, store.dimension)
    if query.shape[0] != 1:
        raise ValueError(
            f"search_documents takes one query vector; use search_documents_many for {query.shape[0]} queries"
        )
    return search_documents_many(store, query, k, scoring=scoring, evidence=evidence)[0]
