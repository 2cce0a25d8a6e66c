"""Tests of `tempscale-rag eval`, `collapse` and `calibrate` on generated data, in-process and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tempscale_rag import TempScaleConfig
from tempscale_rag.cli import main

from .conftest import SHARED_DATA

TEXTS = {
    "remote.txt": "Project manager: so we should discuss the buttons and the case. Designer: rubber is cheaper. " * 12,
    "budget.md": "The committee met on Tuesday to review the library budget and the opening hours. " * 10,
    "plants.txt": "Photosynthesis converts light energy into chemical energy; chlorophyll absorbs red light. " * 10,
}
# Small on purpose: the suite runs on two shared CPU cores.
TINY_PASSKEY = ["passkey", "--lengths", "128", "256", "--n-docs", "10", "--n-queries", "5", "--device", "cpu"]
VECTOR = ["--doc-score", "vector"]


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / name).write_text(text)
    return folder


def test_eval_json_shape_on_generated_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["-q", "eval", *TINY_PASSKEY, *VECTOR, "--max-seq-length", "64", "--temperature", "0.8", "--json"]
    assert main([*argv, "--out", str(out)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["task"]["kind"] == "passkey" and document["main_metric"] == "acc@1"
    names = [c["name"] for c in document["configurations"]]
    assert names == ["tau=1", "tau=0.8"]
    for configuration in document["configurations"]:
        assert {"ndcg@10", "ndcg@1", "recall@10", "mrr"} <= set(configuration["metrics"])
        assert set(configuration["by_length"]) == {"128", "256"}
        assert configuration["config"]["max_seq_length"] == 64
    assert document["configurations"][1]["config"]["temperature"] == 0.8
    assert document["configurations"][0]["delta_vs_baseline"] is None
    for name in ("results.json", "results.md", "score_vs_length.png"):
        assert (out / name).is_file()


def test_eval_vector_configurations_are_baseline_and_default_buckets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["-q", "eval", *TINY_PASSKEY, *VECTOR, "--max-seq-length", "32", "--limit-queries", "4"]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| tau=1 |" in printed and "| default buckets |" in printed
    document = json.loads((tmp_path / "results.json").read_text())
    assert [c["name"] for c in document["configurations"]] == ["tau=1", "default buckets"]
    assert document["task"]["limit_queries"] == 4


def test_eval_with_a_calibration_file(docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calibration = tmp_path / "cal.json"
    argv = ["-q", "calibrate", str(docs), "--taus", "1.0", "0.8", "--per-length", "4"]  # spread is the default
    argv += ["--max-seq-length", "64", "--buckets", "0-24:1,24-:1", "--device", "cpu", "--out", str(calibration)]
    assert main([*argv, "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["criterion"] == "spread" and written["settings"]["max_seq_length"] == 64
    config = TempScaleConfig.with_calibration(calibration)
    assert [b.min_tokens for b in config.buckets] == [0, 24]
    out = tmp_path / "eval"
    argv = ["-q", "eval", *TINY_PASSKEY, *VECTOR, "--max-seq-length", "32", "--calibration", str(calibration)]
    argv.append("--json")
    assert main([*argv, "--out", str(out)]) == 0
    names = [c["name"] for c in json.loads(capsys.readouterr().out)["configurations"]]
    assert names == ["tau=1", "calibrated cal"]


def test_collapse_cli(docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "collapse"
    argv = ["-q", "collapse", str(docs), "--lengths", "8", "48", "--per-length", "4", "--temperature", "0.7"]
    assert main([*argv, "--max-seq-length", "64", "--device", "cpu", "--out", str(out), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert list(document["configurations"]) == ["tau=1", "default buckets", "tau=0.7"]
    stats = document["configurations"]["tau=0.7"]["lengths"]["48"]
    assert stats["taus"] == [0.7] and -1 <= stats["mean_cosine"] <= 1
    assert (out / "collapse.png").is_file() and (out / "collapse.json").is_file()


def test_bad_dataset_path_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "eval", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tempscale-rag: error:") and "BEIR folder" in err and "\n" not in err
    assert main(["-q", "eval", "needle", "--lengths", "256"]) == 1
    assert "--haystack" in capsys.readouterr().err
    assert main(["-q", "calibrate", str(tmp_path / "nope"), "--criterion", "dev"]) == 1
    assert "--dev" in capsys.readouterr().err
    assert main(["-q", "eval", "passkey", "--doc-score", "vector", "--chunk-tokens", "256"]) == 1
    assert "chunked --doc-score" in capsys.readouterr().err
    assert main(["-q", "eval", "passkey", "--long-text", "chunk_mean"]) == 1
    assert "--doc-score vector only" in capsys.readouterr().err
    assert main(["-q", "eval", "passkey", "--chunk-tokens", "128,64"]) == 1
    assert "invalid chunk sizes '128,64'" in capsys.readouterr().err


def test_bad_dataset_path_as_a_subprocess(tmp_path: Path) -> None:
    code = "import sys; from tempscale_rag.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "eval", str(tmp_path / "missing"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"tempscale-rag: error: dataset {str(tmp_path / 'missing')!r} is neither 'passkey', 'needle' "
        "nor a BEIR folder (corpus.jsonl, queries.jsonl, qrels.tsv)"
    ]


def test_eval_default_is_the_product_pipeline_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["-q", "eval", "passkey", "--lengths", "96", "--n-docs", "4", "--n-queries", "2", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| tau=1 | softmax 24,48,192,499 |" in printed
    assert "| taus 24:1,48:1,192:0.9,499:0.9 | softmax 24,48,192,499 |" in printed
    # BM25 alone and the hybrid rows (what `search` does) beside the dense ones, on the same chunks.
    assert "| BM25 | BM25 499+doc |" in printed and "– (BM25: nothing embedded) |" in printed
    assert "| hybrid taus 24:1,48:1,192:0.9,499:0.9 | softmax 24,48,192,499 + BM25 |" in printed
    assert "tokens/src" in printed and "Wrote" not in printed
    assert list(tmp_path.iterdir()) == []  # no ./tempscale-eval/ without --out


def test_eval_axes_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["passkey", "--lengths", "96", "--n-docs", "6", "--n-queries", "3", "--device", "cpu"]
    argv = ["-q", "eval", *tiny, "--doc-score", "max", "vector", "--chunk-tokens", "16", "16:1,32:0.8"]
    argv += ["--max-seq-length", "64", "--temperature", "0.8", "--queries", "plain", "--json", "--no-per-query"]
    assert main([*argv, "--retrieval", "dense"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["outputs"] == {}
    entries = {c["name"]: c for c in document["configurations"]}
    assert list(entries) == [
        "tau=1 max chunks 16",
        "tau=0.8 docs-only max chunks 16",
        "tau=1 max chunks 16,32",
        "taus 16:1,32:0.8 docs-only max chunks 16,32",
        "tau=0.8 docs-only max chunks 16,32",
        "tau=1 vector",
        "tau=0.8 docs-only vector",
    ]
    assert entries["taus 16:1,32:0.8 docs-only max chunks 16,32"]["chunk_temperatures"] == [1.0, 0.8]
    assert entries["taus 16:1,32:0.8 docs-only max chunks 16,32"]["config"]["query_temperature"] == 1.0
    assert entries["tau=0.8 docs-only max chunks 16"]["chunk_temperatures"] == [0.8]
    assert entries["tau=1 max chunks 16,32"]["chunk_overlap_tokens"] == [2, 4]
    for entry in entries.values():
        assert entry["doc_score"] in ("max", "vector")
        assert 0.0 <= entry["metrics"]["acc@1"] <= 1.0 and entry["cost"]["vectors_stored"] > 0
    assert entries["tau=1 vector"]["chunk_tokens"] is None


def test_calibrate_per_chunk_size_and_evaluate_with_it(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tempscale_rag.calibration import Calibration, read_chunking
    from tempscale_rag.config import ChunkingConfig

    calibration = tmp_path / "sizes.json"
    argv = ["-q", "calibrate", str(docs), "--chunk-tokens", "16,32", "--taus", "1.0", "0.8", "--per-length", "4"]
    assert main([*argv, "--max-seq-length", "64", "--device", "cpu", "--out", str(calibration), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["criterion"] == "spread" and written["chunking"]["sizes"] == [16, 32]
    taus = written["chunking"]["temperatures"]
    assert taus[0] == 1.0 and taus[1] in (1.0, 0.8)  # the smallest size is the reference
    assert set(written["measurements"]["sizes"]["32"]["mean_cosine_by_tau"]) == {"1", "0.8"}
    chunking = read_chunking(calibration)
    assert chunking is not None and chunking.sizes == (16, 32) and chunking.temperatures == tuple(taus)
    n_special = written["settings"]["n_special"]
    config = TempScaleConfig.with_calibration(calibration)
    assert config.buckets == chunking.buckets(n_special)
    assert Calibration.load(calibration).chunking == chunking
    # eval --calibration chunks at the file's sizes when --chunk-tokens is not given.
    argv = ["-q", "eval", *TINY_PASSKEY, "--max-seq-length", "64", "--calibration", str(calibration), "--json"]
    assert main([*argv, "--no-per-query", "--retrieval", "dense"]) == 0
    entries = json.loads(capsys.readouterr().out)["configurations"]
    assert [e["name"] for e in entries] == ["tau=1", "calibrated sizes"]
    assert entries[1]["chunk_tokens"] == [16, 32] and entries[1]["chunk_temperatures"] == list(taus)
    assert ChunkingConfig.model_validate(written["chunking"]) == chunking


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "qmsum").is_dir(), reason="../shared/data/qmsum is absent")
def test_vector_protocol_on_the_command_line_reproduces_mteb_on_qmsum(capsys: pytest.CaptureFixture[str]) -> None:
    # The public MTEB number for all-MiniLM-L6-v2 on LEMBQMSumRetrieval at max_seq_length 256 is nDCG@10 = 16.32.
    argv = ["-q", "eval", str(SHARED_DATA / "qmsum"), "--doc-score", "vector", "--max-seq-length", "256"]
    assert main([*argv, "--temperature", "1.0", "--device", "cpu", "--json", "--no-per-query"]) == 0
    entries = json.loads(capsys.readouterr().out)["configurations"]
    assert [e["name"] for e in entries] == ["tau=1"] and entries[0]["doc_score"] == "vector"
    assert entries[0]["metrics"]["ndcg@10"] * 100 == pytest.approx(16.32, abs=0.1)


def test_eval_preset_and_lexical_weights(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-q", "eval", *TINY_PASSKEY, "--max-seq-length", "64", "--preset", "fast", "--chunk-tokens", "32:0.9"]
    argv += ["--lexical-weight", "1", "2.5", "--retrieval", "lexical", "hybrid", "--no-per-query", "--json"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    rows = {c["name"]: c for c in document["configurations"]}
    assert list(rows) == [
        "BM25",
        "hybrid w=1 tau=1",
        "hybrid w=1 taus 32:0.9",
        "hybrid w=2.5 tau=1",
        "hybrid w=2.5 taus 32:0.9",
    ]
    assert [rows[n]["chunking"]["lexical_weight"] for n in rows][1:] == [1.0, 1.0, 2.5, 2.5]
    assert {c["chunk_tokens"] == [32] for c in rows.values()} == {True}
    assert main(["-q", "eval", *TINY_PASSKEY, "--lexical-weight", "-1"]) == 1
    assert "lexical weight" in capsys.readouterr().err
