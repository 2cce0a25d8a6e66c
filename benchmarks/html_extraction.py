"""HTML text extraction before/after: retrieval on a real documentation folder with the old and the new HTML reader.

Documents: chapters of *The Rust Programming Language* as installed with a Rust toolchain (mdBook HTML, found under
`$(rustc --print sysroot)/share/doc/rust/html/book`, or give `--docs DIR`). Each page carries the site's chrome
(keyboard-shortcut help, theme picker, menu bar, previous/next links) around the chapter text, and its inline code
(`<code>`) sits in the middle of sentences.

- *before*: the previous reader, BeautifulSoup's `get_text("\\n")` (every tag boundary becomes a line break, all
  page chrome kept), patched in for the build;
- *after*: the current reader, `tempscale_rag.ingest.readers` (trafilatura main-content extraction, BeautifulSoup
  fallback).

Both indexes are built exactly as `tempscale-rag index DOCS --out OUT` builds one by default (the CLI itself runs:
bundled all-MiniLM-L6-v2, every page chunked at each default `ChunkingConfig` size with its own temperature, queries
at tau 1, exact FAISS), and queried as `tempscale-rag search` does (the query encoder from the index's manifest).
Five questions (the issue's), then all sixteen (one per chapter), each answered by one chapter. Two measures:

- *pages*: the rank of the answering page in `search_documents(store, query, 10)` (whole files ranked from their
  chunks with the index's `doc_score`, softmax by default; what `tempscale-rag search --documents` shows);
- *first chunk*: the rank of the answering page in the order in which pages first appear among the top 10 chunks of
  `store.search(query, 10)` (chunks of every size mixed, what `tempscale-rag search` shows).

Printed per measure: top-1 accuracy and MRR@10; for pages also the score margin (the answering page's document score
minus the best other page's, per question and its mean); per index: chunks indexed (and per size), chunks holding
page chrome, and lines of a chunk that are a lone code word (split inline code); and of the top-10 chunks `search`
shows for every question, how many hold page chrome or a lone code word and the share from the answering page.

A second folder, the 22 function pages of `std::fs` from the same installed documentation (rustdoc HTML), gets five
questions of its own.

A third folder is Sphinx HTML, the kind of page the issue describes (site navigation, a sidebar table of contents,
previous/next topic, "Report a Bug", "Show Source"): 23 file- and data-format pages of Python's own library reference
as installed by Debian's `python3-doc` (`/usr/share/doc/python3.X/html/library`, or give `--python-docs DIR`), with
five questions, then eighteen more, each answered by one page. Sphinx renders every cross-reference (`str`, `None`,
a function name) as its own `<code>`/`<span>` inline, so the old reader also splits sentences there.

A fourth folder is Node.js's API reference as Debian's `nodejs-doc` installs it (`/usr/share/doc/nodejs/api`, or
give `--node-docs DIR`): forty module pages, each carrying the whole site's navigation (every module's name, twice)
and its own table of contents, with forty questions, each answered by one page.

With `--python-pages N` (N > 23) the Python folder also holds N - 23 other pages of the library reference, evenly
spaced in name order, as distractors: the same questions over a folder closer in size to a real documentation tree.

    python benchmarks/html_extraction.py [--docs DIR] [--python-docs DIR] [--node-docs DIR] [--sets book,fs,python,node]
        [--log FILE]
    python benchmarks/html_extraction.py --sets python --python-pages 100 --log FILE
    python benchmarks/html_extraction.py --sets python --readers after --log FILE   (a chunker change: one index)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

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
# The Sphinx folder: pages of the "File and Directory Access", "Data Persistence", "Data Compression and Archiving",
# "File Formats" and "Generic Operating System Services" chapters of Python 3's library reference (os.html itself is
# left out: at 750 kB it is larger than the other 23 together). Each question is answered by one page only.
PY_PAGES = [
    "os.path.html",
    "pathlib.html",
    "shutil.html",
    "glob.html",
    "fnmatch.html",
    "tempfile.html",
    "filecmp.html",
    "stat.html",
    "fileinput.html",
    "linecache.html",
    "json.html",
    "csv.html",
    "configparser.html",
    "tomllib.html",
    "pickle.html",
    "shelve.html",
    "zipfile.html",
    "tarfile.html",
    "gzip.html",
    "bz2.html",
    "lzma.html",
    "zlib.html",
    "io.html",
]
PY_QUESTIONS = [
    ("How do I create a temporary file that is deleted automatically when it is closed?", "tempfile.html"),
    ("How do I write a Python object to a file as JSON with indentation?", "json.html"),
    ("How do I read the rows of a CSV file as dictionaries keyed by the header row?", "csv.html"),
    ("How do I copy a whole directory tree to another location?", "shutil.html"),
    ("How do I extract all members of a zip archive into a folder?", "zipfile.html"),
]
PY_MORE_QUESTIONS = [
    ("How do I parse a TOML configuration file?", "tomllib.html"),
    ("How do I read an INI file with sections and key = value options?", "configparser.html"),
    ("How do I compare two directories and list the files that differ?", "filecmp.html"),
    ("How do I keep Python objects in a persistent dictionary stored in a file?", "shelve.html"),
    ("How do I serialize an arbitrary Python object to bytes and load it back?", "pickle.html"),
    ("How do I compress a file with gzip and read it back?", "gzip.html"),
    ("How do I get one particular line of a source file by its line number?", "linecache.html"),
    ("How do I loop over the lines of several input files or standard input in one loop?", "fileinput.html"),
    ("How do I join path components with the / operator on a path object?", "pathlib.html"),
    ("How do I tell from an os.stat mode whether a file is a directory or a symbolic link?", "stat.html"),
    ("How do I list the members of a tar archive?", "tarfile.html"),
    ("How do I use an in-memory bytes buffer as a binary file object?", "io.html"),
    ("How do I compress data with the LZMA algorithm into an .xz file?", "lzma.html"),
    ("How do I compute a CRC-32 checksum of some bytes?", "zlib.html"),
    ("How do I open a bzip2-compressed file?", "bz2.html"),
    ("How do I escape special characters so that a literal file name is matched by glob?", "glob.html"),
    ("How do I filter a list of names by a Unix shell-style wildcard pattern?", "fnmatch.html"),
    ("How do I find the longest common sub-path of several path strings?", "os.path.html"),
]
# A fourth folder: Node.js's API reference as Debian's `nodejs-doc` installs it (/usr/share/doc/nodejs/api), one HTML
# page per module. Every page carries the whole site's navigation (all ~60 module names, twice: the sidebar and the
# "Index" menu), the page's own table of contents (every method name), "Edit on GitHub" and version pickers: page
# chrome that names every other page, which is what the issue describes. Forty questions, each answered by one page; the
# folder holds those forty pages.
NODE_QUESTIONS = [
    ("How do I get the extension of a file name?", "path.html"),
    ("How many CPUs can my program use and how much memory is free?", "os.html"),
    ("How do I ask the user a question in the terminal and read the answer?", "readline.html"),
    ("How do I look up the IP address of a hostname?", "dns.html"),
    ("How do I read the query parameters of a URL?", "url.html"),
]
NODE_MORE_QUESTIONS = [
    ("How do I call a function repeatedly every few seconds and stop it later?", "timers.html"),
    ("How do I time how long a piece of code takes, with a label?", "console.html"),
    ("How do I run a shell command and get its output?", "child_process.html"),
    ("How do I check in a test that two objects are deeply equal?", "assert.html"),
    ("How do I create a server that accepts encrypted connections with a certificate and key?", "tls.html"),
    ("How do I run untrusted JavaScript code in a separate context?", "vm.html"),
    ("How do I gzip-compress a buffer?", "zlib.html"),
    ("How do I run CPU-heavy JavaScript on another thread?", "worker_threads.html"),
    ("How do I write a heap snapshot to find a memory leak?", "v8.html"),
    ("How do I measure the time between two marks with high resolution?", "perf_hooks.html"),
    ("How do I send a UDP datagram?", "dgram.html"),
    ("How do I spread incoming connections over several processes, one per CPU core?", "cluster.html"),
    ("How do I find out which file require would load for a module name, without loading it?", "modules.html"),
    ("How do I get the directory of the current file in an ES module?", "esm.html"),
    ("How do I write a diagnostic report of the process to a file?", "report.html"),
    ("How do I keep request-scoped data across asynchronous calls?", "async_context.html"),
    ("How do I start an interactive JavaScript prompt inside my application?", "repl.html"),
    ("How do I decode bytes to text without splitting multi-byte UTF-8 characters?", "string_decoder.html"),
    ("How do I check whether output goes to a terminal and get its width in columns?", "tty.html"),
    ("How do I make a GET request to an https URL?", "https.html"),
    ("How do I create a TCP server that listens on a port?", "net.html"),
    ("How do I run a WebAssembly program that uses a system interface?", "wasi.html"),
    (
        "How do I publish diagnostic messages on a named channel that tools can subscribe to?",
        "diagnostics_channel.html",
    ),
    ("How do I generate a key and encrypt data with the Web Crypto API?", "webcrypto.html"),
    ("How do I turn my script into a single executable file I can ship?", "single-executable-applications.html"),
    ("How do I restrict which files a Node.js process may read?", "permissions.html"),
    ("How do I format dates and numbers for languages other than English?", "intl.html"),
    ("How do I serialize an object into a URL query string?", "querystring.html"),
    ("How do I start a CPU profile from code through the inspector protocol?", "inspector.html"),
    ("How do I wait for an event to be emitted once, with a promise?", "events.html"),
    ("How do I deep-copy a value with a built-in global function?", "globals.html"),
    ("How do I step through my script with the built-in command-line debugger?", "debugger.html"),
    ("How do I install the package manager version a project pins?", "corepack.html"),
    ("How do I define which files of my package other code can import?", "packages.html"),
    ("How do I build a C++ addon with node-gyp?", "addons.html"),
]
NODE_PAGES = [page for _q, page in NODE_QUESTIONS + NODE_MORE_QUESTIONS]
CHROME = (
    "Keyboard shortcuts",
    "to navigate between chapters",
    "Previous chapter",
    "Next chapter",
    "Print this book",
    "Skip to main content",
    "Copy item path",
    # Sphinx (Python docs): sidebar, related bar and footer.
    "Show Source",
    "Report a Bug",
    "Previous topic",
    "Next topic",
    "Please donate",
    # Node.js: the "Index" menu and the version picker / GitHub links above every page.
    "View on single page",
    "Edit on GitHub",
    "Asynchronous context tracking\nAsync hooks",
)
# Inline code that the old reader leaves alone on a line (Rust pages, then Python's cross-references).
LONE_CODE = {"String", "Option<T>", "match", "Path", "<", ">", "None", "str", "bytes", "True", "False"}


def find_book() -> Path | None:
    try:
        sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        sysroot = ""
    candidates = [Path(sysroot.strip()) / "share/doc/rust/html/book"] if sysroot.strip() else []
    candidates += sorted(Path.home().glob(".rustup/toolchains/*/share/doc/rust/html/book"))
    return next((c for c in candidates if (c / CHAPTERS[0]).exists()), None)


def python_pages(folder: Path, n: int) -> list[str]:
    """The questioned pages, then `n - len(PY_PAGES)` other pages of `folder` evenly spaced in name order."""
    others = sorted(p.name for p in folder.glob("*.html") if p.name not in PY_PAGES)
    extra = max(0, min(n - len(PY_PAGES), len(others)))
    return PY_PAGES + [others[i * len(others) // extra] for i in range(extra)] if extra else list(PY_PAGES)


def find_python_docs() -> Path | None:
    """Python's library reference as installed by Debian/Ubuntu's `python3-doc` (Sphinx HTML)."""
    # Debian links python3.X-venv, python3.X-dev ... to python3.X: resolve so that the log names the real folder.
    candidates = sorted({c.resolve() for c in Path("/usr/share/doc").glob("python3*/html/library")}, reverse=True)
    return next((c for c in candidates if all((c / name).exists() for name in PY_PAGES)), None)


def find_node_docs() -> Path | None:
    """Node.js's API reference as installed by Debian/Ubuntu's `nodejs-doc`."""
    folder = Path("/usr/share/doc/nodejs/api")
    return folder if all((folder / name).exists() for name in NODE_PAGES) else None


def old_html_text(path: Path, data: bytes) -> str:
    """The HTML reader before trafilatura (verbatim from the previous `readers._html_text`)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def build_and_score(
    label: str, docs: Path, folder: Path, questions: list[tuple[str, str]], first: int
) -> dict[str, Any]:
    """Index `docs` with `tempscale-rag index` (defaults) and score `questions` on pages and on chunks."""
    from tempscale_rag.cli import main as cli_main
    from tempscale_rag.encoder import TempScaleEncoder
    from tempscale_rag.ranking import document_scoring, search_documents_many
    from tempscale_rag.stores import manifest_of, open_store

    start = time.perf_counter()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["-q", "index", str(docs), "--out", str(folder), "--json"])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"tempscale-rag index failed ({code}) for {label}: {out.getvalue()[-2000:]}")
    summary = json.loads(out.getvalue())
    with open_store(folder, read_only=True) as store:
        manifest = manifest_of(store)
        if manifest is None or manifest.chunking is None:
            raise SystemExit(f"{folder}: no multi-size chunking recorded; the CLI's defaults changed")
        # As `tempscale-rag search` does: the query encoder from the index's own recorded settings.
        encoder = TempScaleEncoder(config=manifest.config)
        vectors = encoder.encode([q for q, _ in questions], query=True)
        chunk_hits = store.search_many(vectors, k=10)
        page_hits = search_documents_many(store, vectors, k=10, scoring=document_scoring(None, manifest.chunking))
        chunks = store.search(vectors[0], k=store.count())
        chunking = manifest.chunking
        query_tau = manifest.config.query_temperature
    chunk_ranks: list[int | None] = []
    page_ranks: list[int | None] = []
    margins: list[float | None] = []
    top1: list[str] = []
    for (_question, answer), hits, pages in zip(questions, chunk_hits, page_hits, strict=True):
        files: list[str] = []
        for hit in hits:
            name = Path(hit.source).name
            if name not in files:
                files.append(name)
        chunk_ranks.append(files.index(answer) + 1 if answer in files else None)
        ranked = [Path(doc.source).name for doc in pages]
        page_ranks.append(ranked.index(answer) + 1 if answer in ranked else None)
        # The answering page's document score minus the best other page's: > 0 when it ranks first, by that gap.
        by_name = {Path(doc.source).name: doc.score for doc in pages}
        others = [score for name, score in by_name.items() if name != answer]
        if answer in by_name and others:
            margins.append(round(by_name[answer] - max(others), 4))
        else:
            margins.append(None)
        top1.append(ranked[0] if ranked else "")
    by_size: dict[str, int] = {}
    for c in chunks:
        size = str(c.metadata.get("chunk_tokens"))
        by_size[size] = by_size.get(size, 0) + 1
    chrome = sum(_has_chrome(c.text) for c in chunks)
    split_code = sum(_lone_code_lines(c.text) for c in chunks)
    shown = [hit for hits in chunk_hits for hit in hits]  # every top-10 chunk `search` shows, over all questions
    on_answer = [
        sum(Path(hit.source).name == answer for hit in hits) / len(hits) if hits else 0.0
        for (_q, answer), hits in zip(questions, chunk_hits, strict=True)
    ]
    return {
        "reader": label,
        "chunking": chunking.spec(),
        "doc_score": chunking.doc_score,
        "query_temperature": query_tau,
        "files": summary["files_indexed"],
        "chunks": summary["chunks"],
        "chunks_by_size": by_size,
        "tokens": summary["tokens"],
        "seconds": round(seconds, 1),
        "pages": {
            "five": _scores(page_ranks[:first]),
            "all": _scores(page_ranks),
            "ranks": page_ranks,
            "margins": margins,
            "mean_margin_five": _mean(margins[:first]),
            "mean_margin_all": _mean(margins),
        },
        "first_chunk": {"five": _scores(chunk_ranks[:first]), "all": _scores(chunk_ranks), "ranks": chunk_ranks},
        "top1_pages": top1,
        "chunks_with_page_chrome": chrome,
        "lines_that_are_a_lone_code_word": split_code,
        "top10_chunks": {
            "shown": len(shown),
            "with_page_chrome": sum(_has_chrome(hit.text) for hit in shown),
            "with_a_lone_code_word_line": sum(_lone_code_lines(hit.text) > 0 for hit in shown),
            "from_the_answering_page": round(sum(on_answer) / len(on_answer), 3),
        },
    }


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def _has_chrome(text: str) -> bool:
    return any(marker in text for marker in CHROME)


