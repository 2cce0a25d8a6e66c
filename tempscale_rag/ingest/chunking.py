"""Chunking documents to the model window with LlamaIndex's `SentenceSplitter`, counting the model's own tokens.

LlamaIndex's default chunk size (1024 tokens of tiktoken) is above a 512-token encoder's window, so its chunks are
silently truncated; here the splitter counts tokens with the embedding model's tokenizer and the chunk size is the
window minus the special tokens, so every chunk is embedded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tempscale_rag.encoder import TempScaleEncoder

# SentenceSplitter counts the tokens of each piece separately; joined pieces can tokenise a little longer, so leave a
# small margin below the window rather than truncate a few tokens from some chunks.
_MARGIN = 0.02


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document: its text and position within the document."""

    text: str
    position: int


class WindowChunker:
    """Splits text into chunks that fit the encoder's window (sentence-aware, with overlap).

    Args:
        encoder: The engine whose tokenizer and window define chunk sizes.
        chunk_tokens: Target chunk size in model tokens; None fills the window.
        overlap_tokens: Tokens shared by consecutive chunks.

    Raises:
        ValueError: If the sizes do not fit the window.
    """

    def __init__(self, encoder: TempScaleEncoder, chunk_tokens: int | None = None, overlap_tokens: int = 32) -> None:
        from llama_index.core.node_parser import SentenceSplitter

        capacity = encoder.window - encoder.count_tokens([""])[0]
        default = max(16, int(capacity * (1 - _MARGIN)))
        size = default if chunk_tokens is None else chunk_tokens
        if not 8 <= size <= capacity:
            raise ValueError(f"chunk size must be between 8 and {capacity} tokens (the model window), got {size}")
        if not 0 <= overlap_tokens < size:
            raise ValueError(f"chunk overlap must be between 0 and the chunk size ({size}), got {overlap_tokens}")
        tokenizer: Any = encoder.model.tokenizer
        rust: Any = encoder.rust_tokenizer

        def count(text: str) -> list[int]:
            # SentenceSplitter calls this once per split: the Rust tokenizer directly is ~30% faster than the
            # transformers wrapper, with the same ids (so the same chunks).
            if rust is not None:
                return list(rust.encode(text, add_special_tokens=False).ids)
            return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

        self.chunk_tokens = size
        self.overlap_tokens = overlap_tokens
        self._splitter = SentenceSplitter(chunk_size=size, chunk_overlap=overlap_tokens, tokenizer=count)

    def split(self, text: str) -> list[Chunk]:
        """Chunks of `text`, in order; whitespace-only pieces are dropped."""
        pieces = [p for p in self._splitter.split_text(text) if p.strip()]
        return [Chunk(text=p, position=i) for i, p in enumerate(pieces)]

    @property
    def splitter(self) -> Any:
        """The underlying LlamaIndex `SentenceSplitter` (to build an equivalent LlamaIndex pipeline)."""
        return self._splitter
