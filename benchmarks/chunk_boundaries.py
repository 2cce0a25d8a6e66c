"""Chunk boundaries inside code: how often a chunk ends inside a name (`argparse.` | `ArgumentParser(`).

Issue 24's audit: in Python's library reference (Debian's `python3-doc`, `/usr/share/doc/python3.X/html/library`),
`argparse.html` had one chunk end `parser = argparse.` and the next begin `ArgumentParser(description=...`, because
the splitter's fallback regex cut long sentences (a code block is one long "sentence") at every dot, also the dot
inside a dotted name. This script extracts every page as `tempscale-rag index` reads it, chunks it at every default
chunk size with `MultiSizeChunker`, and looks at every boundary between adjacent chunks of one page and one size:

- the audit's pattern: chunk i ends with `\\w\\.` and chunk i+1 begins with `[A-Za-z_]\\w*\\(`. It also matches a
  right cut, a sentence end followed by a sentence that begins with a call (`... mechanisms. abstractmethod() may
  be used ...`), so it is split into cuts where the source has a space there and cuts inside a token (the bug);
- cuts inside a token (the source text goes on without a space: `os.` | `path`, `a,` | `b`), and of those the cuts
  inside a name (a word or a dotted name, `\\w+(\\.\\w+)*`, such as `urllib.request.build_opener`): a cut
  identifier. A name longer than the chunk itself (a 40-hex-digit hash, a 27-token dotted name at 24 tokens) must
  be cut somewhere; every other cut identifier is avoidable.

    python benchmarks/chunk_boundaries.py [--docs DIR] [--every N] [--log FILE]

Runs with whichever `tempscale_rag` is on the path (the chunkers took an engine before issue 22; both are handled).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

AUDIT_END = re.compile(r"\w\.$")
AUDIT_START = re.compile(r"^[A-Za-z_]\w*\(")
NAME = re.compile(r"\w+(?:\.\w+)*")


def _default_docs() -> Path | None:
    for folder in sorted(Path("/usr/share/doc").glob("python3*/html/library")):
        if any(folder.glob("*.html")):
            return folder
    return None


def _chunker() -> Any:
    from tempscale_rag.config import BUNDLED_MODEL, ChunkingConfig
    from tempscale_rag.ingest.chunking import MultiSizeChunker

    try:
        from tempscale_rag.windows import TokenCounter

        counter: Any = TokenCounter.from_model(BUNDLED_MODEL)
    except ImportError:  # before issue 22: the chunkers took an engine
        from tempscale_rag.encoder import TempScaleEncoder

        counter = TempScaleEncoder(device="cpu")
    return MultiSizeChunker(counter, ChunkingConfig())


def _token_count(chunker: Any) -> Any:
    counter = chunker.counter
    if hasattr(counter, "ids"):
        return lambda text: len(counter.ids(text))
    empty = counter.count_tokens([""])[0]
    return lambda text: counter.count_tokens([text])[0] - empty


def _spans(text: str, chunks: list[Any]) -> list[tuple[int, int]]:
    """Where each chunk lies in `text` ((-1, -1) if not found): a chunk is a stripped slice of the text.

    The next chunk of a size starts after the previous one's start and at or before its end (plus the whitespace
    after it); of the places where it occurs there, the last (with overlap, the tail of the previous chunk).
    """
    last: dict[int, tuple[int, int]] = {}
    out = []
    for chunk in chunks:
        start, end = last.get(chunk.size, (-1, 0))
        while end < len(text) and text[end].isspace():
            end += 1
        at = text.rfind(chunk.text, start + 1, end + len(chunk.text))
        if at < 0:
            at = text.find(chunk.text, start + 1)
        span = (at, at + len(chunk.text)) if at >= 0 else (-1, -1)
        out.append(span)
        if at >= 0:
            last[chunk.size] = span
    return out


def _cut_name(text: str, cut: int) -> str | None:
    """The name (`\\w+(\\.\\w+)*`) that `text[cut]` is inside, with a character of it on both sides; None if none."""
    lo = cut
    while lo > 0 and not text[lo - 1].isspace():
        lo -= 1
    hi = cut
    while hi < len(text) and not text[hi].isspace():
        hi += 1
    for match in NAME.finditer(text, lo, hi):
        if match.start() < cut < match.end():
            return match.group()
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=Path, default=_default_docs(), help="folder of HTML pages")
    parser.add_argument("--every", type=int, default=1, help="take every N-th page in name order (1: all)")
    parser.add_argument("--log", type=Path, help="also append the summary to this file")
    args = parser.parse_args()
    if args.docs is None or not args.docs.is_dir():
        print("no HTML folder: apt-get install python3-doc, or give --docs DIR", file=sys.stderr)
        return 2
    from tempscale_rag.ingest.readers import DocumentError, extract

    pages = sorted(args.docs.glob("*.html"))[:: args.every]
    chunker = _chunker()
    tokens = _token_count(chunker)
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    by_size: Counter[int] = Counter()
    kinds = ("audit_space", "audit_token", "name_fits", "long_dotted", "long_word")
    examples: dict[str, list[str]] = {kind: [] for kind in kinds}

    def example(kind: str, page: Path, text: str, cut: int, size: int) -> None:
        if len(examples[kind]) < 3:
            left, right = text[max(0, cut - 40) : cut], text[cut : cut + 30]
            examples[kind].append(f"{page.name} @{size}: ...{left!r} | {right!r}...")

    for page in pages:
        try:
            text = extract(page, page.read_bytes()).text
        except DocumentError:
            continue
        chunks = chunker.split(text)
        spans = _spans(text, chunks)
        for i in range(len(chunks) - 1):
            a, b, (at, end) = chunks[i], chunks[i + 1], spans[i]
            if a.size != b.size:
                continue
            counts["pairs"] += 1
            inside = at >= 0 and end < len(text) and not text[end].isspace()
            if AUDIT_END.search(a.text) and AUDIT_START.search(b.text):
                counts["audit"] += 1
                counts["audit_token" if inside else "audit_space"] += 1
                example("audit_token" if inside else "audit_space", page, text, end, a.size)
            if not inside:
                continue
            counts["in_token"] += 1
            name = _cut_name(text, end)
            if name is None:
                continue
            counts["in_name"] += 1
            by_size[a.size] += 1
            if tokens(name) <= a.size:
                counts["name_fits"] += 1
                example("name_fits", page, text, end, a.size)
            else:
                kind = "long_dotted" if "." in name and not name[0].isdigit() else "long_word"
                counts[kind] += 1
                example(kind, page, text, end, a.size)
    c = counts
    lines = [
        f"{args.docs} ({len(pages)} pages, every {args.every}), sizes {chunker.sizes}:",
        f"  {c['pairs']} adjacent chunk pairs (same page, same size)",
        f"  audit pattern (ends '\\w.', next begins 'name('): {c['audit']}: at a space in the text (a sentence that"
        f" begins with a call) {c['audit_space']}, inside a token {c['audit_token']}",
        f"  chunk ends inside a token (the text goes on without a space): {c['in_token']}",
        f"  chunk ends inside a name (a cut identifier): {c['in_name']} (by size {dict(sorted(by_size.items()))}):"
        f" the name fits the chunk {c['name_fits']}; longer than the chunk: dotted names {c['long_dotted']},"
        f" single words or numbers {c['long_word']}",
        f"  {time.perf_counter() - started:.0f} s",
        *(f"  e.g. {kind}: {e}" for kind, found in examples.items() for e in found),
    ]
    print("\n".join(lines))
    if args.log:
        with args.log.open("a", encoding="utf-8") as log:
            log.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
