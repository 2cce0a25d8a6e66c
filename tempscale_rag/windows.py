"""The model window: what fits in it (`TokenCounter`) and how a longer text is cut into windows (`cut_windows`).

Both rules exist once. Chunkers take a `TokenCounter` (a tokenizer, the window and the tokens added to every document)
rather than an encoder, so chunking in a worker process needs only the tokenizer, not the model. `cut_windows` is the
encoder's long-text rule; the evaluator calls the same function to know what the encoder will embed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import LongTextPolicy
from tempscale_rag.tokenizing import rust_tokenizer_copy

if TYPE_CHECKING:
    from tempscale_rag.config import TempScaleConfig
    from tempscale_rag.encoder import TempScaleEncoder


class TokenCounter:
    """A model's tokenizer, window and per-document token overhead: all that chunking to the window needs.

    Build one from an engine (`from_encoder`), from a model name or path loading only its tokenizer (`from_model`,
    `from_config`), or from a serialised Rust tokenizer (`from_json`, for worker processes).

    Args:
        tokenizer: A Rust `tokenizers.Tokenizer` or a transformers tokenizer.
        window: Tokens the model sees at most, special tokens included.
        n_special: Tokens added to every document besides its text: the model's special tokens and the document
            prompt (`TempScaleEncoder.count_tokens([""])[0]`).

    Raises:
        ValueError: If the window leaves no room for text after `n_special`.
    """

    def __init__(self, tokenizer: Any, window: int, n_special: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"the window must be a positive number of tokens, got {window!r}")
        if isinstance(n_special, bool) or not isinstance(n_special, int) or not 0 <= n_special < window:
            raise ValueError(f"{n_special!r} special tokens leave no room for text in a {window}-token window")
        self.tokenizer = tokenizer
        self.window = window
        self.n_special = n_special
        self._rust = rust_tokenizer_copy(tokenizer)

    @property
    def capacity(self) -> int:
        """Content tokens that fit the window: the window minus special tokens and document prompt."""
        return self.window - self.n_special

    @property
    def tokenizer_json(self) -> str | None:
        """The Rust tokenizer as JSON (to rebuild this counter in another process), or None for a slow tokenizer."""
        return None if self._rust is None else str(self._rust.to_str())

    def ids(self, text: str) -> list[int]:
        """Token ids of `text` alone: no special tokens, no prompt, no truncation."""
        # Chunkers call this once per split: the Rust tokenizer directly is ~30% faster than the transformers
        # wrapper, with the same ids (so the same chunks).
        if self._rust is not None:
            return list(self._rust.encode(text, add_special_tokens=False).ids)
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def count(self, text: str) -> int:
        """Tokens the model sees for `text` as a document, untruncated (what `TempScaleEncoder.count_tokens` says)."""
        return self.n_special + len(self.ids(text))

    @classmethod
    def from_encoder(cls, encoder: TempScaleEncoder) -> TokenCounter:
        """The counter of an engine: its tokenizer, its window, its special tokens and document prompt."""
        tokenizer = encoder.rust_tokenizer if encoder.rust_tokenizer is not None else encoder.model.tokenizer
        return cls(tokenizer, encoder.window, encoder.count_tokens([""])[0])

    @classmethod
    def from_json(cls, tokenizer_json: str, window: int, n_special: int) -> TokenCounter:
        """A counter from `tokenizer_json` (a Rust tokenizer's JSON), a window and a special-token count."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(tokenizer_json), window, n_special)

    @classmethod
    def from_config(cls, config: TempScaleConfig) -> TokenCounter:
        """The counter of the engine `config` describes (model, `max_seq_length`, `document_prompt`), model unloaded."""
        return cls.from_model(
            config.model, max_seq_length=config.max_seq_length, document_prompt=config.document_prompt
        )

    @classmethod
    def from_model(cls, model: str, *, max_seq_length: int | None = None, document_prompt: str = "") -> TokenCounter:
        """The counter of a sentence-transformers model, loading its tokenizer and configuration but not its weights.

        Args:
            model: A model name or path, or `BUNDLED_MODEL`, as `TempScaleEncoder` takes it.
            max_seq_length: The window; None: the model's full position window, as the engine uses it.
            document_prompt: Text the engine prepends to every document.

        Raises:
            ValueError: If the tokenizer cannot be loaded or `max_seq_length` exceeds the model's positions.
        """
        from transformers import AutoConfig, AutoTokenizer

        from tempscale_rag.config import BUNDLED_MODEL
        from tempscale_rag.models import bundled_model_path, special_tokens, window_of

        source = bundled_model_path() if model == BUNDLED_MODEL else model
        folder, tokenizer_args, st_window = _transformer_module(source)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **tokenizer_args)
            model_config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load the tokenizer of {model!r}: {exc}") from None
        full = window_of(model_config, tokenizer, st_window)
        window = max_seq_length or full
        if window > full:
            raise ValueError(f"max_seq_length={window} exceeds the model's {full} positions; use at most {full}")
        specials = special_tokens(tokenizer).count
        prompt = len(tokenizer(document_prompt, add_special_tokens=False)["input_ids"]) if document_prompt else 0
        return cls(tokenizer, window, specials + prompt)


