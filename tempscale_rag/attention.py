"""TempScale: divide the self-attention logits of a loaded model by a temperature tau, reversibly.

The reference formula (arXiv 2410.24200) is `A = softmax((Q K^T / sqrt(d) + bias + mask) / tau)`; for T5 encoders
`A = softmax((Q K^T + bias + mask) / tau)`. Dividing the additive mask by tau changes nothing (it stays a huge
negative), so the formula equals `softmax(Q K^T * scale / tau + bias / tau + mask)`, which is what is patched here:

- BERT-family models (BERT, RoBERTa, XLM-RoBERTa, DistilBERT) in transformers 5 pass each attention module's
  `scaling` attribute into the fused kernel as `scale=`; setting `scaling = head_dim**-0.5 / tau` is exact and free,
  and SDPA stays in use.
- T5 encoders carry `scaling = 1.0` the same way and add a relative-position bias computed once by the first layer's
  `relative_attention_bias` embedding and reused by every layer; that embedding's output is divided by tau.
- MPNet computes attention eagerly with its own relative-position bias: the query projection's output and the
  encoder's `relative_attention_bias` output are both divided by tau (forward hooks, so no weight is modified).

`AttentionTemperature.set(tau)` changes tau in place between forward passes at the cost of a few attribute writes,
which is how the encoder gives each length bucket its own temperature without reloading anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tempscale_rag.config import check_tau

_SCALING_FAMILIES = {
    "bert": "BERT",
    "roberta": "RoBERTa",
    "xlm-roberta": "XLM-RoBERTa",
    "distilbert": "DistilBERT",
}
SUPPORTED_ARCHITECTURES: tuple[str, ...] = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "t5")
"""`config.model_type` values TempScale can patch exactly."""


class UnsupportedArchitectureError(ValueError):
    """Raised when a model's attention cannot be temperature-scaled exactly."""


