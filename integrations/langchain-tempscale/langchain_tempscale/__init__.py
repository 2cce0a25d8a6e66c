"""LangChain embeddings with length-routed attention temperature (TempScale), from tempscale-rag."""

from langchain_tempscale.embeddings import TempScaleEmbeddings

__all__ = ["TempScaleEmbeddings"]
