"""Reading documents from disk: text, Markdown, reStructuredText, HTML (BeautifulSoup) and PDF (pypdf).

Every failure is a `DocumentError` whose message says what is wrong with the file, so the indexer can report it per
file, skip it and carry on with the rest.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES
_IGNORED_DIRS = frozenset({"__pycache__", "node_modules"})

DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
"""Files larger than this are skipped (configurable): a 64 MB text file is ~16M tokens, hours on a laptop CPU."""


class DocumentError(ValueError):
    """A file that cannot be indexed, with the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def find_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[DocumentError]]:
    """Walk files and folders recursively, in a stable order.

    Hidden files and folders (a leading dot, such as `.git`) are not entered. Files of unsupported types are returned
    as errors so the summary can list them.

    Returns:
        The supported files (absolute, resolved, deduplicated) and the problems found (missing paths,
        unsupported types).
    """
    found: dict[Path, None] = {}
    problems: list[DocumentError] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            problems.append(DocumentError(path, "no such file or folder"))
            continue
        candidates: Iterator[Path] | list[Path]
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
        else:
            candidates = [path]
        for file in candidates:
            if file.suffix.lower() in SUPPORTED_SUFFIXES:
                found.setdefault(file.resolve(), None)
            else:
                problems.append(
                    DocumentError(
                        file.resolve(),
                        f"unsupported file type {file.suffix or '(none)'!r}; supported: "
                        + ", ".join(sorted(SUPPORTED_SUFFIXES)),
                    )
                )
    return list(found), problems


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part in _IGNORED_DIRS for part in relative.parts)


def fingerprint(data: bytes) -> str:
    """Content fingerprint used to skip unchanged files (sha256 of the raw bytes)."""
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """Read a file's bytes, refusing files above `max_bytes` before reading them."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DocumentError(
                path, f"file is {size / 1e6:.1f} MB, above the {max_bytes / 1e6:.0f} MB limit (--max-file-mb)"
            )
        return path.read_bytes()
    except PermissionError:
        raise DocumentError(path, "permission denied") from None
    except OSError as exc:
        raise DocumentError(path, f"cannot read: {exc.strerror or exc}") from None


def extract_text(path: Path, data: bytes) -> str:
    """Turn a file's bytes into plain text according to its type.

    Raises:
        DocumentError: For binary or non-UTF-8 text files, unreadable HTML/PDF, or files with no text.
    """
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        text = _decode_text(path, data)
    elif suffix in HTML_SUFFIXES:
        text = _html_text(path, data)
    elif suffix in PDF_SUFFIXES:
        text = _pdf_text(path, data)
    else:
        raise DocumentError(path, f"unsupported file type {suffix!r}")
    if not text.strip():
        raise DocumentError(path, "no text to index (the file is empty or whitespace only)")
    return text


def _decode_text(path: Path, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentError(path, "looks binary (NUL bytes), not a text file")
    try:
        return codecs.decode(data, "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            path, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); convert it to UTF-8"
        ) from None


def _html_text(path: Path, data: bytes) -> str:
    from bs4 import BeautifulSoup

    if b"\x00" in data[:8192]:
        raise DocumentError(path, "looks binary (NUL bytes), not an HTML file")
    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def _pdf_text(path: Path, data: bytes) -> str:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError(path, "the PDF is encrypted; decrypt it first")
        return "\n\n".join((page.extract_text() or "") for page in reader.pages)
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(path, f"not a readable PDF: {exc}") from None
