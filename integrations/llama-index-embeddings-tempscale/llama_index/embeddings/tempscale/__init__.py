"""LlamaIndex embeddings with length-routed attention temperature (TempScale), from tempscale-rag."""

from .base import DEFAULT_GPU_BATCH_SIZE, DEFAULT_TEMPSCALE_BATCH_SIZE, TempScaleEmbedding
from .sparse import TempScaleSparseEncoder

__all__ = ["DEFAULT_GPU_BATCH_SIZE", "DEFAULT_TEMPSCALE_BATCH_SIZE", "TempScaleEmbedding", "TempScaleSparseEncoder"]
