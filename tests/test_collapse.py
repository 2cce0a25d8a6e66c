"""Tests of the length-collapse diagnostics: statistics on known vectors, sampling, measuring, reporting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag import TempScaleEncoder
from tempscale_rag.diagnostics import (
    collapse_stats,
    collapse_table,
    measure_collapse,
    plot_collapse,
    read_corpus,
    results_to_json,
    sample_windows,
)

CORPUS = [
    "Project manager: so we should discuss the buttons and the case. Industrial designer: rubber is cheaper. " * 12,
    "The committee met on Tuesday to review the library budget and the opening hours of the town centre. " * 10,
    "Photosynthesis converts light energy into chemical energy; chlorophyll absorbs mostly blue and red light. " * 10,
]


def test_identical_vectors_have_mean_cosine_one() -> None:
    stats = collapse_stats(np.tile([[0.3, -1.2, 2.0]], (5, 1)))
    assert stats.n == 5
    assert stats.mean_cosine == pytest.approx(1.0)
    assert stats.spread == pytest.approx(0.0, abs=1e-12)
    assert stats.centroid_distance == pytest.approx(0.0, abs=1e-7)


def test_orthogonal_vectors_have_mean_cosine_zero() -> None:
    stats = collapse_stats(np.eye(6) * 3.0)
    assert stats.mean_cosine == pytest.approx(0.0, abs=1e-12)
    assert stats.spread == pytest.approx(1.0)  # 1 - S for unit vectors
    assert stats.centroid_distance == pytest.approx(np.sqrt(1 - 1 / 6))


def test_spread_is_one_minus_mean_cosine_and_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 16)) + 0.5
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pairwise = unit @ unit.T
    expected = pairwise[np.triu_indices(40, 1)].mean()
    stats = collapse_stats(vectors)
    assert stats.mean_cosine == pytest.approx(expected)
    assert stats.spread == pytest.approx(1 - expected)
    assert stats.spread == pytest.approx(np.trace(np.cov(unit, rowvar=False)))


def test_collapse_stats_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least two"):
        collapse_stats(np.ones((1, 4)))
    with pytest.raises(ValueError, match="finite"):
        collapse_stats(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_sample_windows_cuts_verbatim_text_of_the_asked_length(encoder: TempScaleEncoder) -> None:
    enc = encoder.with_config(max_seq_length=64)
    samples = sample_windows(enc, CORPUS, lengths=(8, 24, 500), per_length=6, seed=1)
    assert list(samples) == [8, 24, 62]  # 500 is capped to the window's 62 content tokens
    n_special = enc.count_tokens([""])[0]
    for length, sample in samples.items():
        assert len(sample.texts) == 6
        assert all(any(text in doc for doc in CORPUS) for text in sample.texts)
        assert all(abs(n - n_special - length) <= 2 for n in sample.tokens)
    again = sample_windows(enc, CORPUS, lengths=(8, 24, 500), per_length=6, seed=1)
    assert again[24].texts == samples[24].texts
    with pytest.raises(ValueError, match="no corpus text"):
        sample_windows(encoder, ["short text"], lengths=(100,), per_length=2)


def test_measure_table_plot_and_json(encoder: TempScaleEncoder, tmp_path: Path) -> None:
    enc = encoder.with_config(max_seq_length=64, temperature=1.0)
    samples = sample_windows(enc, CORPUS, lengths=(8, 48), per_length=5, seed=0)
    results = {
        "tau=1": measure_collapse(enc, samples),
        "tau=0.5": measure_collapse(enc.with_config(temperature=0.5), samples),
    }
    assert results["tau=1"][48].taus == [1.0] and results["tau=0.5"][48].taus == [0.5]
    for measured in results.values():
        for m in measured.values():
            assert -1.0 <= m.stats.mean_cosine <= 1.0
            assert m.stats.spread == pytest.approx(1 - m.stats.mean_cosine, abs=1e-5)
    table = collapse_table(results)
    assert table.count("\n") == 3 and "tau=0.5" in table
    png = plot_collapse(results, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    document = results_to_json(results, {"tau=1": {"temperature": 1.0}})
    assert set(document["tau=1"]["lengths"]) == {"8", "48"}
    json.dumps(document)


def test_read_corpus_forms(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha text")
    (folder / "sub" / "b.md").write_text("# beta")
    (folder / "c.pdf").write_text("ignored")
    (folder / "empty.txt").write_text("   ")
    assert read_corpus(folder) == ["alpha text", "# beta"]
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "1", "title": "T", "text": "body"}) + "\n\n")
    assert read_corpus(beir) == ["T body"]
    assert read_corpus(beir / "corpus.jsonl") == ["T body"]
    with pytest.raises(ValueError, match="does not exist"):
        read_corpus(tmp_path / "missing")
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        read_corpus(tmp_path / "none")
