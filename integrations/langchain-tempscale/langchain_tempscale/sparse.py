"""BM25 sparse embeddings for langchain-qdrant's hybrid retrieval, with no model download."""

from __future__ import annotations

try:
    from langchain_qdrant import SparseEmbeddings, SparseVector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "TempScaleSparseEmbeddings plugs into langchain-qdrant: pip install 'langchain-tempscale[qdrant]'"
    ) from exc

from tempscale_rag.ranking.lexical import SparseEncoder, qdrant_sparse_params


class TempScaleSparseEmbeddings(SparseEmbeddings):
    """BM25 term weights as Qdrant sparse vectors, for `QdrantVectorStore(retrieval_mode=RetrievalMode.HYBRID)`.

    The same analyser as tempscale-rag's own lexical index (bm25s English stop words, Snowball stemming), offline.
    Create the collection with `sparse_vectors_config={name: TempScaleSparseEmbeddings.qdrant_params()}` so Qdrant
    applies the IDF (langchain-qdrant's `from_texts` creates sparse vectors without it: term frequency only).

    Args:
        avg_len: Average length, in analysed terms, of the texts you index (BM25's length pivot).
        k1: Term-frequency saturation.
        b: Length normalisation.
    """

    def __init__(self, avg_len: float = 256.0, k1: float = 1.5, b: float = 0.75) -> None:
        self._encoder = SparseEncoder(avg_len=avg_len, k1=k1, b=b)

    @staticmethod
    def qdrant_params() -> object:
        """`models.SparseVectorParams` with the IDF modifier, for the collection's sparse vector."""
        return qdrant_sparse_params()

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """BM25 document vectors, one per text."""
        return [SparseVector(indices=ids, values=values) for ids, values in map(self._encoder.document, texts)]

    def embed_query(self, text: str) -> SparseVector:
        """The query's terms with their counts."""
        ids, values = self._encoder.query(text)
        return SparseVector(indices=ids, values=values)
