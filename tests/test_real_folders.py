"""Real folders, round three (issue 24, points 1, 2, 3 and 7): two files that shared one stored name, `--max-file-mb`
values that are not a size, a big text file read in blocks (bounded memory, Ctrl-C, resume) and honest counts.

Each test drives `tempscale-rag` as a user does (in-process `main`, or a subprocess where signals matter) on real
files, the bundled model and real FAISS.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tempscale_rag import TempScaleEncoder
from tempscale_rag.ingest import indexer as indexer_module
from tempscale_rag.ingest import readers
from tempscale_rag.ingest.chunking import WindowChunker
from tempscale_rag.ingest.indexer import STAGING_DIR, FolderIndexer, IndexSummary
from tempscale_rag.ingest.readers import path_of, source_name
from tempscale_rag.stores import FaissSettings, IndexManifest, open_store

from .conftest import run_cli as cli


def index_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli(capsys, "index", *args, "--json")
    assert code in (0, 3), err
    summary: dict[str, Any] = json.loads(out)
    return code, summary


def search_sources(capsys: pytest.CaptureFixture[str], index: Path, query: str) -> list[dict[str, Any]]:
    code, out, err = cli(capsys, "search", query, "--out", str(index), "--json", "-k", "20")
    assert code == 0, err
    hits: list[dict[str, Any]] = json.loads(out)
    return hits


# Point 1: every distinct path has its own key -------------------------------------------------------------------


def test_a_latin1_name_and_a_literal_backslash_name_are_two_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "a"
    docs.mkdir()
    with open(os.fsencode(docs) + b"/caf\xe9.txt", "wb") as handle:
        handle.write(b"Cafe menu: espresso")
    (docs / "caf\\xe9.txt").write_text("Tea menu", encoding="utf-8")
    index = tmp_path / "ia"
    for _ in range(2):  # the audit saw "indexed 1 files ... 2 unchanged" on every run
        code, summary = index_json(capsys, str(docs), "--out", str(index))
        assert code == 0 and summary["files"] == 2, summary
    assert summary["files_unchanged"] == 2 and summary["files_indexed"] == 0, summary
    with sqlite3.connect(index / "chunks.sqlite") as db:
        sources = sorted(row[0] for row in db.execute("SELECT source FROM sources"))
    assert sources == sorted([repr(os.fsencode(docs) + b"/caf\xe9.txt"), str(docs / "caf\\xe9.txt")])
    latin1_name = repr(os.fsencode(docs) + b"/caf\xe9.txt")
    hits = search_sources(capsys, index, "espresso")
    assert {h["source"]: h["text"] for h in hits} == {
        latin1_name: "Cafe menu: espresso",
        str(docs / "caf\\xe9.txt"): "Tea menu",
    }
    for source in sources:
        assert path_of(source).exists()
    latin1 = path_of(repr(os.fsencode(docs) + b"/caf\xe9.txt"))
    assert latin1.read_bytes() == b"Cafe menu: espresso" and source_name(latin1).startswith("b'/")
    # --prune keeps both: each name maps back to its own file.
    code, summary = index_json(capsys, str(docs), "--out", str(index), "--prune")
    assert summary["pruned"] == [] and summary["files"] == 2, summary


def test_an_index_with_the_old_escaped_name_moves_it_to_the_new_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index written by the previous version stored `/a/caf\\xe9.txt`: it is read, and the name is replaced."""
    docs = tmp_path / "a"
    docs.mkdir()
    raw = os.fsencode(docs) + b"/caf\xe9.txt"
    with open(raw, "wb") as handle:
        handle.write(b"Cafe menu: espresso and ristretto.")
    index = tmp_path / "ia"
    old, new = raw.decode("utf-8", "backslashreplace"), repr(raw)
    with monkeypatch.context() as patch:  # the previous version's naming
        patch.setattr(indexer_module, "source_name", lambda p: os.fsencode(p).decode("utf-8", "backslashreplace"))
        index_json(capsys, str(docs), "--out", str(index))
    assert {h["source"] for h in search_sources(capsys, index, "espresso")} == {old}, "an old index stays readable"
    code, summary = index_json(capsys, str(docs), "--out", str(index))
    assert code == 0 and summary["files_indexed"] == 1 and summary["files"] == 1, summary
    assert {h["source"] for h in search_sources(capsys, index, "espresso")} == {new}


