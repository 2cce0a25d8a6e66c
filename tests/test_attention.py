"""TempScale exactness: the patched fast path equals an independent eager reference of the paper's formula.

Reference: `softmax((Q K^T / sqrt(d) + bias + mask) / tau)`, and `softmax((Q K^T + bias + mask) / tau)` for T5, written
here from the modules' own projections. Tiny random-weight models stand in for architectures without offline
weights; BERT also runs on the real bundled model.
"""

from __future__ import annotations

import importlib
import math
import types
from typing import Any

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from tempscale_rag import TempScaleEncoder, UnsupportedArchitectureError, patch_attention_temperature
from tempscale_rag.models import bundled_model_path, transformer_model

from .conftest import MIXED_TEXTS, load_tiny

TAUS = (0.5, 0.8, 1.0, 1.3)
EAGER_MODULES = {
    "bert": "transformers.models.bert.modeling_bert",
    "roberta": "transformers.models.roberta.modeling_roberta",
    "xlm-roberta": "transformers.models.xlm_roberta.modeling_xlm_roberta",
    "distilbert": "transformers.models.distilbert.modeling_distilbert",
    "t5": "transformers.models.t5.modeling_t5",
}


def _additive(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.zeros((), dtype=like.dtype)
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, torch.finfo(like.dtype).min).to(like.dtype)
    return mask


def _reference_attention(tau: float, t5: bool) -> Any:
    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        position_bias: torch.Tensor | None = None,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = query @ key.transpose(-1, -2)
        if not t5:
            scores = scores / math.sqrt(query.shape[-1])
        if position_bias is not None:
            scores = scores + position_bias
        scores = scores + _additive(attention_mask, scores)
        probs = torch.softmax(scores / tau, dim=-1)
        return (probs @ value).transpose(1, 2).contiguous(), probs

    return attention


def _mpnet_reference_forward(tau: float) -> Any:
    def forward(
        self: torch.nn.Module,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        **_: Any,
    ) -> tuple[torch.Tensor, ...]:
        shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
        q = self.q(hidden_states).view(shape).transpose(1, 2)
        k = self.k(hidden_states).view(shape).transpose(1, 2)
        v = self.v(hidden_states).view(shape).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.attention_head_size)
        if position_bias is not None:
            scores = scores + position_bias
        scores = scores + _additive(attention_mask, scores)
        probs = torch.softmax(scores / tau, dim=-1)
        c = (probs @ v).permute(0, 2, 1, 3).reshape(*hidden_states.shape[:-1], -1)
        return (self.o(c),)

    return forward


def _reference_embeddings(
    st: SentenceTransformer, arch: str, tau: float, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> np.ndarray:
    """Encode with an unpatched eager model whose attention is replaced by the reference formula."""
    model = transformer_model(st)
    with monkeypatch.context() as m:
        if arch == "mpnet":
            for module in model.modules():
                if type(module).__name__ == "MPNetSelfAttention":
                    m.setattr(module, "forward", types.MethodType(_mpnet_reference_forward(tau), module))
        else:
            m.setattr(
                importlib.import_module(EAGER_MODULES[arch]),
                "eager_attention_forward",
                _reference_attention(tau, t5=arch == "t5"),
            )
        return st.encode(texts, batch_size=len(texts), convert_to_numpy=True)


@pytest.mark.parametrize("arch", ["bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "t5"])
def test_fast_path_matches_reference_formula(arch: str, tiny_model_dir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tiny_model_dir(arch)
    fast = load_tiny(folder)  # default attention (SDPA where the architecture has it)
    reference = load_tiny(folder, attn_implementation="eager")
    window = min(fast.max_seq_length or 128, 120)
    fast.max_seq_length = reference.max_seq_length = window
    texts = list(MIXED_TEXTS)
    engine = TempScaleEncoder(fast, temperature=1.0, max_seq_length=window, device="cpu", normalize=False)
    for tau in TAUS:
        ours = engine.with_config(temperature=tau).encode(texts)
        ref = _reference_embeddings(reference, arch, tau, texts, monkeypatch)
        assert np.abs(ours - ref).max() <= 1e-5, f"{arch} tau={tau}: max abs diff {np.abs(ours - ref).max():.2e}"
    if arch in ("bert", "roberta", "xlm-roberta", "distilbert", "t5"):
        assert transformer_model(fast).config._attn_implementation == "sdpa", "the fused kernel must stay in use"


def test_bundled_model_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = SentenceTransformer(bundled_model_path(), device="cpu")
    reference = SentenceTransformer(bundled_model_path(), device="cpu", model_kwargs={"attn_implementation": "eager"})
    texts = list(MIXED_TEXTS)
    engine = TempScaleEncoder(fast, temperature=1.0, max_seq_length=512, device="cpu")
    fast.max_seq_length = reference.max_seq_length = 512
    for tau in TAUS:
        ours = engine.with_config(temperature=tau).encode(texts)
        ref = _reference_embeddings(reference, "bert", tau, texts, monkeypatch)
        assert np.abs(ours - ref).max() <= 1e-5


def test_tau_one_equals_unpatched_and_remove_restores(tiny_model_dir: Any) -> None:
    st = load_tiny(tiny_model_dir("mpnet"))
    texts = MIXED_TEXTS[:4]
    before = st.encode(texts, convert_to_numpy=True)
    patch = patch_attention_temperature(transformer_model(st), 1.0)
    np.testing.assert_array_equal(st.encode(texts, convert_to_numpy=True), before)
    patch.set(0.5)
    changed = st.encode(texts, convert_to_numpy=True)
    # Random tiny weights give small logits, so the change is small but far above float noise.
    assert np.abs(changed - before).max() > 1e-4, "tau = 0.5 must change the embeddings"
    patch.remove()
    np.testing.assert_array_equal(st.encode(texts, convert_to_numpy=True), before)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_tau_is_rejected(tiny_model_dir: Any, tau: float) -> None:
    st = load_tiny(tiny_model_dir("bert"))
    with pytest.raises(ValueError, match="finite number > 0"):
        patch_attention_temperature(transformer_model(st), tau)
    patch = patch_attention_temperature(transformer_model(st), 1.0)
    with pytest.raises(ValueError, match="finite number > 0"):
        patch.set(tau)
    patch.remove()


def test_unsupported_architecture_names_itself() -> None:
    from transformers import GPT2Config, GPT2Model

    model = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(UnsupportedArchitectureError, match=r"GPT2Model.*supported model types: bert"):
        patch_attention_temperature(model, 0.8)


def test_double_patch_is_refused(tiny_model_dir: Any) -> None:
    st = load_tiny(tiny_model_dir("bert"))
    patch = patch_attention_temperature(transformer_model(st), 0.9)
    with pytest.raises(ValueError, match="already carries"):
        patch_attention_temperature(transformer_model(st), 0.9)
    patch.remove()
    patch_attention_temperature(transformer_model(st), 0.9).remove()
