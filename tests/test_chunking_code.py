"""Chunks of code with no spaces longer than a chunk: cut between names, never inside one that fits (issue 24).

At the smallest default size (24 tokens) a code line without spaces, a dict key or a quoted hash can be longer than
a chunk; the splitter's last fallback (single characters) cut such words anywhere (`urllib.request.build_o` |
`pener(`): 285 cuts inside a name that fit its chunk in Python's library reference
(`benchmarks/chunk_boundaries.py`).
"""

from __future__ import annotations

import re

import pytest

from tempscale_rag.config import BUNDLED_MODEL, ChunkingConfig
from tempscale_rag.ingest.chunking import (
    MultiSizeChunker,
    WindowChunker,
    split_around_names,
    split_before_dots,
    split_before_names,
)
from tempscale_rag.windows import TokenCounter

NAME = re.compile(r"\w+(?:\.\w+)*")


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter.from_model(BUNDLED_MODEL)


def _boundaries(text: str, pieces: list[str]) -> list[int]:
    """Where each piece but the last ends in `text` (pieces are stripped slices of it, in order, no overlap)."""
    ends, cursor = [], 0
    for piece in pieces:
        start = text.index(piece, cursor)
        cursor = start + len(piece)
        ends.append(cursor)
    return ends[:-1]


def _names_cut(text: str, cuts: list[int]) -> list[str]:
    """The names (`\\w+(\\.\\w+)*`) that a cut falls strictly inside."""
    return [m.group() for m in NAME.finditer(text) for cut in cuts if m.start() < cut < m.end()]


def _chunks(counter: TokenCounter, text: str, size: int) -> list[str]:
    chunker = MultiSizeChunker(counter, ChunkingConfig.parse(str(size), overlap_tokens=0))
    return [c.text for c in chunker.split(text)]


@pytest.mark.parametrize(
    ("line", "size"),
    [
        # a call with no spaces: the old fallback cut `urllib.request.build_o` | `pener(urllib...`
        ("opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cj))", 16),
        ("r = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cj),urllib.request.ProxyHandler(p))", 16),
        # Sphinx renders a signature as one word: `binascii.b2a_hex(b'\xb9\x01\xef',` ...
        (">>> binascii.b2a_hex(b'\\xb9\\x01\\xef',b'_',2)", 16),
        # a name that fits the chunk (24 and 21 tokens) only without its quotes and brackets
        ("config = {'get_endpoint.return_value.create_call.return_value.start_call.return_value': mock_response}", 24),
        ("print(row) ('acbd18db4cc2f85cedef654fccc4a4d8',)", 24),
    ],
)
def test_a_word_longer_than_the_chunk_is_cut_between_names(counter: TokenCounter, line: str, size: int) -> None:
    text = f"Consider this example.\n{line}\nIt is short.\n"
    longest = max(len(counter.ids(word)) for word in text.split())
    assert longest > size, "the example must hold a word longer than the chunk"
    chunks = _chunks(counter, text, size)
    assert "".join("".join(chunks).split()) == "".join(text.split()), "no text lost"
    assert all(len(counter.ids(c)) <= size for c in chunks), [(c, len(counter.ids(c))) for c in chunks]
    cut = _names_cut(text, _boundaries(text, chunks))
    assert not [name for name in cut if len(counter.ids(name)) <= size], (cut, chunks)


def test_a_dotted_name_longer_than_the_chunk_is_cut_before_its_dots(counter: TokenCounter) -> None:
    name = "xml.parsers.expat.errors.XML_ERROR_CANT_CHANGE_FEATURE_ONCE_PARSING"
    text = f"The error code is\n- {name}\nwhen parsing has started.\n"
    size = 12
    assert len(counter.ids(name)) > size
    chunks = _chunks(counter, text, size)
    assert all(len(counter.ids(c)) <= size for c in chunks)
    for cut in _boundaries(text, chunks):
        # A cut inside the name falls before one of its dots (`xml.parsers.expat` | `.errors...`); the name's last
        # part alone (`XML_ERROR_CANT_CHANGE_FEATURE_ONCE_PARSING`, 14 tokens) is itself longer than the chunk.
        inside = text.index(name) < cut < text.index(name) + len(name)
        last_part = text.index(name) + name.rindex(".") + 1
        assert not inside or text[cut] == "." or cut > last_part, (text[:cut][-20:], text[cut:][:20])
    assert any(text[cut] == "." for cut in _boundaries(text, chunks))


def test_prose_still_ends_chunks_at_sentence_ends(counter: TokenCounter) -> None:
    # The audit pattern `x.` | `Y(` also matches right cuts: a sentence end, then a sentence that begins with a call.
    text = " ".join(
        f"Calls that use {word} are resolved by the normal super call mechanisms. "
        f"abstractmethod() may be used to declare abstract methods for {word} properties and descriptors."
        for word in ("lists", "dicts", "sets", "tuples", "strings", "frames")
    )
    chunks = _chunks(counter, text, 48)
    assert len(chunks) > 3
    assert all(c.endswith(".") for c in chunks), chunks
    assert all(c.startswith(("Calls", "abstractmethod()")) for c in chunks), chunks


@pytest.mark.parametrize(
    "word",
    [
        "urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cj))",
        ' /home/python/cpython/Lib/ctypes/__init__.py",',
        "{'get_endpoint.return_value':",
        "b'\\x00\\x00'",
        "YYYY-MM-DDTHH:MM:SS.ffffff+HH:MM",
        "中文文本，更多的文本。",
        "...",
        "x",
        "",
    ],
)
def test_the_fallbacks_lose_no_character(word: str) -> None:
    for split in (split_before_names, split_around_names, split_before_dots):
        pieces = split(word)
        assert "".join(pieces) == word and all(pieces), (split.__name__, pieces)
    assert split_before_names("urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cj))") == [
        "urllib.request.build_opener(",
        "urllib.request.HTTPCookieProcessor(",
        "cj))",
    ]
    assert split_around_names("{'get_endpoint.return_value':") == ["{'", "get_endpoint.return_value", "':"]
    assert split_before_dots("xml.parsers.expat") == ["xml", ".parsers", ".expat"]


def test_window_chunker_cuts_the_same_way(counter: TokenCounter) -> None:
    text = "opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cj),urllib.request.ProxyHandler())"
    chunks = [c.text for c in WindowChunker(counter, 16, 0).split(text)]
    cut = _names_cut(text, _boundaries(text, chunks))
    assert len(chunks) > 1 and not [name for name in cut if len(counter.ids(name)) <= 16], chunks
