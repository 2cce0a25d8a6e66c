"""LlamaIndex embeddings with length-routed attention temperature (TempScale), from tempscale-rag."""

from .base import DEFAULT_GPU_BATCH_SIZE, DEFAULT_TEMPSCALE_BATCH_SIZE, TempScaleEmbedding

__all__ = ["DEFAULT_GPU_BATCH_SIZE", "DEFAULT_TEMPSCALE_BATCH_SIZE", "TempScaleEmbedding"]
