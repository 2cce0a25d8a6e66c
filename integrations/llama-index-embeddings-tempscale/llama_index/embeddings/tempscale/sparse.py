"""BM25 sparse vectors for LlamaIndex's `QdrantVectorStore(enable_hybrid=True)`, with no model download."""

from __future__ import annotations

from typing import Any

from tempscale_rag.ranking.lexical import SparseEncoder, qdrant_sparse_params


class TempScaleSparseEncoder:
    """BM25 term weights for `QdrantVectorStore(sparse_doc_fn=..., sparse_query_fn=..., sparse_config=...)`.

    LlamaIndex's default sparse model (SPLADE through fastembed) downloads weights from a hub; this one needs nothing
    and analyses text like tempscale-rag's own lexical index (bm25s English stop words, Snowball stemming)::

        sparse = TempScaleSparseEncoder()
        store = QdrantVectorStore(client=client, collection_name="docs", enable_hybrid=True,
                                  sparse_doc_fn=sparse.documents, sparse_query_fn=sparse.queries,
                                  sparse_config=sparse.qdrant_params())

    Args:
        avg_len: Average length, in analysed terms, of the chunks you index (BM25's length pivot).
        k1: Term-frequency saturation.
        b: Length normalisation.
    """

    def __init__(self, avg_len: float = 256.0, k1: float = 1.5, b: float = 0.75) -> None:
        self._encoder = SparseEncoder(avg_len=avg_len, k1=k1, b=b)

    def documents(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        """`sparse_doc_fn`: (ids per text, values per text)."""
        return self._encoder.documents(texts)

    def queries(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        """`sparse_query_fn`: (ids per query, values per query)."""
        return self._encoder.queries(texts)

    @staticmethod
    def qdrant_params() -> Any:
        """`sparse_config`: Qdrant's sparse vector parameters with the IDF modifier, so the score is BM25."""
        return qdrant_sparse_params()
