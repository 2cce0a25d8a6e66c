"""Finding and reading files: the rules for what is indexed, skipped or failed, names, encodings and HTML text.

No model here: these tests exercise `tempscale_rag.ingest.readers` on real files in a temporary folder.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from tempscale_rag.ingest import readers
from tempscale_rag.ingest.readers import DocumentError, extract, find_files, path_of, source_name

FRENCH = (
    "Le caf\u00e9 \u00ab cr\u00e8me \u00bb co\u00fbte deux euros \u2013 c\u2019est l\u2019\u00e9t\u00e9 \u00e0 "
    "Montr\u00e9al, o\u00f9 il fait tr\u00e8s chaud et o\u00f9 les gar\u00e7ons boivent du th\u00e9 glac\u00e9. "
) * 4

SPHINX_PAGE = """<!DOCTYPE html>
<html><head><title>json - JSON encoder and decoder</title><style>.x{}</style></head>
<body>
<div class="related" role="navigation"><h3>Navigation</h3><ul>
  <li><a href="genindex.html">index</a></li><li><a href="py-modindex.html">modules</a> |</li>
  <li><a href="next.html">next</a> |</li><li><a href="prev.html">previous</a> |</li></ul></div>
<div class="sphinxsidebar" role="navigation"><h3>Table of Contents</h3><ul>
  <li><a href="#">json - JSON encoder and decoder</a></li><li><a href="#basic-usage">Basic Usage</a></li>
  <li><a href="#encoders-and-decoders">Encoders and Decoders</a></li></ul>
  <h4>Previous topic</h4><p><a href="email.html">email - An email and MIME handling package</a></p>
  <h3>This Page</h3><ul><li><a href="_sources/json.rst.txt">Show Source</a></li></ul></div>
