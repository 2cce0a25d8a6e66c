"""Tests of the side-by-side evaluator: correctness, exact embedding sharing, configurations, reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tempscale_rag import TempScaleConfig, TempScaleEncoder
from tempscale_rag.config import DEFAULT_BUCKETS, DEFAULT_QUERY_TEMPERATURE
from tempscale_rag.evaluation import evaluate_run
from tempscale_rag.evaluation.report import markdown_report, write_outputs
from tempscale_rag.evaluation.runner import (
    EvalTask,
    RetrievalEvaluator,
    beir_task,
    build_configurations,
    passkey_task,
    segment_signature,
    split_by_documents,
)
from tempscale_rag.windows import cut_windows

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BASE = TempScaleConfig(device="cpu", chunk_overlap=4)
REQUIRED_KEYS = {"ndcg@10", "ndcg@1", "recall@10", "mrr", "acc@1"}


def write_beir(folder: Path, docs: dict[str, str], queries: dict[str, str], qrels: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for doc_id, text in docs.items():
            f.write(json.dumps({"_id": doc_id, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    rows = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t1" for q, d in qrels.items())]
    (folder / "qrels.tsv").write_text("\n".join(rows) + "\n")
    return folder


DOCS = {
    "d1": "The remote control case will be made of rubber because it is cheaper. " * 6,
    "d2": "The committee approved the budget for the new library in the town centre.",
    "d3": "Photosynthesis converts light energy into chemical energy in plants. " * 3,
}


@pytest.fixture(scope="module")
def tiny_passkey() -> EvalTask:
    # Small on purpose: the suite runs on two shared CPU cores.
    return passkey_task((128, 256), n_docs=10, n_queries=5, seed=3)


def test_perfect_configuration_scores_one(encoder: TempScaleEncoder, tmp_path: Path) -> None:
    # Each query is its document's text, so with queries and documents encoded alike the top hit is always right.
    folder = write_beir(tmp_path / "perfect", DOCS, {f"q{d}": t for d, t in DOCS.items()}, {f"q{d}": d for d in DOCS})
    task = beir_task(folder)
    configurations = build_configurations(BASE, temperatures=[0.7], max_seq_lengths=[64], doc_scores=["vector"])
    results = RetrievalEvaluator(encoder).evaluate(task, configurations)
    assert [r.name for r in results.results] == ["tau=1", "tau=0.7"]
    for result in results.results:
        assert set(result.metrics) >= REQUIRED_KEYS
        assert result.metrics["ndcg@10"] == pytest.approx(1.0)
        assert result.metrics["ndcg@1"] == pytest.approx(1.0)
        assert result.metrics["mrr"] == pytest.approx(1.0)
    assert results.delta(results.results[1], "ndcg@10") == pytest.approx(0.0)


def test_store_retrieval_matches_brute_force(encoder: TempScaleEncoder, tiny_passkey: EvalTask) -> None:
    # The FAISS store route must give the same metrics as ranking every document by a numpy dot product.
    configurations = build_configurations(BASE, temperatures=[0.8], max_seq_lengths=[96], doc_scores=["vector"])
    config = configurations[1].config
    results = RetrievalEvaluator(encoder, cache=False).evaluate(tiny_passkey, configurations)
    enc = encoder.with_config(**config.model_dump())
    for label, ds in tiny_passkey.parts.items():
        docs = enc.encode(list(ds.corpus.values()))
        queries = enc.encode(list(ds.queries.values()), query=True)
        scores = queries @ docs.T
        run = {
            qid: {doc_id: float(s) for doc_id, s in zip(ds.corpus, row, strict=True)}
            for qid, row in zip(ds.queries, scores, strict=True)
        }
        expected = evaluate_run(run, ds.qrels, (1, 10, 100)).mean
        got = results.results[1].parts[label].mean
        for key in REQUIRED_KEYS:
            assert got[key] == pytest.approx(expected[key], abs=1e-6), (label, key)


def test_cache_gives_the_same_numbers_as_no_cache(encoder: TempScaleEncoder) -> None:
    tiny = passkey_task((96, 160), n_docs=6, n_queries=3, seed=5)
    configurations = build_configurations(
        BASE,
        temperatures=[0.8],
        buckets=["0-40:1.0,40-:0.7"],
        long_text=["truncate", "chunk_mean"],
        max_seq_lengths=[32, 48],
        queries="plain",
        doc_scores=["vector"],
    )
    cached = RetrievalEvaluator(encoder)
    with_cache = cached.evaluate(tiny, configurations)
    without = RetrievalEvaluator(encoder, cache=False).evaluate(tiny, configurations)
    for a, b in zip(with_cache.results, without.results, strict=True):
        assert a.name == b.name
        for label in tiny.parts:
            assert a.parts[label].per_query == b.parts[label].per_query, (a.name, label)
    assert cached.cache is not None and cached.cache.hits > 0
    # Short queries go to tau = 1 under the buckets and under docs-only taus: shared, not re-encoded.
    by_name = {r.name: r for r in with_cache.results}
    assert by_name["tau=0.8 docs-only @48 truncate"].encoding["cached"] >= 6
    assert by_name["buckets 0-40:1,40-:0.7 @48 truncate"].encoding["cached"] >= 6
    # Queries fit both windows, so the second window reuses the first one's query vectors.
    assert by_name["tau=1 @48 truncate"].encoding["cached"] >= 6


def test_synthetic_scores_per_length_and_mean(encoder: TempScaleEncoder, tiny_passkey: EvalTask) -> None:
    configurations = build_configurations(BASE, max_seq_lengths=[64], doc_scores=["vector"])
    results = RetrievalEvaluator(encoder).evaluate(tiny_passkey, configurations)
    assert [r.name for r in results.results] == ["tau=1", "default buckets"]
    for result in results.results:
        per_length = [result.parts[label].mean["acc@1"] for label in ("128", "256")]
        assert result.metrics["acc@1"] == pytest.approx(sum(per_length) / 2)
        assert all(0.0 <= v <= 1.0 for v in per_length)
    document = results.to_json_dict()
    json.dumps(document)
    entry = document["configurations"][1]
    assert set(entry["by_length"]) == {"128", "256"}
    assert set(entry["metrics"]) >= REQUIRED_KEYS and set(entry["delta_vs_baseline"]) >= REQUIRED_KEYS
    assert entry["config"]["buckets"] == [b.model_dump() for b in DEFAULT_BUCKETS]
    assert len(entry["per_query"]["256"]) == 5
    assert "| tau=1 |" in markdown_report(results)


@pytest.mark.parametrize("prompt", ["", "passage: "])
def test_the_evaluator_cuts_windows_with_the_encoders_rule(encoder: TempScaleEncoder, prompt: str) -> None:
    # The evaluator predicts what the encoder embeds (for its cost figures and its cache keys) with `cut_windows`,
    # the function the encoder itself cuts with; a document prompt shifts the windows and must be counted once.
    specials = encoder.count_tokens([""])[0]
    text = "The grass is green. The sky is blue. " * 40
    for window, overlap in ((64, 8), (100, 0), (128, 32)):
        enc = encoder.with_config(
            long_text="chunk_mean", max_seq_length=window, chunk_overlap=overlap, document_prompt=prompt
        )
        n_tokens = enc.count_tokens([text])[0]
        enc.encode([text])
        content = n_tokens - specials
        windows = cut_windows([content], window - specials, "chunk_mean", overlap)
        assert enc.last_report.segments == len(windows.body) > 1
        assert enc.last_report.tokens == int(windows.body.sum()) + specials * len(windows.body)
        routes = segment_signature(enc, n_tokens, specials, query=False)[-1]
        assert [length for length, _tau, _shape in routes] == (windows.body + specials).tolist()
        truncated = cut_windows([content], window - specials, "truncate", overlap)
        assert truncated.body.tolist() == [window - specials] and truncated.dropped.tolist() == [
            content - (window - specials)
        ]
    assert cut_windows([10], 62, "chunk_mean", 8).body.tolist() == [10]
    assert cut_windows([], 62, "chunk_mean", 8).body.tolist() == []


def test_per_size_rows_put_queries_at_the_product_query_tau_and_the_baseline_at_one() -> None:
    rows = build_configurations(BASE, queries="both", chunkings=["16:1,32:0.8", "16:1,32:0.9"], retrievals=["dense"])
    by_name = {c.name: c for c in rows}
    assert list(by_name) == [
        "tau=1",
        "taus 16:1,32:0.8",
        "taus 16:1,32:0.8 docs-only",
        "taus 16:1,32:0.9",
        "taus 16:1,32:0.9 docs-only",
    ]
    # `index` gives queries DEFAULT_QUERY_TEMPERATURE; every row of the pipeline, not only the first, gets it
    assert by_name["taus 16:1,32:0.8"].config.query_temperature == DEFAULT_QUERY_TEMPERATURE != 1.0
    assert by_name["taus 16:1,32:0.9"].config.query_temperature == DEFAULT_QUERY_TEMPERATURE
    assert by_name["taus 16:1,32:0.9 docs-only"].config.query_temperature == 1.0
    baseline = by_name["tau=1"].config
    assert baseline.temperature == 1.0 and baseline.query_temperature is None  # queries at tau 1 like the chunks
    # --query-temperature reaches the per-size rows (it used to be dropped with the other temperature fields)
    asked = build_configurations(
        BASE.model_copy(update={"query_temperature": 0.7}), chunkings=["16:1,32:0.8"], retrievals=["dense"]
    )
    assert [c.config.query_temperature for c in asked] == [None, 0.7]


def test_build_configurations_names_baselines_and_validation() -> None:
    names = [c.name for c in build_configurations(BASE, doc_scores=["vector"])]
    assert names == ["tau=1", "default buckets"]
    configurations = build_configurations(
        BASE,
        temperatures=[1.0, 0.9],
        queries="both",
        long_text=["truncate", "chunk_mean"],
        max_seq_lengths=[256, 512],
        doc_scores=["vector"],
    )
    assert [c.name for c in configurations[:3]] == [
        "tau=1 @256 truncate",
        "tau=0.9 @256 truncate",
        "tau=0.9 docs-only @256 truncate",
    ]
    assert len(configurations) == 12
    docs_only = configurations[2]
    assert docs_only.config.temperature == 0.9 and docs_only.config.query_temperature == 1.0
    assert docs_only.baseline == "tau=1 @256 truncate"
    assert all(c.config.max_seq_length in (256, 512) for c in configurations)
    with pytest.raises(ValueError, match="tau"):
        build_configurations(BASE, temperatures=[0.0])
    with pytest.raises(ValueError, match="bucket"):
        build_configurations(BASE, buckets=["0-10:1.0"])
    with pytest.raises(ValueError, match="share the name"):
        build_configurations(BASE, buckets=["default", "default"])
    with pytest.raises(ValueError, match="unknown document score"):
        build_configurations(BASE, doc_scores=["best"])


def test_split_by_documents(tmp_path: Path) -> None:
    folder = write_beir(
        tmp_path / "split", DOCS, {"a": "rubber", "b": "budget", "c": "plants"}, {"a": "d1", "b": "d2", "c": "d3"}
    )
    split_file = tmp_path / "splits.tsv"
    split_file.write_text("d1\ttrain\nd2\tval\nd3\ttrain\n")
    task = split_by_documents(beir_task(folder), split_file, "train")
    assert set(task.parts["all"].queries) == {"a", "c"} and len(task.parts["all"].corpus) == 3
    with pytest.raises(ValueError, match="split 'test'"):
        split_by_documents(beir_task(folder), split_file, "test")


def test_write_outputs(encoder: TempScaleEncoder, tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "w", DOCS, {"a": "rubber remote", "b": "library budget"}, {"a": "d1", "b": "d2"})
    configurations = build_configurations(BASE, max_seq_lengths=[32], doc_scores=["vector"])
    results = RetrievalEvaluator(encoder).evaluate(beir_task(folder), configurations)
    paths = write_outputs(results, tmp_path / "out")
    document = json.loads(paths["json"].read_text())
    assert document["main_metric"] == "ndcg@10"
    assert all(math.isfinite(c["metrics"]["ndcg@10"]) for c in document["configurations"])
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "nDCG@10" in paths["markdown"].read_text()


@pytest.mark.skipif(not (SHARED_DATA / "bamboo").is_dir(), reason="../shared/data/bamboo is absent")
def test_bamboo_slice_runs(encoder: TempScaleEncoder) -> None:
    full = beir_task(SHARED_DATA / "bamboo")
    task = EvalTask("bamboo", "beir", {"all": full.parts["all"].subset(4, seed=0, max_docs=10)})
    configurations = build_configurations(BASE, max_seq_lengths=[64], doc_scores=["vector"])
    results = RetrievalEvaluator(encoder).evaluate(task, configurations)
    assert all(0.0 <= r.metrics["ndcg@10"] <= 1.0 for r in results.results)
    assert results.results[0].encoding["truncated_documents"] == 10


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "qmsum").is_dir(), reason="../shared/data/qmsum is absent")
def test_qmsum_reproduces_mteb() -> None:
    # The public MTEB number for all-MiniLM-L6-v2 on LEMBQMSumRetrieval at max_seq_length 256 is nDCG@10 = 16.32.
    encoder = TempScaleEncoder(device="cpu", max_seq_length=256)
    configurations = build_configurations(BASE, temperatures=[1.0], max_seq_lengths=[256], doc_scores=["vector"])
    assert [c.name for c in configurations] == ["tau=1"]
    results = RetrievalEvaluator(encoder).evaluate(beir_task(SHARED_DATA / "qmsum"), configurations)
    assert results.results[0].metrics["ndcg@10"] * 100 == pytest.approx(16.32, abs=0.1)


def test_limited_task_keeps_documents(tiny_passkey: EvalTask) -> None:
    limited = tiny_passkey.limited(3, seed=1)
    assert all(len(ds.queries) == 3 and len(ds.corpus) == 10 for ds in limited.parts.values())
    assert tiny_passkey.limited(None) is tiny_passkey
    with pytest.raises(ValueError):
        tiny_passkey.limited(0)
    assert list(limited.parts) == ["128", "256"]
