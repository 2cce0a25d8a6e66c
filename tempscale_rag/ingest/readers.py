r"""Finding and reading documents: text, Markdown, reStructuredText, HTML (trafilatura) and PDF (pypdf).

The rules, in one place (the README's "What gets indexed" section says the same):

- Supported types: `.txt .text .md .markdown .rst` (text), `.html .htm` (HTML), `.pdf`. Anything else met while
  walking a folder is skipped with the reason "unsupported file type".
- Hidden files and folders (a name starting with a dot, such as `.git`) and the folders `__pycache__` and
  `node_modules` are skipped unless `include_hidden=True` (`--include-hidden`); a path named explicitly is never
  skipped as hidden.
- Symbolic links are followed, to files and to folders. Each folder is walked once (identified by device and inode),
  so a link back to a parent (a loop) or a second link to the same folder is skipped with a reason; a file reached
  under two names is indexed once. A link whose target does not exist is skipped as a dangling link.
- The index's own folder is never walked (`exclude`), so `tempscale-rag index .` does not read its own database.
- Text files are decoded as UTF-8 (a UTF-8/16/32 byte-order mark is honoured). Other encodings (Latin-1, cp1252, ...)
  are detected with charset-normalizer when it is confident; the encoding used is reported. Otherwise the file is
  rejected with a reason.
- A path that is not valid UTF-8 is indexed under the way Python writes its raw bytes, `b'/docs/caf\xe9.txt'` (see
  `source_name`): printable, so it survives SQLite, JSON and any terminal, and never the name of another file (every
  indexed path is absolute, and no absolute path starts with `b'`), so two files never share a name in the index.

Every problem is a `DocumentError` with a `kind` that says what happened: a *skip* (by rule, not a problem: unsupported
type, hidden, link, duplicate, the index folder, no text) or a *failure* (the file should have been indexed but
could not: rejected content, unreadable, missing path).
"""

from __future__ import annotations

import ast
import codecs
import hashlib
import itertools
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES
IGNORED_DIRS = frozenset({"__pycache__", "node_modules"})
"""Folders skipped like hidden ones (build output and dependencies, not documents)."""

DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
"""Files larger than this are skipped (configurable): a 64 MB text file is ~16M tokens, hours on a laptop CPU."""

SKIP_KINDS = frozenset({"unsupported", "hidden", "link", "duplicate", "index", "special", "empty"})
"""`DocumentError.kind` values that are skips by rule: reported, but not failures."""

FAILURE_KINDS = frozenset({"rejected", "unreadable", "missing"})
"""`DocumentError.kind` values that are failures: `rejected` (the content cannot be indexed: binary, undecodable,
broken PDF, too large), `unreadable` (permission denied, I/O error: the file or folder could not be read this time),
`missing` (a path given to index does not exist)."""

# charset-normalizer's "mess" ratio above which a decoding is not trusted, and the language coherence below which a
# decoding is accepted only if every equally good candidate decodes the bytes to the same text.
_MAX_CHAOS = 0.1
_MIN_COHERENCE = 0.1
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class DocumentError(ValueError):
    """A file or folder that is not indexed, with the reason and its kind (see `SKIP_KINDS`, `FAILURE_KINDS`).

    `what` says what the path is: `file`, `folder`, or `path` when that is unknown (missing, cannot be looked at).
    """

    def __init__(self, path: Path, reason: str, kind: str = "rejected", what: str = "file") -> None:
        super().__init__(f"{source_name(path)}: {reason}")
        self.path = path
        self.reason = reason
        self.kind = kind
        self.what = what

    @property
    def is_failure(self) -> bool:
        """True for failures (rejected, unreadable, missing), False for skips by rule."""
        return self.kind in FAILURE_KINDS

    def to_dict(self) -> dict[str, str]:
        """`{"path", "reason", "kind", "what"}` with a printable path."""
        return {"path": source_name(self.path), "reason": self.reason, "kind": self.kind, "what": self.what}