def _transformer_module(source: str) -> tuple[str, dict[str, Any], int | None]:
    """Where a sentence-transformers model keeps its transformer (folder, tokenizer arguments, `max_seq_length`).

    A plain transformers folder or a hub name is its own transformer module.
    """
    root = Path(source).expanduser()
    modules = root / "modules.json"
    if not modules.is_file():
        return source, {}, None
    folder = root
    try:
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if str(module.get("type", "")).endswith("models.Transformer"):
                folder = root / str(module.get("path", ""))
                break
        settings_file = folder / "sentence_bert_config.json"
        settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"cannot read the sentence-transformers layout of {source}: {exc}") from None
    tokenizer_args = dict(settings.get("tokenizer_args") or {})
    limit = settings.get("max_seq_length")
    return str(folder), tokenizer_args, limit if isinstance(limit, int) else None


@dataclass(frozen=True)
class Windows:
    """The windows texts are cut into: per window its text, offset and length; per text its first window.

    Attributes:
        owner: Per window: index of its text.
        skip: Per window: content tokens of its text before it.
        body: Per window: its content tokens (the model sees `body` plus the special tokens).
        first: Per text: index of its first window.
        dropped: Per text: content tokens cut off (`truncate` only).
    """

    owner: npt.NDArray[np.int64]
    skip: npt.NDArray[np.int64]
    body: npt.NDArray[np.int64]
    first: npt.NDArray[np.int64]
    dropped: npt.NDArray[np.int64]

    def of(self, text: int) -> npt.NDArray[np.int64]:
        """The window lengths (content tokens) of text number `text`."""
        end = self.first[text + 1] if text + 1 < len(self.first) else len(self.body)
        return self.body[self.first[text] : end]


def cut_windows(n_tokens: npt.ArrayLike, capacity: int, long_text: LongTextPolicy, overlap: int) -> Windows:
    """How `TempScaleEncoder` cuts texts into windows: the one rule, also used by the evaluator.

    A text that fits is one window. A longer one keeps its first window under `truncate`, and under `chunk_mean` is
    cut into windows of `capacity` tokens at 0, stride, 2 x stride, ... (stride = `capacity - overlap`, at least 1)
    until one reaches the end of the text.

    Args:
        n_tokens: Content tokens of each text (prompt included, special tokens not).
        capacity: Content tokens per window: the window minus the model's special tokens.
        long_text: `truncate` or `chunk_mean`.
        overlap: Tokens shared by consecutive windows under `chunk_mean`.
    """
    n = np.asarray(n_tokens, dtype=np.int64).reshape(-1)
    stride = max(1, capacity - min(overlap, capacity - 1))
    if long_text == "truncate":
        pieces = np.ones(len(n), dtype=np.int64)
        dropped = np.maximum(n - capacity, 0)
    else:  # windows at 0, stride, 2*stride, ... until one reaches the end of the text
        pieces = np.maximum(1, -(-(n - capacity + stride) // stride))
        dropped = np.zeros(len(n), dtype=np.int64)
    first = np.concatenate(([0], np.cumsum(pieces)[:-1])).astype(np.int64)
    owner = np.repeat(np.arange(len(n), dtype=np.int64), pieces)
    skip = (np.arange(len(owner), dtype=np.int64) - first[owner]) * stride  # window index x stride (0 if truncated)
    body = np.minimum(n[owner] - skip, capacity)
    return Windows(owner=owner, skip=skip, body=body, first=first, dropped=dropped)
