"""Chunk boundaries inside code: how often a chunk ends `name.` and the next one of that size begins `Other(`.

Issue 24's audit: in Python's library reference (Debian's `python3-doc`, `/usr/share/doc/python3.X/html/library`),
`argparse.html` had one chunk end `parser = argparse.` and the next begin `ArgumentParser(description=...`, because
the splitter's fallback regex cut long sentences (a code block is one long "sentence") at every dot, also the dot
inside a dotted name. This script extracts every page as `tempscale-rag index` reads it, chunks it at every default
chunk size with `MultiSizeChunker`, and counts adjacent chunk pairs (same page, same size) where chunk i ends with
`\\w\\.` and chunk i+1 begins with `[A-Za-z_]\\w*\\(` (the audit's pattern), and, more broadly, boundaries between a
chunk that ends where the source text goes on without a space (a cut inside a token: `os.` | `path`, `a,` | `b`).

    python benchmarks/chunk_boundaries.py [--docs DIR] [--every N] [--log FILE]

Runs with whichever `tempscale_rag` is on the path (the chunkers took an engine before issue 22; both are handled).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

AUDIT_END = re.compile(r"\w\.$")
AUDIT_START = re.compile(r"^[A-Za-z_]\w*\(")


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


def _positions(text: str, chunks: list[Any]) -> list[int]:
    """Where each chunk starts in `text` (a chunk is a stripped slice of it; -1 if not found), per size in order."""
    cursor: dict[int, int] = {}
    out = []
    for chunk in chunks:
        at = text.find(chunk.text, cursor.get(chunk.size, 0))
        out.append(at)
        if at >= 0:
            cursor[chunk.size] = at + 1
    return out


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
    started = time.perf_counter()
    pairs = audit = in_token = 0
    examples: list[str] = []
    for page in pages:
        try:
            text = extract(page, page.read_bytes()).text
        except DocumentError:
            continue
        chunks = chunker.split(text)
        starts = _positions(text, chunks)
        for i in range(len(chunks) - 1):
            a, b, at = chunks[i], chunks[i + 1], starts[i]
            if a.size != b.size:
                continue
            pairs += 1
            if AUDIT_END.search(a.text) and AUDIT_START.search(b.text):
                audit += 1
                if len(examples) < 5:
                    examples.append(f"{page.name}: ...{a.text[-40:]!r} | {b.text[:40]!r}...")
            end = at + len(a.text)
            if at >= 0 and end < len(text) and not text[end].isspace():
                in_token += 1
        lines = [
            f"{args.docs} ({len(pages)} pages, every {args.every}), sizes {chunker.sizes}:",
            f"  {pairs} adjacent chunk pairs (same page, same size)",
            f"  audit pattern (ends '\\w.', next begins 'name('): {audit}",
            f"  chunk ends inside a token (the text goes on without a space): {in_token}",
            f"  {time.perf_counter() - started:.0f} s",
            *(f"  e.g. {e}" for e in examples),
        ]
    print("\n".join(lines))
    if args.log:
        with args.log.open("a", encoding="utf-8") as log:
            log.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
