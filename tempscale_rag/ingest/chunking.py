"""Chunking documents to the model window with LlamaIndex's `SentenceSplitter`, counting the model's own tokens.

LlamaIndex's default chunk size (1024 tokens of tiktoken) is above a 512-token encoder's window, so its chunks are
silently truncated; here the splitter counts tokens with the embedding model's tokenizer and the chunk size is at
most the window minus the special tokens, so every chunk is embedded whole.

- `WindowChunker`: one chunk size (by default the whole window).
- `MultiSizeChunker`: every document at every size of a `ChunkingConfig` (e.g. 64, 128 and 256 tokens); each chunk
  carries its size, and each size is a length bucket with its own temperature (`ChunkingConfig.buckets`).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tempscale_rag.config import ChunkingConfig
from tempscale_rag.windows import TokenCounter

if TYPE_CHECKING:
    from tempscale_rag.encoder import TempScaleEncoder

# SentenceSplitter counts the tokens of each piece separately; joined pieces can tokenise a little longer, so leave a
# small margin below the window rather than truncate a few tokens from some chunks.
_MARGIN = 0.02
_MIN_CHUNK = 8

# What the splitter does with a "sentence" longer than a chunk (a code block, a long list), before it falls back to
# words: cut it at line ends first (code is cut between its lines), then into pieces that end at `,` `.` `;`
# followed by a space or the end, or at a CJK stop. LlamaIndex's default regex (`[^,.;。？！]+[,.;。？！]?`) also ends
# a piece at a dot inside a token, so chunks ended `parser = argparse.` and the next began `ArgumentParser(...`
# (issue 24); here a mark followed by a non-space (`os.path`, `3.14`, `f(a,b)`) stays in its token. Every
# character belongs to exactly one piece, so no text is lost.
LINES = r"[^\n]*\n|[^\n]+"
"""Lines, each with its line end."""
_PIECE_END = r"(?:[,.;](?!\S)|[。？！]|\n)"
_PIECE_CHAR = r"(?:[^,.;。？！\n]|[,.;](?=\S))"
PIECES = rf"{_PIECE_CHAR}*{_PIECE_END}|{_PIECE_CHAR}+"
"""The `secondary_chunking_regex` of the chunkers' `SentenceSplitter`s."""

# A word with no space in it that is longer than a chunk (code such as `opener =
# urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cj))` at 24 tokens) went to LlamaIndex's last fallback,
# single characters, and was cut anywhere: `urllib.request.build_o` | `pener(...` (issue 24: in Python's library
# reference, 358 chunks ended inside a name, 285 of them a name that fits its chunk; see
# benchmarks/chunk_boundaries.py). Before characters, such a word is cut before each name (a word or a dotted name such
# as `urllib.request.HTTPCookieProcessor`) but its first, then (a name that fits only without its quotes and brackets:
# `{'get_endpoint.return_value...'}`) at both ends of each name, so a name stays whole wherever it fits a chunk; a
# dotted name longer than a chunk is cut before its dots (`xml.parsers.expat` | `.errors.XML_ERROR_...`); only a single
# word longer than a chunk (a hash, a 40-digit number) is cut between characters.
_NAME = re.compile(r"\w+(?:\.\w+)*")
_INNER_DOT = re.compile(r"(?<=\w)\.(?=\w)")