def _lone_code_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() in LONE_CODE)


def _scores(ranks: list[int | None]) -> dict[str, float]:
    return {
        "top1": round(sum(r == 1 for r in ranks) / len(ranks), 3),
        "mrr@10": round(sum(1 / r for r in ranks if r) / len(ranks), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=None, help="The mdBook HTML folder (default: the Rust book).")
    parser.add_argument("--book-only", action="store_true", help="Only the Rust book (same as --sets book).")
    parser.add_argument(
        "--python-docs",
        type=Path,
        default=None,
        help="Python's Sphinx library reference folder (default: /usr/share/doc/python3*/html/library).",
    )
    parser.add_argument(
        "--python-pages",
        type=int,
        default=len(PY_PAGES),
        help=f"Pages of the Python folder to index: the {len(PY_PAGES)} that answer the questions, plus distractors.",
    )
    parser.add_argument(
        "--node-docs",
        type=Path,
        default=None,
        help="Node.js's API reference folder (default: /usr/share/doc/nodejs/api).",
    )
    parser.add_argument(
        "--sets",
        default="book,fs,python,node",
        help="Comma-separated folders to measure: book (Rust book), fs (std::fs), python (Sphinx), node (Node.js). "
        "Default: all.",
    )
    parser.add_argument(
        "--readers",
        default="before,after",
        help="Which readers to build indexes with: before, after, or both (default). `after` alone measures a change "
        "elsewhere (the chunker) at half the cost.",
    )
    parser.add_argument(
        "--log",
        type=Path,
        default=Path(__file__).parent / "results" / "html_extraction.log",
        help="Also write the table and JSON here (default: benchmarks/results/html_extraction.log).",
    )
    args = parser.parse_args()
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    sets = ["book"] if args.book_only else [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = sorted(set(sets) - {"book", "fs", "python", "node"})
    if unknown:
        raise SystemExit(f"--sets: unknown folder(s) {', '.join(unknown)}; choose from book, fs, python, node")

    readers_wanted = {name.strip() for name in args.readers.split(",") if name.strip()}
    if not readers_wanted or readers_wanted - {"before", "after"}:
        raise SystemExit(f"--readers: choose before, after or both, got {args.readers!r}")

    from tempscale_rag.ingest import readers

    corpora: list[tuple[str, Path, list[str] | None, list[tuple[str, str]]]] = []
    if "book" in sets or "fs" in sets:
        book = args.docs or find_book()
        if book is None:
            raise SystemExit("the Rust book HTML was not found; install a Rust toolchain (rustup) or pass --docs DIR")
        if "book" in sets:
            corpora.append((f"{len(CHAPTERS)} chapters of the Rust book", book, CHAPTERS, QUESTIONS + MORE_QUESTIONS))
        if "fs" in sets:
            corpora.append(
                ("22 function pages of Rust's std::fs reference", book.parent / "std" / "fs", None, FS_QUESTIONS)
            )
    if "python" in sets:
        python_docs = args.python_docs or find_python_docs()
        if python_docs is None:
            raise SystemExit(
                "Python's HTML documentation was not found; `apt-get install python3-doc` or pass --python-docs DIR"
            )
        pages = python_pages(python_docs, args.python_pages)
        corpora.append(
            (
                f"{len(pages)} pages of Python's library reference (Sphinx)",
                python_docs,
                pages,
                PY_QUESTIONS + PY_MORE_QUESTIONS,
            )
        )
    if "node" in sets:
        node_docs = args.node_docs or find_node_docs()
        if node_docs is None:
            raise SystemExit(
                "Node.js's HTML documentation was not found; `apt-get install nodejs-doc` or pass --node-docs DIR"
            )
        corpora.append(
            (
                f"{len(NODE_PAGES)} pages of Node.js's API reference",
                node_docs,
                NODE_PAGES,
                NODE_QUESTIONS + NODE_MORE_QUESTIONS,
            )
        )
    results = []
    for title, source, names, questions in corpora:
        if not source.exists():
            out(f"{title}: {source} not found, skipped")
            continue
        pages = names or sorted(p.name for p in source.glob("fn.*.html"))
        with tempfile.TemporaryDirectory() as tmp:
            docs = Path(tmp) / "docs"
            docs.mkdir()
            for name in pages:
                shutil.copy(source / name, docs / name)
            new_reader = readers._html_text
            rows = []
            if "before" in readers_wanted:
                try:
                    readers._html_text = old_html_text
                    rows.append(build_and_score("before: BeautifulSoup get_text", docs, Path(tmp) / "b", questions, 5))
                finally:
                    readers._html_text = new_reader
            if "after" in readers_wanted:
                rows.append(build_and_score("after: trafilatura main content", docs, Path(tmp) / "a", questions, 5))
        results.append({"corpus": title, "folder": str(source), "results": rows})
        n_all = len(questions)
        spec = f"chunk sizes {rows[0]['chunking']}, doc score {rows[0]['doc_score']}"
        out(f"\n{title} ({source})")
        out(f"index: `tempscale-rag index` defaults ({spec}); queries as `tempscale-rag search`")
        head = f"{'5 questions':>15} {f'all {n_all}':>15} {'chunks':>7} {'chrome':>7} {'lone code':>9}"
        out(f"{'reader':32} {'measure':12} {head}")
        out(f"{'':32} {'':12} {'top-1   MRR@10':>15} {'top-1   MRR@10':>15}")
        for r in rows:
            counts = f"{r['chunks']:7d} {r['chunks_with_page_chrome']:7d} {r['lines_that_are_a_lone_code_word']:9d}"
            for key, measure, name, tail in (
                ("pages", "pages", r["reader"], counts),
                ("first_chunk", "first chunk", "", ""),
            ):
                five, every = r[key]["five"], r[key]["all"]
                out(
                    f"{name:32} {measure:12} {five['top1']:6.2f} {five['mrr@10']:8.3f} {every['top1']:6.2f} "
                    f"{every['mrr@10']:8.3f} {tail}".rstrip()
                )
            out(f"{'':32} page ranks {r['pages']['ranks']}")
            out(
                f"{'':32} answering page's score minus the best other page's: mean {r['pages']['mean_margin_five']} "
                f"(5 questions), {r['pages']['mean_margin_all']} (all); per question {r['pages']['margins']}"
            )
            out(f"{'':32} first-chunk ranks {r['first_chunk']['ranks']}")
            t = r["top10_chunks"]
            out(
                f"{'':32} top-10 chunks of `search` over the {n_all} questions: {t['shown']} shown, "
                f"{t['with_page_chrome']} with page chrome, {t['with_a_lone_code_word_line']} with a lone code word "
                f"line; share from the answering page {t['from_the_answering_page']:.3f}"
            )
            out(f"{'':32} chunks by size {r['chunks_by_size']}, {r['tokens']} tokens, built in {r['seconds']} s")
    out("\n" + json.dumps(results, indent=2))
    if args.log is not None:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        args.log.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"\nwritten to {args.log}")


if __name__ == "__main__":
    main()