<div class="document"><div class="body" role="main">
<h1>json - JSON encoder and decoder</h1>
<p>JSON (JavaScript Object Notation) is a lightweight data interchange format inspired by JavaScript object literal
syntax. The module exposes an API familiar to users of the standard library marshal and pickle modules.</p>
<h2>Basic Usage</h2>
<p>Serialize <code class="docutils literal"><span class="pre">obj</span></code> as a JSON formatted stream to
<em>fp</em> by calling <code>json.dump()</code> with a file-like object that supports writing text, and use
<code>json.dumps()</code> to get a string instead. Keys in JSON are always of the type str; when a dictionary is
converted into JSON, all the keys of the dictionary are coerced to strings.</p>
<p>Deserialize a string containing a JSON document to a Python object with <code>json.loads()</code>; an invalid
document raises <code>JSONDecodeError</code>, a subclass of ValueError that reports the line and column.</p>
</div></div>
<div class="footer">&copy; Copyright 2001-2024, Python Software Foundation. <a href="bugs.html">Found a bug?</a></div>
</body></html>
"""


def kinds(items: list[DocumentError]) -> dict[str, str]:
    return {source_name(p.path).rsplit("/", 1)[-1]: p.kind for p in items}


def test_non_utf8_file_name_is_found_and_its_name_survives_sqlite_json_and_terminal(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.txt"
    with open(raw, "wb") as handle:
        handle.write(b"A file whose name is Latin-1, not UTF-8.")
    (folder / "plain.txt").write_text("plain", encoding="utf-8")

    found = find_files([folder]).files
    assert len(found) == 2
    weird = next(p for p in found if p.name != "plain.txt")
    name = source_name(weird)
    assert name == repr(raw), "the raw bytes as Python writes them: no absolute path starts with b'"
    name.encode("utf-8")  # strict: no surrogates left
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (source TEXT)")
    db.execute("INSERT INTO t VALUES (?)", (name,))
    assert db.execute("SELECT source FROM t").fetchone()[0] == name
    assert json.loads(json.dumps(name, ensure_ascii=False)) == name
    assert path_of(name) == weird and path_of(name).read_bytes().startswith(b"A file")
    assert source_name(folder / "plain.txt") == str(folder / "plain.txt"), "UTF-8 names are unchanged"
    assert "\\xff" in str(DocumentError(weird, "x"))


def test_hidden_files_and_folders_are_skipped_and_listed_unless_included(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.md").write_text("git internals")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "readme.md").write_text("a dependency")
    (tmp_path / ".draft.md").write_text("hidden draft")
    (tmp_path / "visible.md").write_text("visible")
    found = find_files([tmp_path])
    assert [p.name for p in found.files] == ["visible.md"]
    assert kinds(found.skipped) == {".git": "hidden", "node_modules": "hidden", ".draft.md": "hidden"}
    assert all("--include-hidden" in s.reason for s in found.skipped)

    everything = find_files([tmp_path], include_hidden=True)
    assert sorted(p.name for p in everything.files) == [".draft.md", "notes.md", "readme.md", "visible.md"]
    assert everything.skipped == []
    assert [p.name for p in find_files([tmp_path / ".draft.md"]).files] == [".draft.md"], "named files are taken"


def test_symlinks_followed_once_with_loops_dangling_links_and_duplicates_reported(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.md").write_text("a")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.md").write_text("b")
    (root / "linked").symlink_to(outside, target_is_directory=True)  # a folder elsewhere: followed
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)  # back to a parent: a loop
    (root / "same").symlink_to(root / "real", target_is_directory=True)  # a second name for a walked folder
    (root / "gone.md").symlink_to(tmp_path / "nowhere.md")  # dangling
    (root / "twin.md").symlink_to(root / "real" / "a.md")  # the same file twice

    found = find_files([root])
    assert [p.relative_to(root).as_posix() for p in found.files] == ["linked/b.md", "real/a.md"]
    reasons = {p.path.relative_to(root).as_posix(): (p.kind, p.reason) for p in found.skipped}
    assert reasons["real/loop"][0] == "link" and "loop" in reasons["real/loop"][1]
    assert reasons["same"][0] == "link" and "already walked" in reasons["same"][1]
    assert reasons["gone.md"][0] == "link" and "dangling" in reasons["gone.md"][1]
    assert reasons["twin.md"][0] == "duplicate"
    assert found.failed == []


def test_index_folder_and_unsupported_types_are_skips_missing_paths_failures(tmp_path: Path) -> None:
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "manifest.json").write_text("{}")
    (tmp_path / "a.md").write_text("a")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG")
    found = find_files([tmp_path, tmp_path / "typo"], exclude=[tmp_path / "index"])
    assert [p.name for p in found.files] == ["a.md"]
    assert kinds(found.skipped) == {"index": "index", "logo.png": "unsupported"}
    assert kinds(found.failed) == {"typo": "missing"}
    assert all(not s.is_failure for s in found.skipped) and all(f.is_failure for f in found.failed)


def test_unreadable_folder_is_a_failure_and_marked_unlisted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root in CI, where permission bits do not stop a read: simulate the folder's listing failing.
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "secret.md").write_text("s")
    (tmp_path / "open.md").write_text("o")
    real = readers._scandir

    def scandir(folder: Path) -> list[os.DirEntry[str]]:
        if folder.name == "locked":
            raise PermissionError(13, "Permission denied", str(folder))
        return real(folder)

    monkeypatch.setattr(readers, "_scandir", scandir)
    found = find_files([tmp_path])
    assert [p.name for p in found.files] == ["open.md"]
    assert kinds(found.failed) == {"locked": "unreadable"} and "permission denied" in found.failed[0].reason
    assert found.unlisted_dirs == [tmp_path.resolve() / "locked"]


def test_unreadable_file_is_unreadable_not_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.txt"
    path.write_text("text")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DocumentError) as info:
        readers.read_bytes(path)
    assert info.value.kind == "unreadable" and "permission denied" in info.value.reason
    monkeypatch.undo()
    with pytest.raises(DocumentError) as info:
        readers.read_bytes(path, max_bytes=2)
    assert info.value.kind == "rejected" and "limit" in info.value.reason


def test_cp1252_and_latin1_text_is_detected_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "fr.txt"
    result = extract(path, FRENCH.encode("cp1252"))
    assert result.text == FRENCH and result.encoding == "cp1252" and result.detected
    german = "Die Stra\u00dfe f\u00fchrt \u00fcber die Br\u00fccke zum sch\u00f6nen M\u00e4rchenschlo\u00df. " * 3
    result = extract(path, german.encode("latin-1"))
    assert result.text == german and result.detected
    # charset-normalizer ranks cp1257 first for this line ('crčme'); cp1252 decodes it with almost as little mess.
    short = "Café crème brûlée, naïve façade: résumé of the déjà vu meeting."
    result = extract(path, short.encode("cp1252"))
    assert result.text == short and result.encoding == "cp1252"
    utf8 = extract(path, FRENCH.encode("utf-8"))
    assert utf8.encoding == "utf-8" and not utf8.detected
    utf16 = extract(path, FRENCH.encode("utf-16"))
    assert utf16.text == FRENCH and utf16.encoding == "utf-16", "a byte-order mark is honoured, not 'binary'"


@pytest.mark.parametrize(
    "data",
    [
        "caf\xe9 cr\xe8me".encode("latin-1"),  # too short to tell cp1252 from cp1250, cp1251, ...
        bytes(range(128, 256)) * 8,  # high bytes without any language
        b"\x00\x01\x02 binary \x00",
    ],
)
def test_undetectable_or_binary_text_is_rejected_with_a_reason(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(DocumentError) as info:
        extract(tmp_path / "x.txt", data)
    assert info.value.kind == "rejected"
    assert "binary" in info.value.reason or "could not be detected" in info.value.reason


def test_empty_text_is_a_skip_not_a_failure(tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as info:
        extract(tmp_path / "x.md", b"  \n\t")
    assert info.value.kind == "empty" and not info.value.is_failure


def test_html_main_content_without_navigation_and_with_inline_code_in_its_sentence(tmp_path: Path) -> None:
    text = extract(tmp_path / "json.html", SPHINX_PAGE.encode()).text
    for noise in ("Show Source", "Table of Contents", "Previous topic", "genindex", "modules |", "Found a bug"):
        assert noise not in text, noise
    assert "Encoders and Decoders" not in text, "the sidebar's table of contents is dropped"
    lines = text.splitlines()
    assert any("calling json.dump() with a file-like object" in line for line in lines), lines
    assert any("Serialize obj as a JSON formatted stream" in line for line in lines), lines
    assert "JSONDecodeError, a subclass of ValueError" in text


def test_html_text_is_joined_as_a_browser_renders_it_and_code_keeps_its_lines(tmp_path: Path) -> None:
    text = extract(tmp_path / "json.html", SPHINX_PAGE.encode()).text
    # Hard-wrapped source lines inside a paragraph are one sentence, not two lines cut mid-sentence.
    assert "inspired by JavaScript object literal syntax. The module exposes" in text
    assert text.splitlines()[0] == "json - JSON encoder and decoder", "the title is not repeated before its <h1>"
    book = (
        "<html><head><title>The Slice Type - The Rust Book</title></head><body><nav><a href='a'>1. Intro</a></nav>"
        "<main><h1>Slices</h1><p><em>Slices</em> let you reference a contiguous sequence of elements in a\n"
        "<a href='ch08.html'>collection</a>. A slice is a kind of reference, so it does not have ownership.</p>"
        "<p>Some more running text about slices, to look like an article and not a navigation block at all.</p>"
        "<pre><code>fn first_word(s: &amp;String) -&gt; &amp;str {\n    &amp;s[..]\n}</code></pre></main></body></html>"
    )
    text = extract(tmp_path / "slices.html", book.encode()).text
    lines = text.splitlines()
    assert lines[0] == "The Slice Type - The Rust Book", "the page title leads the text"
    assert "in a collection. A slice is a kind of reference, so it does not have ownership." in text
    assert "fn first_word(s: &String) -> &str {\n    &s[..]\n}" in text, "code keeps its lines and indentation"
    # rustdoc wraps every example in a <div> with a "Run" link, which trafilatura drops with the code inside.
    rustdoc = (
        "<html><head><title>read_to_string in std::fs - Rust</title></head><body><main><div class='width-limiter'>"
        "<section id='main-content' class='content'><div class='main-heading'><h1>Function read_to_string</h1></div>"
        "<pre class='rust item-decl'><code>pub fn read_to_string(path: P) -&gt; Result&lt;String&gt;</code></pre>"
        "<details class='toggle top-doc' open><summary class='hideme'><span>Expand description</span></summary>"
        "<div class='docblock'><p>Reads the entire contents of a file into a string.</p><p>This is a convenience "
        "function for using <a href='o'><code>File::open</code></a> and <a href='r'><code>read_to_string</code></a>"
        "\nwith fewer imports and without an intermediate variable.</p>"
        "<h2 id='errors'><a class='doc-anchor' href='#errors'>\u00a7</a>Errors</h2><p>This function will return an "
        "error if <code>path</code> does not already exist.\nOther errors may also be returned.</p>"
        "<h2 id='examples'><a class='doc-anchor' href='#examples'>\u00a7</a>Examples</h2>"
        "<div class='example-wrap'><pre class='rust rust-example-rendered'><code><span class='kw'>use </span>std::fs;"
        "\n<span class='kw'>let </span>message = fs::read_to_string(<span class='string'>\"message.txt\"</span>)?;"
        "</code></pre><a class='test-arrow' target='_blank' title='Run code' href='https://play.rust-lang.org/?code="
        + "%23!%5Ballow(unused)%5D%0Ause+std::fs;%0Alet+message+=+fs::read_to_string(%22message.txt%22)?;"
        * 4
        + "&amp;edition=2024'></a></div>"
        "</div></details></section></div></main></body></html>"
    )
    text = extract(tmp_path / "fn.read_to_string.html", rustdoc.encode()).text
    assert 'use std::fs;\nlet message = fs::read_to_string("message.txt")?;' in text, text


def test_html_code_blocks_end_their_line_and_permalink_marks_are_dropped(tmp_path: Path) -> None:
    # Node.js's API pages: a copy button after the code, CommonJS and ES-module flavours of one example in one
    # <pre>, a "#" self-link after each heading.
    prose = "<p>The path module provides utilities for working with file and directory paths. Its default operation "
    prose += "varies with the operating system that a Node.js application runs on; on Windows it assumes Windows "
    prose += "paths, and path.win32 gives consistent results on every system.</p>"
    node = (
        "<html><head><title>Path | Node.js Documentation</title></head><body><main>"
        "<h2>Path<span><a class='mark' href='#path' id='path'>#</a></span></h2>" + prose + "<p>It can be accessed "
        "using:</p><pre class='with-34-chars'><input class='js-flavor-toggle' type='checkbox'>"
        "<code class='language-js cjs'>const path = require('node:path');</code>"
        "<code class='language-js mjs'>import path from 'node:path';</code><button class='copy-button'>copy</button>"
        "</pre><p>On POSIX:</p><pre><code class='language-js'>path.basename('C:\\temp\\a.html');\n"
        "// Returns: 'C:\\temp\\a.html'</code> <button class='copy-button'>copy</button></pre>"
        "<p>On Windows:</p><p>Node.js follows the concept of a per-drive working directory.</p>"
        "<h3>path.extname(path)<a class='headerlink' href='#path.extname'>\u00b6</a></h3>"  # Sphinx's mark
        "<p>The path.extname() method returns the extension of the path, from the last period to the end.</p>"
        "</main></body></html>"
    )
    lines = extract(tmp_path / "path.html", node.encode()).text.splitlines()
    assert "const path = require('node:path');" in lines and "import path from 'node:path';" in lines, lines
    assert "// Returns: 'C:\\temp\\a.html'" in lines and "On Windows:" in lines, "the code block ends its line"
    assert "Path" in lines and "path.extname(path)" in lines, "headings without their permalink marks"
    assert not any(line.rstrip().endswith(("#", "\u00b6", "copy")) for line in lines), lines


def test_html_keeps_figure_listings_and_parameter_lists_but_not_navigation(tmp_path: Path) -> None:
    # mdBook wraps each code listing in a <figure> with a caption; trafilatura deletes figures as media.
    prose = "<p>We now have a way to find out the index of the end of the first word in the string, but there is a "
    prose += "problem: the index is a separate value from the String, so nothing keeps it valid in the future.</p>"
    book = (
        "<html><head><title>The Slice Type</title></head><body><main>"
        + prose
        + "<figure class='listing' id='listing-4-8'><span class='file-name'>Filename: src/main.rs</span>"
        "<pre class='playground'><code>fn main() {\n    let word = first_word(&amp;s); // word will get the value 5"
        "\n    s.clear();\n}</code></pre><figcaption><a href='#listing-4-8'>Listing 4-8</a>: Storing the result from"
        " calling the <code>first_word</code> function and then changing the <code>String</code> contents"
        "</figcaption></figure>" + prose + "</main></body></html>"
    )
    text = extract(tmp_path / "slices.html", book.encode()).text
    assert "let word = first_word(&s); // word will get the value 5" in text, text
    assert "Listing 4-8: Storing the result from calling the first_word function and then changing" in text, text
    # Node.js: each parameter links its type, which made the list link-dense and trafilatura dropped it as
    # navigation; the page's real navigation (items that are only links) must still go.
    modules = "".join(f"<li><a href='{m}.html'>{m.title()} module</a></li>" for m in ("assert", "buffer", "crypto"))
    node = (
        f"<html><head><title>Path</title></head><body><nav><ul>{modules * 8}</ul></nav><main>"
        "<h3>path.basename(path[, suffix])</h3><ul><li><code>path</code> <a class='type' href='s'>&lt;string&gt;</a>"
        "</li><li><code>suffix</code> <a class='type' href='s'>&lt;string&gt;</a> An optional suffix to remove</li>"
        "<li>Returns: <a class='type' href='s'>&lt;string&gt;</a></li></ul>"
        "<p>The <code>path.basename()</code> method returns the last portion of a path, similar to the Unix "
        "<code>basename</code> command. Trailing directory separators are ignored.</p>"
        + prose
        + prose
        + "</main></body></html>"
    )
    text = extract(tmp_path / "path.html", node.encode()).text
    lines = text.splitlines()
    assert "- suffix <string> An optional suffix to remove" in lines, lines
    assert "- path <string>" in lines and "- Returns: <string>" in lines, lines
    assert "Crypto module" not in text, "navigation (items that are only links) is still dropped"


def test_html_without_a_declared_encoding_is_read_as_utf8_or_its_detected_encoding(tmp_path: Path) -> None:
    body = (
        "<p>Le caf\u00e9 na\u00eff servait une cr\u00e8me br\u00fbl\u00e9e d\u00e9licieuse \u00e0 la terrasse, "
        "pr\u00e8s de la fen\u00eatre o\u00f9 l'on voyait la mer. Les clients fid\u00e8les revenaient chaque "
        "\u00e9t\u00e9 pour go\u00fbter ses p\u00e2tisseries fran\u00e7aises.</p>"
    )
    page = f"<html><head><title>Caf\u00e9</title></head><body><article>{body * 3}</article></body></html>"
    for encoding in ("utf-8", "cp1252"):  # neither declared in the page (lxml alone reads both as Latin-1)
        text = extract(tmp_path / "cafe.html", page.encode(encoding)).text
        assert "caf\u00e9 na\u00eff servait une cr\u00e8me br\u00fbl\u00e9e" in text, (encoding, text[:200])
    declared = page.replace("<head>", "<head><meta charset='iso-8859-1'>").encode("latin-1")
    assert "fran\u00e7aises" in extract(tmp_path / "cafe.html", declared).text, "a declared encoding is honoured"


def test_html_falls_back_to_all_text_with_inline_code_kept_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "_trafilatura_text", lambda data: None)
    text = extract(tmp_path / "json.html", SPHINX_PAGE.encode()).text
    assert "Show Source" in text, "the fallback keeps all visible text"
    assert "by calling json.dump() with a file-like object" in text
    assert "Basic Usage\nSerialize obj as a JSON" in text, "block elements still break lines"
    assert "var x" not in extract(tmp_path / "s.html", b"<p>hi there</p><script>var x=1;</script>").text
