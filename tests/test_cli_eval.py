"""Tests of `tempscale-rag eval`, `collapse` and `calibrate` on generated data, in-process and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tempscale_rag import TempScaleConfig
from tempscale_rag.cli import main

TEXTS = {
    "remote.txt": "Project manager: so we should discuss the buttons and the case. Designer: rubber is cheaper. " * 12,
    "budget.md": "The committee met on Tuesday to review the library budget and the opening hours. " * 10,
    "plants.txt": "Photosynthesis converts light energy into chemical energy; chlorophyll absorbs red light. " * 10,
}
# Small on purpose: the suite runs on two shared CPU cores.
TINY_PASSKEY = ["passkey", "--lengths", "128", "256", "--n-docs", "10", "--n-queries", "5", "--device", "cpu"]


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / name).write_text(text)
    return folder


def test_eval_json_shape_on_generated_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["-q", "eval", *TINY_PASSKEY, "--max-seq-length", "64", "--temperature", "0.8", "--json"]
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


def test_eval_default_configurations_are_baseline_and_default_buckets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["-q", "eval", *TINY_PASSKEY, "--max-seq-length", "32", "--limit-queries", "4", "--out", str(tmp_path)]
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
    argv = ["-q", "eval", *TINY_PASSKEY, "--max-seq-length", "32", "--calibration", str(calibration), "--json"]
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