# Point 2: --max-file-mb is a size -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e400"])
def test_max_file_mb_that_is_not_a_size_is_refused_before_anything_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    docs = tmp_path / "a"
    docs.mkdir()
    (docs / "menu.txt").write_text("Tea menu", encoding="utf-8")
    index = tmp_path / "ia"
    code, out, err = cli(capsys, "index", str(docs), "--out", str(index), "--max-file-mb", value)
    assert code == 1 and out == "", (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--max-file-mb" in lines[0] and "none" in lines[0] and "Traceback" not in err, err
    assert not index.exists(), "nothing is created"


def test_max_file_mb_none_lifts_the_limit_and_a_word_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "a"
    docs.mkdir()
    (docs / "menu.txt").write_text("Tea menu. " * 20, encoding="utf-8")  # 200 bytes
    index = tmp_path / "ia"
    code, out, err = cli(capsys, "index", str(docs), "--out", str(index), "--max-file-mb", "0.0001")
    assert code == 3 and "above the 0.0001 MB limit" in out, (out, err)
    code, summary = index_json(capsys, str(docs), "--out", str(index), "--max-file-mb", "none")
    assert code == 0 and summary["files_indexed"] == 1, summary
    with pytest.raises(SystemExit) as exit_info:
        cli(capsys, "index", str(docs), "--out", str(index), "--max-file-mb", "lots")
    assert exit_info.value.code == 2 and "not a number of MB: 'lots'" in capsys.readouterr().err


# Point 7: counts that say what failed, and an empty folder -----------------------------------------------------


def test_a_failed_folder_is_counted_as_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "a"
    (docs / "locked").mkdir(parents=True)
    (docs / "locked" / "vault.md").write_text("The vault combination.", encoding="utf-8")
    (docs / "chain.txt").write_text("Oil the bicycle chain.", encoding="utf-8")
    (docs / "soup.md").write_text("Red lentil soup.", encoding="utf-8")
    real_scandir, real_read = readers._scandir, Path.read_bytes

    # Tests run as root, so permission bits would not stop the reads: simulate them (as test_ingest_indexer does).
    def scandir(folder: Path) -> Any:
        if folder.name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(folder))
        return real_scandir(folder)

    def read_bytes(path: Path) -> bytes:
        if path.name == "chain.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(readers, "_scandir", scandir)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    code, out, err = cli(capsys, "index", str(docs), "--out", str(tmp_path / "ia"))
    assert code == 3, err
    assert "exit code 3: 1 file and 1 folder could not be read or indexed (listed above)" in out, out
    code, summary = index_json(capsys, str(docs), "--out", str(tmp_path / "ia"))
    assert {f["path"].rsplit("/", 1)[-1]: f["what"] for f in summary["files_failed"]} == {
        "locked": "folder",
        "chain.txt": "file",
    }


def test_an_empty_folder_is_refused_for_a_new_index_and_said_for_an_existing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    index = tmp_path / "ia"
    code, out, err = cli(capsys, "index", str(empty), "--out", str(index))
    assert code == 1 and out == "" and not index.exists(), (out, err)
    assert err.startswith("tempscale-rag: error: nothing to index:") and "holds no files" in err, err
    assert "no index was created" in err and len(err.strip().splitlines()) == 1, err
    (empty / "photo.jpg").write_bytes(b"\xff\xd8")
    (empty / ".notes.md").write_text("hidden", encoding="utf-8")
    code, out, err = cli(capsys, "index", str(empty), "--out", str(index))
    assert code == 1 and not index.exists(), err
    assert "2 skipped (1 hidden, 1 unsupported)" in err and "--include-hidden" in err, err

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tea.txt").write_text("Tea menu: sencha and oolong.", encoding="utf-8")
    assert cli(capsys, "index", str(docs), "--out", str(index))[0] == 0
    code, out, err = cli(capsys, "index", str(empty), "--out", str(index))  # an existing index: said, not refused
    assert code == 0 and "no supported files were found in the given paths" in out, (out, err)
    (docs / "tea.txt").unlink()
    code, out, err = cli(capsys, "index", str(docs), "--out", str(index), "--prune")
    assert code == 0 and "1 pruned" in out and ": 0 files, 0 chunks" in out, out
    code, out, err = cli(capsys, "search", "sencha", "--out", str(index))
    assert code == 0 and out.strip() == f"no results: the index at {index} is empty", (out, err)


# Point 3: a big text file is read, split and embedded in blocks ------------------------------------------------


def paragraphs(n: int, word: str = "plain") -> str:
    return "\n\n".join(f"Paragraph {i} of the long report covers topic number {i} in {word} words." for i in range(n))


