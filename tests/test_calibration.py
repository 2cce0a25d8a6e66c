"""Tests of calibration: the file round trip, the coordinate search, and the label-free criteria."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tempscale_rag import Bucket, TempScaleConfig, TempScaleEncoder
from tempscale_rag.calibration import (
    Calibration,
    calibrate_dev,
    calibrate_spread,
    pseudo_query_dataset,
)
from tempscale_rag.evaluation.runner import EvalTask, RetrievalEvaluator

CORPUS = [
    "Project manager: so we should discuss the buttons and the case. Industrial designer: rubber is cheaper. " * 12,
    "The committee met on Tuesday to review the library budget and the opening hours of the town centre. " * 10,
    "Photosynthesis converts light energy into chemical energy; chlorophyll absorbs mostly blue and red light. " * 10,
    "The orchestra rehearsed the symphony twice before the concert; the violins were slightly out of tune. " * 10,
]
EDGES = [Bucket(min_tokens=0, max_tokens=32, tau=1.0), Bucket(min_tokens=32, max_tokens=None, tau=1.0)]


def test_calibration_file_round_trip(encoder: TempScaleEncoder, tmp_path: Path) -> None:
    buckets = [
        Bucket(min_tokens=0, max_tokens=128, tau=1.0),
        Bucket(min_tokens=128, max_tokens=256, tau=0.85),
        Bucket(min_tokens=256, max_tokens=None, tau=0.7),
    ]
    calibration = Calibration(
        model=encoder.model_name, criterion="dev", buckets=buckets, settings={"max_seq_length": 256}
    )
    path = calibration.save(tmp_path / "nested" / "calibration.json")
    assert not list(path.parent.glob(".calibration-*"))  # the temporary file was renamed away
    config = TempScaleConfig.with_calibration(path, device="cpu")
    assert list(config.buckets) == buckets
    assert config.calibration_file == str(path.resolve())
    assert config.model == encoder.model_name
    loaded = Calibration.load(path)
    assert loaded.buckets == buckets and loaded.criterion == "dev" and loaded.settings == {"max_seq_length": 256}
    assert json.loads(path.read_text())["format"] == "tempscale-rag calibration v1"
    assert calibration.spec() == "0-128:1,128-256:0.85,256-:0.7"
    # The engine uses the file's taus.
    enc = encoder.with_config(**config.model_dump())
    assert enc.router.route(300).tau == 0.7


def test_calibration_for_another_model_is_refused(encoder: TempScaleEncoder, tmp_path: Path) -> None:
    path = Calibration(model=encoder.model_name, criterion="spread", buckets=EDGES).save(tmp_path / "c.json")
    with pytest.raises(ValueError, match="was made for model"):
        TempScaleConfig.with_calibration(path, model="sentence-transformers/all-mpnet-base-v2")


def test_bad_calibration_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        Calibration.load(tmp_path / "bad.json")
    (tmp_path / "gap.json").write_text(json.dumps({"buckets": [{"min_tokens": 0, "max_tokens": 10, "tau": 1.0}]}))
    with pytest.raises(ValueError, match="invalid buckets"):
        TempScaleConfig.with_calibration(tmp_path / "gap.json")
    with pytest.raises(ValueError, match="does not exist"):
        Calibration.load(tmp_path / "missing.json")


def test_coordinate_search_finds_the_best_grid_point(encoder: TempScaleEncoder) -> None:
    # A known score surface: best at 0.9 for the first bucket and 0.7 for the second, separable.
    def score(enc: TempScaleEncoder) -> float:
        first, second = (b.tau for b in enc.config.buckets)
        return -abs(first - 0.9) - 2 * abs(second - 0.7)

    calibration = calibrate_dev(encoder, score, buckets=EDGES, taus=(1.0, 0.9, 0.8, 0.7, 0.6), rounds=3)
    assert [b.tau for b in calibration.buckets] == [0.9, 0.7]
    assert calibration.measurements["best_score"] == pytest.approx(0.0)
    assert calibration.measurements["score_at_tau_1"] == pytest.approx(-0.1 - 0.6)
    assert calibration.measurements["passes"] == 2  # the second pass changed nothing and ended the search
    assert calibration.criterion == "dev"


def test_spread_criterion_on_a_small_corpus(encoder: TempScaleEncoder) -> None:
    enc = encoder.with_config(max_seq_length=64)
    calibration = calibrate_spread(enc, CORPUS, buckets=EDGES, taus=(1.0, 0.7), per_length=4)
    assert calibration.buckets[0].tau == 1.0
    assert calibration.buckets[1].tau in (1.0, 0.7)
    curve = calibration.measurements["buckets"]["32+"]["mean_cosine_by_tau"]
    assert set(curve) == {"1", "0.7"}
    chosen = calibration.buckets[1].tau
    target = calibration.measurements["reference_mean_cosine"]
    assert abs(curve[f"{chosen:g}"] - target) == min(abs(v - target) for v in curve.values())
    assert calibration.settings == {"max_seq_length": 64, "long_text": "truncate"}


def test_self_criterion_searches_on_pseudo_queries(encoder: TempScaleEncoder) -> None:
    enc = encoder.with_config(max_seq_length=48)
    dataset = pseudo_query_dataset(enc, CORPUS, n_queries=8, query_tokens=12, seed=0)
    assert len(dataset.queries) == 8 and len(dataset.corpus) == 4
    assert all(q in dataset.corpus[next(iter(dataset.qrels[qid]))] for qid, q in dataset.queries.items())
    assert pseudo_query_dataset(enc, CORPUS, n_queries=8, query_tokens=12, seed=0).queries == dataset.queries
    task = EvalTask("pseudo", "beir", {"all": dataset})
    evaluator = RetrievalEvaluator(enc)
    calibration = calibrate_dev(
        enc, lambda c: evaluator.score(c, task), buckets=EDGES, taus=(1.0, 0.8), rounds=1, criterion="self"
    )
    assert calibration.criterion == "self"
    assert len(calibration.measurements["scores"]) == 3  # (1, 1), (1, 0.8), then (0.8, best second)
    assert evaluator.cache is not None and evaluator.cache.hits > 0
    with pytest.raises(ValueError, match="two documents"):
        pseudo_query_dataset(enc, ["tiny"], n_queries=2)


def test_spread_per_chunk_size_writes_a_loadable_file(encoder: TempScaleEncoder, tmp_path: Path) -> None:
    from tempscale_rag.calibration import calibrate_sizes, read_chunking
    from tempscale_rag.config import ChunkingConfig

    enc = encoder.with_config(max_seq_length=64)
    n_special = enc.count_tokens([""])[0]
    chunking = ChunkingConfig.parse("16:1,32:0.5,48:0.5", overlap_tokens=4)  # given taus are replaced
    calibration = calibrate_sizes(enc, CORPUS, chunking, taus=(1.0, 0.7), per_length=4)
    assert calibration.chunking is not None and calibration.chunking.sizes == (16, 32, 48)
    taus = calibration.chunking.temperatures
    assert taus is not None and taus[0] == 1.0  # the smallest size is the reference
    target = calibration.measurements["reference_mean_cosine"]
    for size, tau in zip((32, 48), taus[1:], strict=True):
        curve = calibration.measurements["sizes"][str(size)]["mean_cosine_by_tau"]
        assert abs(curve[f"{tau:g}"] - target) == min(abs(v - target) for v in curve.values())
    assert calibration.buckets == list(calibration.chunking.buckets(n_special))
    assert calibration.spec() == calibration.chunking.spec()
    path = calibration.save(tmp_path / "sizes.json")
    assert read_chunking(path) == calibration.chunking and read_chunking(path).overlap_tokens == 4  # type: ignore[union-attr]
    assert Calibration.load(path).chunking == calibration.chunking
    assert TempScaleConfig.with_calibration(path).buckets == calibration.chunking.buckets(n_special)
    # A bucket calibration has no chunk sizes.
    plain = Calibration(model=encoder.model_name, criterion="spread", buckets=EDGES).save(tmp_path / "plain.json")
    assert read_chunking(plain) is None
    # One size: the reference is short (32-token) texts, so the single size is calibrated too.
    single = calibrate_sizes(enc, CORPUS, ChunkingConfig(sizes=(48,)), taus=(1.0, 0.7), per_length=4)
    assert single.measurements["reference_tokens"] == 32 and "mean_cosine_by_tau" in single.measurements["sizes"]["48"]
    with pytest.raises(ValueError, match="does not fit the model window"):
        calibrate_sizes(enc, CORPUS, ChunkingConfig(sizes=(128,)), taus=(1.0,), per_length=4)


def test_a_dev_search_over_chunk_sizes_becomes_per_size_taus(encoder: TempScaleEncoder) -> None:
    from tempscale_rag.calibration import chunking_calibration
    from tempscale_rag.config import ChunkingConfig

    chunking = ChunkingConfig.parse("16,32")
    n_special = encoder.count_tokens([""])[0]

    def score(enc: TempScaleEncoder) -> float:
        first, second = (b.tau for b in enc.config.buckets)
        return -abs(first - 1.0) - abs(second - 0.8)

    found = calibrate_dev(encoder, score, buckets=chunking.buckets(n_special), taus=(1.0, 0.9, 0.8), rounds=2)
    per_size = chunking_calibration(found, chunking, n_special)
    assert per_size.chunking is not None and per_size.chunking.temperatures == (1.0, 0.8)
    assert per_size.spec() == "16:1,32:0.8" and per_size.settings["n_special"] == n_special
    with pytest.raises(ValueError, match="not the chunk sizes' buckets"):
        chunking_calibration(found, ChunkingConfig.parse("24,32"), n_special)