@dataclass
class Discovery:
    """What `find_files` found.

    Attributes:
        files: Supported files to read, in a stable order (sorted by name within each folder).
        skipped: Paths skipped by rule (kinds in `SKIP_KINDS`).
        failed: Paths that could not be looked at (`missing` input paths, `unreadable` folders).
        unlisted_dirs: Folders whose listing failed; indexed files beneath them must not be pruned.
    """

    files: list[Path] = field(default_factory=list)
    skipped: list[DocumentError] = field(default_factory=list)
    failed: list[DocumentError] = field(default_factory=list)
    unlisted_dirs: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Extracted:
    """A document's text and how it was obtained.

    Attributes:
        text: The plain text.
        encoding: For text files, the encoding used (`utf-8`, or the detected one such as `cp1252`); None otherwise.
        detected: True when the encoding was detected (not UTF-8 and no byte-order mark).
    """

    text: str
    encoding: str | None = None
    detected: bool = False


def source_name(path: str | os.PathLike[str]) -> str:
    r"""The printable, storable name of a path: the key of its chunks in the store.

    The path itself, or for a path that is not valid UTF-8, Python's way of writing its raw bytes: `b'/a/caf\xe9.txt'`.

    Python represents undecodable bytes as lone surrogates (PEP 383), which SQLite, JSON and terminals refuse. The
    bytes form cannot be the name of another indexed file, since indexed paths are absolute and start with `/`:
    the earlier `/a/caf\xe9.txt` (each undecodable byte written as `\xNN`, see `legacy_source_name`) was also the
    name of a file literally called `caf\xe9.txt`, and the two overwrote each other. `path_of` turns a name back
    into the path.
    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return repr(os.fsencode(text))
    return text


def legacy_source_name(path: str | os.PathLike[str]) -> str | None:
    r"""The name earlier versions stored a non-UTF-8 path under (`/a/caf\xe9.txt`), else None.

    An index written then holds such names; `FolderIndexer` replaces them by `source_name` when it re-indexes the file.
    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return None


def path_of(source: str) -> Path:
    """The path a `source_name` refers to (also for the `legacy_source_name` of a file that exists)."""
    raw = _bytes_literal(source)
    if raw is not None:
        return Path(os.fsdecode(raw))
    path = Path(source)
    if "\\x" in source and not os.path.lexists(path):
        try:
            raw = source.encode("utf-8").decode("unicode_escape").encode("latin-1")
        except (UnicodeDecodeError, UnicodeEncodeError):
            return path
        # Only the escapes were bytes; the rest was UTF-8 text that unicode_escape decoded as Latin-1.
        candidate = Path(os.fsdecode(raw))
        if os.path.lexists(candidate):
            return candidate
    return path


def _bytes_literal(source: str) -> bytes | None:
    """The bytes of a name written by `source_name` as a bytes literal, else None."""
    if len(source) < 3 or source[:2] not in ("b'", 'b"') or source[-1] != source[1]:
        return None
    try:
        value = ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, bytes) else None