def test_a_big_text_file_is_split_in_blocks_with_bounded_memory_and_resumes_after_ctrl_c(
    tmp_path: Path, encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text(paragraphs(300), encoding="utf-8")  # 22 KB: "big" below, in 4 KB blocks
    (docs / "small.txt").write_text("A short note about ferrets.", encoding="utf-8")
    monkeypatch.setattr(indexer_module, "STREAM_BYTES", 4096)
    monkeypatch.setattr(readers, "TEXT_BLOCK_CHARS", 4096)
    chunker = WindowChunker(encoder, chunk_tokens=32, overlap_tokens=0)
    split_lengths: list[int] = []
    real_split = chunker.split

    def split(text: str) -> Any:
        split_lengths.append(len(text))
        return real_split(text)

    monkeypatch.setattr(chunker, "split", split)
    held: list[int] = []  # vectors of the big file in memory each time a batch is staged
    real_save = indexer_module._Staging.save

    def save(self: Any, job: Any) -> None:
        held.append(len(job.vectors))
        real_save(self, job)

    monkeypatch.setattr(indexer_module._Staging, "save", save)

    def run(folder: Path) -> IndexSummary:
        with open_store(folder, manifest(encoder)) as store:
            indexer = FolderIndexer(
                encoder, store, chunker=chunker, batch_chunks=8, show_progress=False, index_dir=folder
            )
            return indexer.run([docs])

    real_encode = encoder.encode
    calls: list[int] = []

    def interrupted(texts: list[str], **kwargs: Any) -> Any:
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the 4th batch
        calls.append(len(texts))
        return real_encode(texts, **kwargs)

    index = tmp_path / "index"
    monkeypatch.setattr(encoder, "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(index)
    staged = len(list((index / STAGING_DIR).rglob("*.npy")))
    assert staged == 3, "each embedded batch of the big file was staged"
    assert split_lengths and max(split_lengths) <= 4096 and held and max(held) <= 8, (split_lengths, held)

    embedded: list[int] = []

    def counting(texts: list[str], **kwargs: Any) -> Any:
        embedded.append(len(texts))
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode", counting)
    split_lengths.clear()
    summary = run(index)
    assert len(split_lengths) >= 5 and max(split_lengths) <= 4096, "the whole file went through in blocks"
    assert max(held) <= 8, "memory holds a batch of the file's vectors, never the file's"
    assert summary.files_resumed == 1 and summary.files_indexed == 2 and summary.files_failed == []
    assert sum(embedded) == summary.chunks_added - 24, "the 3 staged batches are not embedded again"
    assert not (index / STAGING_DIR).exists()

    clean = tmp_path / "clean"
    clean_summary = run(clean)
    assert clean_summary.chunks == summary.chunks > 100
    assert stored_rows(clean) == stored_rows(index), "the resumed index equals a clean run's"


def manifest(encoder: TempScaleEncoder) -> IndexManifest:
    return IndexManifest.new(
        model=encoder.model_name, dimension=encoder.dimension, config=encoder.config, backend=FaissSettings()
    )


def stored_rows(folder: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(folder / "chunks.sqlite") as db:
        return sorted(
            db.execute("SELECT chunk_id, source, position, token_length, bucket, text, metadata, vector FROM chunks")
        )


def test_ctrl_c_on_a_big_file_exits_130_at_once_and_a_rerun_resumes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    # 8 MB at the 4 default chunk sizes: hours to embed here. Split whole (as before), its first batch came after
    # minutes; in blocks, after the model load and one block.
    (docs / "big.txt").write_text(paragraphs(100_000), encoding="utf-8")
    out = tmp_path / "index"
    command = [sys.executable, "-m", "tempscale_rag.cli", "-q", "index", str(docs), "--out", str(out)]
    command += ["--commit-every", "8"]
    parts = out / STAGING_DIR

    def interrupt_after(n_parts: int) -> tuple[int, float, int]:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(list(parts.glob("*/*.npy"))) < n_parts:
            assert proc.poll() is None and time.monotonic() < deadline, "no batch embedded within 2 minutes"
            time.sleep(0.05)
        status = Path(f"/proc/{proc.pid}/status")
        peak_kb = int(next(line for line in status.read_text().splitlines() if line.startswith("VmHWM")).split()[1])
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "interrupted" in err and "Traceback" not in err, err
        return proc.returncode, time.monotonic() - sent, peak_kb

    code, seconds, peak_kb = interrupt_after(2)
    assert code == 130 and seconds < 2.0, (code, seconds)
    assert peak_kb < 1_500_000, f"peak RSS {peak_kb} kB"
    first = sorted(parts.glob("*/*.npy"))
    assert len(first) >= 2
    stamps = {p: p.stat().st_mtime_ns for p in first}
    code, seconds, _ = interrupt_after(len(first) + 2)
    assert code == 130 and seconds < 2.0, (code, seconds)
    assert all(p.exists() and p.stat().st_mtime_ns == stamps[p] for p in first), "the re-run resumed after them"
    assert len(list(parts.glob("*/*.npy"))) >= len(first) + 2
