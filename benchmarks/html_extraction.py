"""HTML text extraction before/after: retrieval on a real documentation folder with the old and the new HTML reader.

Documents: chapters of *The Rust Programming Language* as installed with a Rust toolchain (mdBook HTML, found under
`$(rustc --print sysroot)/share/doc/rust/html/book`, or give `--docs DIR`). Each page carries the site's chrome
(keyboard-shortcut help, theme picker, menu bar, previous/next links) around the chapter text, and its inline code
(`<code>`) sits in the middle of sentences.

- *before*: the previous reader, BeautifulSoup's `get_text("\\n")` (every tag boundary becomes a line break, all
  page chrome kept);
- *after*: the current reader, `tempscale_rag.ingest.readers` (trafilatura main-content extraction, BeautifulSoup
  fallback).

Both indexes use the same engine (bundled all-MiniLM-L6-v2, default TempScale buckets), the same chunker and exact
FAISS. Five questions (the issue's), then all sixteen (one per chapter), each answered by one chapter; a question's
rank is the rank of the first chunk from that chapter among the top 10 chunks. Printed: top-1 accuracy, MRR@10,
chunks indexed, chunks holding page chrome, and lines of a chunk that are a lone code word (split inline code).

A second folder, the 22 function pages of `std::fs` from the same installed documentation (rustdoc HTML), gets five
questions of its own.

    python benchmarks/html_extraction.py [--docs DIR] [--book-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tempscale_rag import TempScaleEncoder

QUESTIONS = [
    ("What are the three rules of ownership?", "ch04-01-what-is-ownership.html"),
    ("How do I take a reference to part of a String without copying it?", "ch04-03-slices.html"),
    (
        "How do I return early with an error using the question mark operator?",
        "ch09-02-recoverable-errors-with-result.html",
    ),
    ("How do I update a value in a HashMap based on the old value?", "ch08-03-hash-maps.html"),
    ("How do I get the value out of an Option with match arms?", "ch06-02-match.html"),
]
# Eleven more, one per remaining chapter, so each chapter answers one question: five questions move top-1 by 0.2 per
# rank change, sixteen give a steadier figure.
MORE_QUESTIONS = [
    ("Why can't I have two mutable references to the same value at once?", "ch04-02-references-and-borrowing.html"),
    ("How do I define a struct with named fields and create an instance of it?", "ch05-01-defining-structs.html"),
    ("How do I define a method that takes &self on a struct?", "ch05-03-method-syntax.html"),
    ("How do I define an enum whose variants hold data?", "ch06-01-defining-an-enum.html"),
    ("How can I handle just one pattern without writing a full match?", "ch06-03-if-let.html"),
    ("How do I add elements to a vector and read one safely by index?", "ch08-01-vectors.html"),
    ("Why can't I index into a String to get a character?", "ch08-02-strings.html"),
    (
        "What happens when a program calls panic!, and how do I see a backtrace?",
        "ch09-01-unrecoverable-errors-with-panic.html",
    ),
    ("When should a library return a Result instead of panicking?", "ch09-03-to-panic-or-not-to-panic.html"),
    ("How do I write a function that is generic over a type parameter?", "ch10-01-syntax.html"),
    ("How do I define a trait and implement it for a type?", "ch10-02-traits.html"),
]
# The chapters indexed: the five answers plus their neighbours (similar vocabulary, so the task is not trivial).
CHAPTERS = [
    "ch04-01-what-is-ownership.html",
    "ch04-02-references-and-borrowing.html",
    "ch04-03-slices.html",
    "ch05-01-defining-structs.html",
    "ch05-03-method-syntax.html",
    "ch06-01-defining-an-enum.html",
    "ch06-02-match.html",
    "ch06-03-if-let.html",
    "ch08-01-vectors.html",
    "ch08-02-strings.html",
    "ch08-03-hash-maps.html",
    "ch09-01-unrecoverable-errors-with-panic.html",
    "ch09-02-recoverable-errors-with-result.html",
    "ch09-03-to-panic-or-not-to-panic.html",
    "ch10-01-syntax.html",
    "ch10-02-traits.html",
]
# A second, API-reference folder: the 22 function pages of Rust's `std::fs` (rustdoc HTML, one function per page,
# each with the rustdoc header: crate/version banner, "Skip to main content", "Copy item path", "Source").
FS_QUESTIONS = [
    ("How do I read a whole file into a String?", "fn.read_to_string.html"),
    ("How do I create a directory and all of its missing parent directories?", "fn.create_dir_all.html"),
    ("How do I move a file to a new name?", "fn.rename.html"),
    ("How do I delete a directory together with everything inside it?", "fn.remove_dir_all.html"),
    ("How do I iterate over the entries of a directory?", "fn.read_dir.html"),
]
CHROME = (
    "Keyboard shortcuts",
    "to navigate between chapters",
    "Previous chapter",
    "Next chapter",
    "Print this book",
    "Skip to main content",
    "Copy item path",
)


def find_book() -> Path | None:
    try:
        sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        sysroot = ""
    candidates = [Path(sysroot.strip()) / "share/doc/rust/html/book"] if sysroot.strip() else []
    candidates += sorted(Path.home().glob(".rustup/toolchains/*/share/doc/rust/html/book"))
    return next((c for c in candidates if (c / CHAPTERS[0]).exists()), None)


def old_html_text(path: Path, data: bytes) -> str:
    """The HTML reader before trafilatura (verbatim from the previous `readers._html_text`)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def build_and_score(
    label: str, docs: Path, folder: Path, encoder: TempScaleEncoder, questions: list[tuple[str, str]], first: int
) -> dict[str, Any]:
    from tempscale_rag.ingest.indexer import FolderIndexer
    from tempscale_rag.stores import IndexManifest, open_store

    manifest = IndexManifest.new(
        model=encoder.model_name,
        dimension=encoder.dimension,
        config=encoder.config,
    )
    start = time.perf_counter()
    with open_store(folder, manifest) as store:
        summary = FolderIndexer(encoder, store, show_progress=False).run([docs])
        seconds = time.perf_counter() - start
        vectors = encoder.encode([q for q, _ in questions], query=True)
        all_hits = store.search_many(vectors, k=10)
        chunks = store.search(vectors[0], k=store.count())
    ranks: list[int | None] = []
    top1: list[str] = []
    for (_question, answer), hits in zip(questions, all_hits, strict=True):
        files: list[str] = []
        for hit in hits:
            name = Path(hit.source).name
            if name not in files:
                files.append(name)
        ranks.append(files.index(answer) + 1 if answer in files else None)
        top1.append(files[0] if files else "")
    chrome = sum(any(marker in c.text for marker in CHROME) for c in chunks)
    split_code = sum(
        1
        for c in chunks
        for line in c.text.splitlines()
        if line.strip() in {"String", "Option<T>", "match", "Path", "<", ">"}
    )
    return {
        "reader": label,
        "files": summary.files_indexed,
        "chunks": summary.chunks,
        "tokens": summary.tokens,
        "seconds": round(seconds, 1),
        "five": _scores(ranks[:first]),
        "all": _scores(ranks),
        "ranks": ranks,
        "top1_files": top1,
        "chunks_with_page_chrome": chrome,
        "lines_that_are_a_lone_code_word": split_code,
    }