def _cut(text: str, at: list[int]) -> list[str]:
    """`text` cut at the offsets `at` (ascending, inside the text): every character in exactly one piece."""
    bounds = [0, *at, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def split_before_names(text: str) -> list[str]:
    """Pieces of `text` that each begin with a name (but the first): punctuation stays with the name before it."""
    return _cut(text, [m.start() for m in _NAME.finditer(text)][1:])


def split_around_names(text: str) -> list[str]:
    """Pieces of `text` cut at both ends of every name: for a name that fits a chunk only without its punctuation."""
    cuts = {at for m in _NAME.finditer(text) for at in m.span()} - {0, len(text)}
    return _cut(text, sorted(cuts))


def split_before_dots(text: str) -> list[str]:
    """Pieces of `text` cut before each dot between two word characters (inside a dotted name)."""
    return _cut(text, [m.start() for m in _INNER_DOT.finditer(text)])


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document.

    Attributes:
        text: The chunk text.
        position: Its index within the document, unique across all chunk sizes of that document (so
            `make_chunk_id(source, position, text)` is unique).
        size: The chunk size (in content tokens) it was cut at; 0 when unknown.
    """

    text: str
    position: int
    size: int = 0


def chunk_capacity(counter: TokenCounter | TempScaleEncoder) -> int:
    """Content tokens that fit the window: the window minus special tokens and document prompt."""
    return as_token_counter(counter).capacity


def as_token_counter(counter: TokenCounter | TempScaleEncoder) -> TokenCounter:
    """`counter` itself, or an engine's `TokenCounter.from_encoder` (chunking needs no more of an engine)."""
    if isinstance(counter, TokenCounter):
        return counter
    if hasattr(counter, "count_tokens") and hasattr(counter, "window"):
        return TokenCounter.from_encoder(counter)
    raise TypeError(f"chunking takes a TokenCounter (or a TempScaleEncoder), got {type(counter).__name__}")


class SplitMemo:
    """Token counts and sentences of the pieces of one text, shared by the `SentenceSplitter`s of every chunk size.

    Every size's splitter cuts a text into the same paragraphs and sentences and counts the tokens of the same pieces
    (each piece it recurses into twice: once as a split, once as the text it splits); only pieces longer than a chunk
    are cut further, differently per size. Inside `session()` both are remembered, so a four-size split tokenises
    and runs the sentence tokenizer on each distinct piece once instead of up to eight times; outside a session
    (a splitter used on its own) nothing is kept. Sessions are per thread.

    Args:
        counter: The model's token counter.
    """

    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter
        self._local = threading.local()

    @contextmanager
    def session(self) -> Iterator[None]:
        """Remember counts and sentences until the block exits (one text's split at every size)."""
        outer = getattr(self._local, "tables", None)
        if outer is None:
            self._local.tables = ({}, {})
        try:
            yield
        finally:
            if outer is None:
                self._local.tables = None

    def token_span(self, text: str) -> range:
        """A sequence as long as `text`'s token ids (`SentenceSplitter` only takes the length of what it is given)."""
        tables = getattr(self._local, "tables", None)
        if tables is None:
            return range(len(self._counter.ids(text)))
        count = tables[0].get(text)
        if count is None:
            count = tables[0][text] = len(self._counter.ids(text))
        return range(count)

    def sentences(self, text: str) -> list[str]:
        """`_sentences(text)`, remembered within a session."""
        tables = getattr(self._local, "tables", None)
        if tables is None:
            return _sentences(text)
        found = tables[1].get(text)
        if found is None:
            found = tables[1][text] = _sentences(text)
        return list(found)


def _sentence_splitter(size: int, overlap: int, memo: SplitMemo) -> Any:
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.node_parser.text.utils import split_by_regex

    splitter: Any = SentenceSplitter(
        chunk_size=size,
        chunk_overlap=overlap,
        tokenizer=memo.token_span,
        chunking_tokenizer_fn=memo.sentences,
        secondary_chunking_regex=PIECES,
    )
    # SentenceSplitter takes one fallback regex; line ends go before it, names and dots between its words and its
    # characters (its list of fallbacks, tried in order: the first that cuts a too-long piece in two or more wins).
    by_regex, by_words, by_chars = splitter._sub_sentence_split_fns
    splitter._sub_sentence_split_fns = [
        split_by_regex(LINES),
        by_regex,
        by_words,
        split_before_names,
        split_around_names,
        split_before_dots,
        by_chars,
    ]
    return splitter


def _sentences(text: str) -> list[str]:
    """NLTK punkt's sentences (LlamaIndex's default), joined again where punkt cut with no space after the cut.

    Punkt ends a sentence at `?` or `!` followed by a quote, also inside code (`nargs='?'`); a sentence end in prose
    is followed by whitespace.
    """
    from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer

    out: list[str] = []
    for piece in split_by_sentence_tokenizer()(text):
        if out and not out[-1][-1:].isspace():
            out[-1] += piece
        else:
            out.append(piece)
    return out


def _check_size(size: int, overlap: int, capacity: int) -> None:
    if not _MIN_CHUNK <= size <= capacity:
        raise ValueError(
            f"chunk size must be between {_MIN_CHUNK} and {capacity} tokens (the model window), got {size}"
        )
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be between 0 and the chunk size ({size}), got {overlap}")


class WindowChunker:
    """Splits text into chunks of one size that fit the model's window (sentence-aware, with overlap).

    Args:
        counter: The model's tokenizer, window and special tokens (`TokenCounter`); an engine is taken as its
            `TokenCounter.from_encoder`.
        chunk_tokens: Target chunk size in model tokens; None fills the window.
        overlap_tokens: Tokens shared by consecutive chunks.

    Raises:
        ValueError: If the sizes do not fit the window.
    """

    def __init__(
        self, counter: TokenCounter | TempScaleEncoder, chunk_tokens: int | None = None, overlap_tokens: int = 32
    ) -> None:
        self.counter = as_token_counter(counter)
        capacity = self.counter.capacity
        default = max(16, int(capacity * (1 - _MARGIN)))
        size = default if chunk_tokens is None else chunk_tokens
        _check_size(size, overlap_tokens, capacity)
        self.chunk_tokens = size
        self.overlap_tokens = overlap_tokens
        self._memo = SplitMemo(self.counter)
        self._splitter = _sentence_splitter(size, overlap_tokens, self._memo)

    def split(self, text: str) -> list[Chunk]:
        """Chunks of `text`, in order; whitespace-only pieces are dropped."""
        with self._memo.session():
            pieces = [p for p in self._splitter.split_text(text) if p.strip()]
        return [Chunk(text=p, position=i, size=self.chunk_tokens) for i, p in enumerate(pieces)]

    @property
    def splitter(self) -> Any:
        """The underlying LlamaIndex `SentenceSplitter` (to build an equivalent LlamaIndex pipeline)."""
        return self._splitter


class MultiSizeChunker:
    """Splits every document at every size of a `ChunkingConfig` (sentence-aware, with per-size overlap).

    Chunks come size by size, smallest first, each size in document order; positions run on across sizes, so they
    are unique within a document. Embed the chunks with `encoder.with_config(buckets=chunking.buckets(n_special))`
    (see `routing_buckets`) so that each size gets its own temperature.

    Args:
        counter: The model's tokenizer, window and special tokens (`TokenCounter`); an engine is taken as its
            `TokenCounter.from_encoder`.
        chunking: Sizes, temperatures and overlap.

    Raises:
        ValueError: If a size (or its overlap) does not fit the window.
    """

    def __init__(self, counter: TokenCounter | TempScaleEncoder, chunking: ChunkingConfig | None = None) -> None:
        self.counter = as_token_counter(counter)
        self.chunking = chunking or ChunkingConfig()
        self._memo = SplitMemo(self.counter)
        self._splitters: list[tuple[int, Any]] = []
        for size in self.chunking.sizes:
            overlap = self.chunking.overlap(size)
            _check_size(size, overlap, self.counter.capacity)
            self._splitters.append((size, _sentence_splitter(size, overlap, self._memo)))

    @property
    def sizes(self) -> tuple[int, ...]:
        """The chunk sizes, smallest first."""
        return self.chunking.sizes

    def routing_buckets(self) -> tuple[Any, ...]:
        """`ChunkingConfig.buckets` for this model's special-token count: one length bucket per chunk size."""
        return self.chunking.buckets(self.counter.n_special)

    def split(self, text: str) -> list[Chunk]:
        """Chunks of `text` at every size (smallest size first); whitespace-only pieces are dropped."""
        chunks: list[Chunk] = []
        with self._memo.session():
            for size, splitter in self._splitters:
                for piece in splitter.split_text(text):
                    if piece.strip():
                        chunks.append(Chunk(text=piece, position=len(chunks), size=size))
        return chunks