def _scandir(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of a folder (a seam for tests, which simulate unreadable folders: root ignores permissions)."""
    with os.scandir(folder) as entries:
        return list(entries)


def find_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    include_hidden: bool = False,
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> Discovery:
    """Walk files and folders recursively, in a stable order, following the module's rules.

    Args:
        paths: Files and folders to index. A file named here is taken even if it is hidden.
        include_hidden: Also enter hidden files and folders and `__pycache__`/`node_modules`.
        exclude: Folders never to walk (the index's own folder).

    Returns:
        The supported files (absolute: each root resolved once, the names beneath it as walked, so files in a
        symlinked folder keep their path under the root) and every skip and failure with its reason.
    """
    walker = _Walker(include_hidden=include_hidden, exclude=exclude)
    for raw in paths:
        walker.root(Path(raw).expanduser())
    return walker.discovery


class _Walker:
    def __init__(self, *, include_hidden: bool, exclude: Sequence[str | os.PathLike[str]]) -> None:
        self.include_hidden = include_hidden
        self.discovery = Discovery()
        self.excluded: set[tuple[int, int]] = set()
        for folder in exclude:
            try:
                self.excluded.add(_identity(os.stat(folder)))
            except OSError:
                continue
        self.walked: dict[tuple[int, int], Path] = {}
        self.files: dict[tuple[int, int], Path] = {}

    def root(self, path: Path) -> None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            problem = "dangling symbolic link" if os.path.islink(path) else "no such file or folder"
            self.discovery.failed.append(DocumentError(path, problem, "missing", "path"))
            return
        except OSError as exc:
            self.discovery.failed.append(DocumentError(path, _os_reason(exc), "unreadable", "path"))
            return
        path = path.resolve()
        if stat.S_ISDIR(info.st_mode):
            self.folder(path, info)
        else:
            self.file(path, info, explicit=True)

    def folder(self, path: Path, info: os.stat_result) -> None:
        identity = _identity(info)
        if identity in self.excluded:
            self.skip(path, "the index's own folder (never indexed)", "index", "folder")
            return
        if identity in self.walked:
            first = self.walked[identity]
            if first != path:
                what = "a symbolic link loop" if first in path.parents else "the same folder"
                self.skip(path, f"{what}: already walked as {source_name(first)}", "link", "folder")
            return
        self.walked[identity] = path
        try:
            entries = sorted(_scandir(path), key=lambda e: e.name)
        except OSError as exc:
            self.discovery.failed.append(
                DocumentError(
                    path, f"cannot list folder: {_os_reason(exc)}; its indexed files are kept", "unreadable", "folder"
                )
            )
            self.discovery.unlisted_dirs.append(path)
            return
        for entry in entries:
            self.entry(path / entry.name, entry)

    def entry(self, path: Path, entry: os.DirEntry[str]) -> None:
        hidden = entry.name.startswith(".") or entry.name in IGNORED_DIRS
        try:
            info = entry.stat()  # follows symbolic links
        except FileNotFoundError:
            if hidden and not self.include_hidden:
                self.skip(path, "hidden (use --include-hidden to index it)", "hidden")
            else:
                self.skip(path, f"dangling symbolic link (target {_link_target(path)} does not exist)", "link")
            return
        except OSError as exc:
            if entry.is_symlink():
                self.skip(path, f"broken symbolic link: {_os_reason(exc)}", "link")
            else:
                what = "folder" if entry.is_dir(follow_symlinks=False) else "file"
                self.discovery.failed.append(DocumentError(path, _os_reason(exc), "unreadable", what))
            return
        if hidden and not self.include_hidden:
            what = "folder" if stat.S_ISDIR(info.st_mode) else "file"
            self.skip(path, f"hidden {what} (use --include-hidden to index it)", "hidden", what)
            return
        if stat.S_ISDIR(info.st_mode):
            self.folder(path, info)
        else:
            self.file(path, info, explicit=False)

    def file(self, path: Path, info: os.stat_result, *, explicit: bool) -> None:
        if not stat.S_ISREG(info.st_mode):
            self.skip(path, "not a regular file (device, socket or pipe)", "special")
            return
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            self.skip(
                path,
                f"unsupported file type {path.suffix or '(none)'!r}; supported: "
                + ", ".join(sorted(SUPPORTED_SUFFIXES)),
                "unsupported",
            )
            return
        identity = _identity(info)
        first = self.files.get(identity)
        if first is not None:
            if first != path:
                self.skip(path, f"the same file as {source_name(first)} (indexed once)", "duplicate")
            return
        self.files[identity] = path
        self.discovery.files.append(path)

    def skip(self, path: Path, reason: str, kind: str, what: str = "file") -> None:
        self.discovery.skipped.append(DocumentError(path, reason, kind, what))


def _identity(info: os.stat_result) -> tuple[int, int]:
    return (info.st_dev, info.st_ino)


def _link_target(path: Path) -> str:
    try:
        return source_name(os.readlink(path))
    except OSError:
        return "?"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


def fingerprint(data: bytes) -> str:
    """Content fingerprint used to skip unchanged files (sha256 of the raw bytes)."""
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: Path, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """Read a file's bytes, refusing files above `max_bytes` (None: no limit) before reading them.

    Raises:
        DocumentError: kind `rejected` for a file over the limit, `unreadable` when it cannot be read (permission,
            I/O error), `missing` when it disappeared since it was found.
    """
    try:
        check_size(path, path.stat().st_size, max_bytes)
        return path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(path, "disappeared while indexing", "missing") from None
    except OSError as exc:
        raise DocumentError(path, f"cannot read: {_os_reason(exc)}", "unreadable") from None


def check_size(path: Path, size: int, max_bytes: int | None) -> None:
    """Raise `DocumentError` (kind `rejected`) for a file above `max_bytes` (None: no limit)."""
    if max_bytes is not None and size > max_bytes:
        raise DocumentError(
            path, f"file is {size / 1e6:.1f} MB, above the {max_bytes / 1e6:g} MB limit (--max-file-mb)", "rejected"
        )


TEXT_BLOCK_CHARS = 64 * 1024
"""Characters of a big text file split into chunks at a time (`text_blocks`): the file is never held whole."""

_READ_BYTES = 1 << 20


@dataclass(frozen=True)
class TextScan:
    """A text file checked without holding it (`scan_text`): what reading it in blocks needs.

    Attributes:
        fingerprint: The content fingerprint (as `fingerprint` of its bytes).
        codec: The codec to decode it with (`utf-8`, `utf-8-sig`, `utf-16`, ... or the detected one).
        encoding: The encoding to report (as `Extracted.encoding`).
        detected: True when the encoding was detected (not UTF-8 and no byte-order mark).
        size: Its size in bytes.
    """

    fingerprint: str
    codec: str
    encoding: str
    detected: bool
    size: int


def scan_text(path: Path, max_bytes: int | None, *, above: int) -> TextScan | None:
    """Fingerprint and check a text file bigger than `above` bytes in one pass of bounded memory; None if smaller.

    The checks and errors are those of `read_bytes` and `extract` for a text file: size limit, byte-order mark, NUL
    bytes, UTF-8 or a confidently detected encoding (detected on the first MB, then checked on the whole file), some
    text. Read the text with `text_blocks`.

    Raises:
        DocumentError: As `read_bytes` and `extract` would.
    """
    try:
        size = path.stat().st_size
        if size <= above:
            return None
        check_size(path, size, max_bytes)
        with path.open("rb") as handle:
            head = handle.read(_READ_BYTES)
        bom = next((encoding for mark, encoding in _BOMS if head.startswith(mark)), None)
        if bom is None and b"\x00" in head[:8192]:
            raise DocumentError(path, "looks binary (NUL bytes), not a text file")
        codec, detected = bom or "utf-8", False
        try:
            digest, has_text = _check_decodes(path, codec)
        except UnicodeDecodeError as exc:
            if bom is not None:
                raise DocumentError(path, f"starts with a {bom} byte-order mark but is not valid {bom}") from None
            guess = detect_encoding(head)
            if guess is None:
                raise DocumentError(
                    path,
                    f"not valid UTF-8 (at offset {exc.start} of a {_READ_BYTES >> 20} MB block) and its encoding could "
                    "not be detected with confidence; convert it to UTF-8",
                ) from None
            codec, detected = guess[1], True
            try:
                digest, has_text = _check_decodes(path, codec)
            except UnicodeDecodeError:
                raise DocumentError(
                    path,
                    f"not valid UTF-8, and not valid {codec} (detected on its first MB) either; convert it to UTF-8",
                ) from None
    except FileNotFoundError:
        raise DocumentError(path, "disappeared while indexing", "missing") from None
    except OSError as exc:
        raise DocumentError(path, f"cannot read: {_os_reason(exc)}", "unreadable") from None
    if not has_text:
        raise DocumentError(path, "no text to index (the file is empty or whitespace only)", "empty")
    return TextScan(digest, codec, codec.removesuffix("-sig"), detected, size)


def _check_decodes(path: Path, codec: str) -> tuple[str, bool]:
    """Decode a whole file in blocks (raising `UnicodeDecodeError`): its fingerprint, and whether it has text."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder(codec)()
    has_text = False
    with path.open("rb") as handle:
        while data := handle.read(_READ_BYTES):
            digest.update(data)
            piece = decoder.decode(data)
            has_text = has_text or (bool(piece) and not piece.isspace())
        has_text = bool(decoder.decode(b"", final=True).strip()) or has_text
    return digest.hexdigest(), has_text


def text_blocks(path: Path, scan: TextScan, block_chars: int | None = None) -> Iterator[tuple[str, int]]:
    """The text of a file scanned by `scan_text`, in blocks of about `block_chars` characters cut between paragraphs.

    A block ends at the last paragraph break (else line break, sentence end, space) in the second half of its
    `block_chars`, so chunks are rarely cut where a whole-file split would not cut them.

    Yields:
        `(text, bytes read so far)`.

    Raises:
        DocumentError: Kind `unreadable` when the file changed since it was scanned or cannot be read any more.
    """
    size = block_chars or TEXT_BLOCK_CHARS
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder(scan.codec)()
    buffer = ""
    done = 0
    try:
        with path.open("rb") as handle:
            while data := handle.read(_READ_BYTES // 4):
                digest.update(data)
                done += len(data)
                buffer += decoder.decode(data)
                while len(buffer) >= size:
                    cut = _block_end(buffer, size)
                    yield buffer[:cut], done
                    buffer = buffer[cut:]
            buffer += decoder.decode(b"", final=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(path, f"cannot read it any more: {exc}; run again to index it", "unreadable") from None
    if digest.hexdigest() != scan.fingerprint:
        raise DocumentError(path, "changed while it was being indexed; run again to index it", "unreadable")
    if buffer:
        yield buffer, done


def split_blocks(text: str, block_chars: int | None = None) -> Iterator[str]:
    """A text held in memory in the blocks `text_blocks` cuts a file of that text into (same rule, same blocks)."""
    size = block_chars or TEXT_BLOCK_CHARS
    start = 0
    while len(text) - start >= size:
        cut = _block_end(text[start : start + size], size)
        yield text[start : start + cut]
        start += cut
    if start < len(text):
        yield text[start:]


def _block_end(text: str, size: int) -> int:
    for separator in ("\n\n", "\n", ". ", " "):
        cut = text.rfind(separator, size // 2, size)
        if cut >= 0:
            return cut + len(separator)
    return size


def extract(path: Path, data: bytes) -> Extracted:
    """Turn a file's bytes into plain text according to its type.

    Raises:
        DocumentError: kind `rejected` for binary or undecodable text, unreadable HTML/PDF; kind `empty` for a file
            with no text.
    """
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        result = _decode_text(path, data)
    elif suffix in HTML_SUFFIXES:
        result = Extracted(_html_text(path, data))
    elif suffix in PDF_SUFFIXES:
        result = Extracted(_pdf_text(path, data))
    else:
        raise DocumentError(path, f"unsupported file type {suffix!r}", "unsupported")
    if not result.text.strip():
        raise DocumentError(path, "no text to index (the file is empty or whitespace only)", "empty")
    return result


def extract_text(path: Path, data: bytes) -> str:
    """The plain text of a file (`extract(path, data).text`)."""
    return extract(path, data).text


def _decode_text(path: Path, data: bytes) -> Extracted:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return Extracted(codecs.decode(data, encoding), encoding.removesuffix("-sig"))
            except UnicodeDecodeError:
                raise DocumentError(
                    path, f"starts with a {encoding} byte-order mark but is not valid {encoding}"
                ) from None
    if b"\x00" in data[:8192]:
        raise DocumentError(path, "looks binary (NUL bytes), not a text file")
    try:
        return Extracted(codecs.decode(data, "utf-8"), "utf-8")
    except UnicodeDecodeError as exc:
        detected = detect_encoding(data)
        if detected is None:
            raise DocumentError(
                path,
                f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}) and its encoding could not be "
                "detected with confidence; convert it to UTF-8",
            ) from None
        return Extracted(detected[0], detected[1], detected=True)


_CP1252_MARGIN = 0.1
"""How much more mess (charset-normalizer chaos) cp1252 may show than the best guess and still be preferred."""


def detect_encoding(data: bytes) -> tuple[str, str] | None:
    """Decode bytes that are not UTF-8 with the encoding charset-normalizer is confident about.

    Equally good candidates are common for Western text (cp1250, cp1252 and cp1257 decode most letters alike);
    cp1252, the usual Windows/Latin-1 encoding, is preferred among them. Without a recognised language the result
    is accepted only if every equally good candidate gives the same text.

    Returns:
        `(text, encoding)`, or None when no decoding is trustworthy.
    """
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    if best.chaos > _MAX_CHAOS:
        return None
    tied = [m for m in matches if abs(m.chaos - best.chaos) < 1e-9 and abs(m.coherence - best.coherence) < 1e-9]
    if best.coherence < _MIN_COHERENCE:
        sample = data[: 1 << 16]
        texts = set()
        for match in tied:
            try:
                texts.add(sample.decode(match.encoding))
            except (UnicodeDecodeError, LookupError):
                return None
        if len(texts) != 1:
            return None
    candidates = {name for m in tied for name in m.could_be_from_charset}
    # charset-normalizer can rank cp1257 or cp1250 first for short French text (0xE8 is 'è' in cp1252, 'č' there);
    # cp1252, by far the most common legacy Western encoding, wins when it decodes with nearly as little mess.
    near = [m for m in matches if m.chaos <= best.chaos + _CP1252_MARGIN and m.coherence >= best.coherence - 0.1]
    candidates |= {name for m in near for name in m.could_be_from_charset if name == "cp1252"}
    for encoding in (("cp1252",) if "cp1252" in candidates else ()) + (best.encoding,):
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError):
            continue
    return None


def _html_text(path: Path, data: bytes) -> str:
    """The main content of an HTML page (trafilatura), or all visible text (BeautifulSoup) when that finds none.

    trafilatura drops navigation, tables of contents, headers and footers ("Show Source", "Next topic") and keeps
    inline code inside its sentence.
    """
    if b"\x00" in data[:8192]:
        raise DocumentError(path, "looks binary (NUL bytes), not an HTML file")
    text = _trafilatura_text(data)
    if text is None or not text.strip():
        text = _soup_text(data)
    return text


def _trafilatura_text(data: bytes) -> str | None:
    import logging

    import lxml.etree
    import lxml.html
    import trafilatura

    # trafilatura logs an ERROR for pages it finds empty; the fallback handles those, so they are not errors here.
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    try:
        tree = lxml.html.document_fromstring(data, parser=lxml.html.HTMLParser(encoding=_undeclared_encoding(data)))
    except (ValueError, LookupError, lxml.etree.ParserError):
        return None
    title = " ".join((tree.findtext(".//title") or "").split())
    _collapse_whitespace(tree)
    _keep_figures(tree)
    _unlink_described_items(tree)
    _unwrap_code_blocks(tree)
    _tidy_code_blocks(tree)
    _drop_permalinks(tree)
    try:
        # Handed back as markup: given the tree itself, trafilatura loses the text that follows inline links.
        result: str | None = trafilatura.extract(
            lxml.html.tostring(tree),
            include_comments=False,
            include_tables=True,
            include_images=False,
            favor_recall=True,
            deduplicate=False,
            with_metadata=False,
        )
    except (ValueError, TypeError, UnicodeError):
        return None
    if result and title and not result.startswith(title):
        # The page title names what the page is about ("The Slice Type - The Rust Programming Language"); main
        # content extraction drops it with the rest of the <head>, and documents are ranked better with it.
        result = f"{title}\n{result}"
    return result


_DECLARED_ENCODING = re.compile(rb"<meta[^>]+charset|<\?xml[^>]+encoding", re.IGNORECASE)


def _undeclared_encoding(data: bytes) -> str | None:
    """The encoding to parse a page with when it declares none (None: let lxml follow the page's own declaration).

    lxml reads bytes without a byte-order mark or `<meta charset>` as Latin-1, so an undeclared UTF-8 page (common
    for generated and hand-written HTML) came out as mojibake ("\u00c2\u00b6" for "\u00b6"). Such a page is read as
    UTF-8 when it decodes as UTF-8, else in the encoding charset-normalizer is confident about: the text-file rule.
    """
    if any(data.startswith(bom) for bom, _ in _BOMS) or _DECLARED_ENCODING.search(data[:4096]):
        return None
    try:
        return _decode_text(Path("page.html"), data).encoding
    except DocumentError:  # no confident guess: lxml's own default, as before
        return None


def _keep_figures(tree: Any) -> None:
    """Make `<figure>`s and their captions ordinary blocks, so that their text is kept.

    trafilatura deletes every `<figure>` as media when images are not extracted, but documentation puts text in
    them: mdBook wraps each code listing in one (the Rust book's 866 "Listing 4-8: Storing the result from calling
    `first_word` ..." blocks, code and caption), and a diagram's caption says what it shows. Images inside are still
    dropped.
    """
    for figure in tree.iter("figure"):
        figure.tag = "div"
    for caption in tree.iter("figcaption"):
        caption.tag = "p"


def _unlink_described_items(tree: Any) -> None:
    """Turn the links of list items that say something besides their links into plain text.

    trafilatura drops link-dense lists as navigation, and an API reference's parameter lists are link-dense: each
    item links its type (Node.js's "`flush` <boolean> If true, the underlying file descriptor is flushed prior to
    closing it. Default: false."), so every function lost its parameters and options. A navigation or contents
    item is a link and nothing else; an item with words of its own outside its links (nested lists aside) is content.
    """
    for item in list(tree.iter("li")):  # a list: dropping links changes the tree under the iterator
        if not _own_words(item):
            continue
        for link in [a for a in item.iter("a") if next(a.iterancestors("li"), None) is item]:  # not a nested item's
            link.drop_tag()


def _own_words(item: Any) -> bool:
    """Whether a list item has word characters outside its links and nested lists."""
    parts = [item.text or ""]
    stack = list(item)
    while stack:
        child = stack.pop()
        parts.append(child.tail or "")
        if isinstance(child.tag, str) and child.tag not in ("a", "ul", "ol"):
            parts.append(child.text or "")
            stack.extend(child)
    return any(ch.isalnum() for part in parts for ch in part)


def _unwrap_code_blocks(tree: Any) -> None:
    """Make `<div>`s that only wrap a `<pre>` block (and its copy/run buttons) paragraphs.

    trafilatura drops such a wrapper with its code block when the wrapper also holds an empty link (rustdoc's
    `<div class="example-wrap"><pre>...</pre><a class="test-arrow" href="...?code=..."></a>`: the whole Examples
    section of every API page), while it keeps a code block inside a paragraph-like element.
    """
    wrappers = "//div[pre][not(*[not(self::pre or self::a or self::button)])][not(normalize-space(text()))]"
    for div in tree.xpath(wrappers):
        div.tag = "p"


def _tidy_code_blocks(tree: Any) -> None:
    """Keep a code block's lines apart from each other and from the text after it.

    Two things in a `<pre>` made trafilatura join lines that a browser shows apart: the whitespace left where a
    copy `<button>` sat after the `<code>` (the block's last line then ran into the next paragraph: "// Returns:
    'myfile.html' On Windows:" on Node.js's pages), and two `<code>` flavours of one example side by side (Node.js's
    CommonJS and ES-module versions, shown one at a time) with no line break between them.
    """
    for pre in tree.iter("pre"):
        for button in pre.findall(".//button"):
            button.drop_tree()  # keeps its tail text
        children = list(pre)
        for child, following in itertools.pairwise(children):
            if child.tag == "code" and following.tag == "code" and not (child.tail or "").strip():
                child.tail = "\n"
        if children and children[-1].tail is not None and not children[-1].tail.strip():
            children[-1].tail = None


# The marks documentation generators put after each heading and definition, linking to itself (Sphinx and MkDocs
# "¶", Node.js "#", rustdoc "§"): "gzip.open(filename, ...)¶" otherwise.
_PERMALINK_MARKS = frozenset({"#", "¶", "§"})


def _drop_permalinks(tree: Any) -> None:
    for link in list(tree.iter("a")):
        if link.get("href", "").startswith("#") and link.text_content().strip() in _PERMALINK_MARKS:
            link.drop_tree()


_PREFORMATTED = frozenset({"pre", "textarea", "listing", "plaintext", "xmp"})
_WHITESPACE = re.compile(r"\s+")


def _collapse_whitespace(tree: Any) -> None:
    """Make line breaks inside running text spaces, as a browser renders them, except inside `<pre>` blocks.

    Source HTML is often hard-wrapped (mdBook, Sphinx, hand-written pages); kept, those breaks cut sentences apart
    in the extracted text and so in the chunks. Code blocks keep their lines.
    """
    stack = [(tree, False)]
    while stack:
        element, preformatted = stack.pop()
        if not isinstance(element.tag, str):  # comments and processing instructions
            continue
        preformatted = preformatted or element.tag in _PREFORMATTED
        if element.text and not preformatted:
            element.text = _WHITESPACE.sub(" ", element.text)
        for child in element:
            if child.tail and not preformatted:
                child.tail = _WHITESPACE.sub(" ", child.tail)
            stack.append((child, preformatted))


# Elements that start a new line; everything else (code, a, em, span, kbd, ...) stays inside its sentence.
_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl", "dt", "fieldset", "figcaption"}
    | {"figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p"}
    | {"pre", "section", "summary", "table", "td", "th", "tr", "ul", "title"}
)


def _soup_text(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    for tag in soup.find_all(list(_BLOCK_TAGS)):
        tag.insert_before("\n")
        tag.insert_after("\n")
    lines = (" ".join(line.split()) for line in soup.get_text().splitlines())
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