@dataclass
class AttentionTemperature:
    """A TempScale patch on one transformers model; `set()` changes tau, `remove()` restores the model exactly.

    Create it with `patch_attention_temperature`. It is also a context manager that removes itself on exit.
    """

    model: nn.Module
    architecture: str
    tau: float = 1.0
    _scaled_modules: list[tuple[nn.Module, float]] = field(default_factory=list, repr=False)
    _hooks: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list, repr=False)
    _removed: bool = field(default=False, repr=False)

    def set(self, tau: float) -> None:
        """Use temperature `tau` (> 0, finite) for every following forward pass.

        Raises:
            ValueError: If tau is not a finite number > 0, or the patch was removed.
        """
        if self._removed:
            raise ValueError("this TempScale patch was removed; call patch_attention_temperature() again")
        tau = check_tau(tau)
        for module, base_scaling in self._scaled_modules:
            setattr(module, "scaling", base_scaling / tau)  # noqa: B010 - nn.Module's typed __setattr__
        self.tau = tau

    def remove(self) -> None:
        """Restore the model's original attention exactly (idempotent)."""
        if self._removed:
            return
        for module, base_scaling in self._scaled_modules:
            setattr(module, "scaling", base_scaling)  # noqa: B010 - nn.Module's typed __setattr__
        for hook in self._hooks:
            hook.remove()
        self._scaled_modules.clear()
        self._hooks.clear()
        self._removed = True
        self.model.__dict__.pop("_tempscale_patch", None)

    def __enter__(self) -> AttentionTemperature:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _divide_output(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        # A forward hook that returns None leaves the output alone: skipping the multiply keeps tau = 1 bit-exact.
        return None if self.tau == 1.0 else output / self.tau


def patch_attention_temperature(model: nn.Module, tau: float = 1.0) -> AttentionTemperature:
    """Apply TempScale to every self-attention layer of a transformers encoder.

    Args:
        model: A transformers `PreTrainedModel` (for a SentenceTransformer, its first module's `.model`).
        tau: Initial temperature; change it later with `AttentionTemperature.set`.

    Returns:
        The patch handle. The model is patched in place; `remove()` restores it exactly.

    Raises:
        UnsupportedArchitectureError: If the architecture is not one of `SUPPORTED_ARCHITECTURES`, or its attention
            modules do not look the way the exact patch needs (for example a remote-code model), rather than
            silently leaving the model unchanged.
        ValueError: If the model is already patched, or tau is not finite and > 0.
    """
    tau = check_tau(tau)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_ARCHITECTURES:
        architectures = getattr(config, "architectures", None) or [type(model).__name__]
        raise UnsupportedArchitectureError(
            f"TempScale cannot patch {'/'.join(architectures)} (model_type={model_type!r}); supported model types: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}. Use temperature=1.0 only if you do not need TempScale."
        )
    if "_tempscale_patch" in model.__dict__:
        raise ValueError("this model already carries a TempScale patch; reuse it or call remove() first")

    patch = AttentionTemperature(model=model, architecture=model_type)
    if model_type in _SCALING_FAMILIES:
        _patch_scaling(patch, model, attention_suffix="SelfAttention", expect_bias=False)
    elif model_type == "t5":
        _patch_scaling(patch, model, attention_suffix="Attention", expect_bias=True)
        _hook_relative_bias(patch, model)
    else:  # mpnet
        _patch_mpnet(patch, model)
    model.__dict__["_tempscale_patch"] = patch
    patch.set(tau)
    return patch


def _patch_scaling(patch: AttentionTemperature, model: nn.Module, *, attention_suffix: str, expect_bias: bool) -> None:
    attn_impl = getattr(model.config, "_attn_implementation", None)
    for module in model.modules():
        name = type(module).__name__
        # Skip cross-attention and T5's wrapper layers (T5LayerSelfAttention holds the T5Attention we want).
        if not name.endswith(attention_suffix) or "Cross" in name or "Layer" in name:
            continue
        scaling = getattr(module, "scaling", None)
        if not isinstance(scaling, float):
            raise UnsupportedArchitectureError(
                f"{name} has no float `scaling` attribute (transformers < 5, or a custom implementation with "
                f"attn_implementation={attn_impl!r}); TempScale needs transformers >= 5 for {patch.architecture}"
            )
        patch._scaled_modules.append((module, scaling))
    if not patch._scaled_modules:
        raise UnsupportedArchitectureError(
            f"found no *{attention_suffix} modules in {type(model).__name__}; this {patch.architecture} "
            "implementation is not one TempScale knows how to patch"
        )


def _hook_relative_bias(patch: AttentionTemperature, model: nn.Module) -> None:
    # T5 and MPNet compute the relative-position bias once per forward from an `nn.Embedding` and add it to every
    # layer's logits; dividing that embedding's output by tau divides the bias term of every layer exactly once.
    embeddings = [m for n, m in model.named_modules() if n.endswith("relative_attention_bias")]
    if not embeddings:
        raise UnsupportedArchitectureError(
            f"found no relative_attention_bias in {type(model).__name__}; cannot scale its position bias by 1/tau"
        )
    for embedding in embeddings:
        patch._hooks.append(embedding.register_forward_hook(patch._divide_output))


def _patch_mpnet(patch: AttentionTemperature, model: nn.Module) -> None:
    # MPNet has no `scaling` attribute and computes softmax(QK^T/sqrt(d) + bias + mask) eagerly: scaling the query
    # projection output scales QK^T, and the bias hook scales the bias, so the logits become (QK^T/sqrt(d) + bias)/tau.
    queries: list[nn.Module] = [m.q for m in model.modules() if type(m).__name__ == "MPNetSelfAttention"]  # type: ignore[misc]
    if not queries:
        raise UnsupportedArchitectureError("found no MPNetSelfAttention modules; this MPNet implementation is unknown")
    for q in queries:
        patch._hooks.append(q.register_forward_hook(patch._divide_output))
    _hook_relative_bias(patch, model)
