"""Adapter defaults that depend on the device: LlamaIndex hands the engine more texts per call on a GPU."""

from __future__ import annotations

import pytest
import torch

from tempscale_rag import TempScaleEncoder


def test_llamaindex_batch_size_on_cpu_and_explicit(encoder: TempScaleEncoder) -> None:
    from llama_index.embeddings.tempscale import DEFAULT_TEMPSCALE_BATCH_SIZE, TempScaleEmbedding

    assert TempScaleEmbedding.from_encoder(encoder).embed_batch_size == DEFAULT_TEMPSCALE_BATCH_SIZE
    # Above LlamaIndex's usual 2048 cap: the engine batches by tokens, so large slices only save per-call overhead.
    assert TempScaleEmbedding.from_encoder(encoder, embed_batch_size=32768).embed_batch_size == 32768


@pytest.mark.gpu
def test_llamaindex_batch_size_on_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from llama_index.embeddings.tempscale import DEFAULT_GPU_BATCH_SIZE, TempScaleEmbedding

    embedding = TempScaleEmbedding(device="cuda")
    assert embedding.embed_batch_size == DEFAULT_GPU_BATCH_SIZE
    assert TempScaleEmbedding.from_encoder(embedding._encoder, embed_batch_size=512).embed_batch_size == 512