def _scores(ranks: list[int | None]) -> dict[str, float]:
    return {
        "top1": round(sum(r == 1 for r in ranks) / len(ranks), 3),
        "mrr@10": round(sum(1 / r for r in ranks if r) / len(ranks), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=None, help="The mdBook HTML folder (default: the Rust book).")
    parser.add_argument("--book-only", action="store_true", help="Skip the std::fs reference pages.")
    args = parser.parse_args()
    book = args.docs or find_book()
    if book is None:
        raise SystemExit("the Rust book HTML was not found; install a Rust toolchain (rustup) or pass --docs DIR")

    from tempscale_rag import TempScaleEncoder
    from tempscale_rag.ingest import readers

    encoder = TempScaleEncoder(device="cpu")
    corpora = [
        (f"{len(CHAPTERS)} chapters of the Rust book", book, CHAPTERS, QUESTIONS + MORE_QUESTIONS),
        ("22 function pages of Rust's std::fs reference", book.parent / "std" / "fs", None, FS_QUESTIONS),
    ][: 1 if args.book_only else 2]
    results = []
    for title, source, names, questions in corpora:
        if not source.exists():
            print(f"{title}: {source} not found, skipped")
            continue
        pages = names or sorted(p.name for p in source.glob("fn.*.html"))
        with tempfile.TemporaryDirectory() as tmp:
            docs = Path(tmp) / "docs"
            docs.mkdir()
            for name in pages:
                shutil.copy(source / name, docs / name)
            new_reader = readers._html_text
            rows = []
            try:
                readers._html_text = old_html_text
                rows.append(
                    build_and_score("before: BeautifulSoup get_text", docs, Path(tmp) / "b", encoder, questions, 5)
                )
            finally:
                readers._html_text = new_reader
            rows.append(
                build_and_score("after: trafilatura main content", docs, Path(tmp) / "a", encoder, questions, 5)
            )
        results.append({"corpus": title, "folder": str(source), "results": rows})
        n_all = len(questions)
        print(f"\n{title} ({source})")
        print(f"{'reader':34} {'5 questions':>15} {f'all {n_all}':>15} {'chunks':>7} {'chrome':>7} {'lone code':>9}")
        print(f"{'':34} {'top-1   MRR@10':>15} {'top-1   MRR@10':>15}")
        for r in rows:
            five, every = r["five"], r["all"]
            print(
                f"{r['reader']:34} {five['top1']:6.2f} {five['mrr@10']:8.3f} {every['top1']:6.2f} "
                f"{every['mrr@10']:8.3f} {r['chunks']:7d} {r['chunks_with_page_chrome']:7d} "
                f"{r['lines_that_are_a_lone_code_word']:9d}"
            )
            print(f"{'':34} ranks {r['ranks']}")
    print("\n" + json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
