"""LangChain embeddings with length-routed attention temperature (TempScale), from tempscale-rag.

`TempScaleSparseEmbeddings` (BM25 sparse vectors for langchain-qdrant's hybrid mode) needs the `qdrant` extra and is
imported on first use.
"""

from typing import Any

from langchain_tempscale.embeddings import TempScaleEmbeddings

__all__ = ["TempScaleEmbeddings", "TempScaleSparseEmbeddings"]


def __getattr__(name: str) -> Any:
    if name == "TempScaleSparseEmbeddings":
        from langchain_tempscale.sparse import TempScaleSparseEmbeddings

        return TempScaleSparseEmbeddings
    raise AttributeError(f"module 'langchain_tempscale' has no attribute {name!r}")
