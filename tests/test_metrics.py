"""Tests of the retrieval metrics: a small reference implementation, tie handling, and the length breakdown."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from tempscale_rag.evaluation import breakdown_by_length, evaluate_run, load_beir, make_passkey

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KEYS = ["ndcg@1", "ndcg@10", "ndcg@100", "recall@1", "recall@10", "recall@100"]
KEYS += ["mrr", "mrr@1", "mrr@10", "mrr@100", "acc@1"]


def reference_metrics(
    scores: dict[str, float], judged: dict[str, int], k_values: tuple[int, ...] = (1, 10, 100)
) -> dict[str, float]:
    """Textbook nDCG (linear gain, log2 discount), recall, reciprocal rank and accuracy@1 for one query.

    Ties are ordered by descending document id, trec_eval's rule; the cross-check on untied runs does not rely on it.
    """
    ranking = sorted(scores, key=lambda doc: (scores[doc], doc), reverse=True)
    relevant = {doc for doc, rel in judged.items() if rel > 0}
    ideal = sorted((max(rel, 0) for rel in judged.values()), reverse=True)
    first = next((rank for rank, doc in enumerate(ranking, start=1) if doc in relevant), None)
    out: dict[str, float] = {}
    for k in k_values:
        dcg = sum(max(judged.get(doc, 0), 0) / math.log2(rank + 1) for rank, doc in enumerate(ranking[:k], start=1))
        idcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(ideal[:k], start=1))
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
        out[f"recall@{k}"] = len(relevant & set(ranking[:k])) / len(relevant) if relevant else 0.0
    out["mrr"] = 1.0 / first if first else 0.0
    for k in k_values:
        out[f"mrr@{k}"] = 1.0 / first if first and first <= k else 0.0
    out["acc@1"] = 1.0 if ranking and ranking[0] in relevant else 0.0
    return out


def random_case(
    seed: int, *, ties: bool, n_queries: int = 40, n_docs: int = 150
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    rng = random.Random(seed)
    docs = [f"d{j}" for j in range(n_docs)]  # unpadded ids, so string order differs from numeric order
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for i in range(n_queries):
        qid = f"q{i}"
        qrels[qid] = {doc: rng.choice([0, 1, 1, 2, 3]) for doc in rng.sample(docs, rng.randint(1, 6))}
        if i % 10 == 9:
            continue  # missing from the run: must score 0
        scored = rng.sample(docs, rng.randint(1, n_docs))
        if ties:
            values = [rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in scored]
        else:
            values = [v / 1e6 for v in rng.sample(range(10**6), len(scored))]
        run[qid] = dict(zip(scored, values, strict=True))
    run["not_in_qrels"] = {"d0": 1.0}
    return run, qrels


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_matches_reference_implementation(seed: int, ties: bool) -> None:
    run, qrels = random_case(seed, ties=ties)
    result = evaluate_run(run, qrels)
    assert list(result.per_query) == list(qrels)
    for qid, judged in qrels.items():
        expected = reference_metrics(run.get(qid, {}), judged)
        assert list(result.per_query[qid]) == KEYS
        for key in KEYS:
            assert result.per_query[qid][key] == pytest.approx(expected[key], abs=1e-12), (qid, key)
    for key in KEYS:
        assert result.mean[key] == pytest.approx(sum(m[key] for m in result.per_query.values()) / len(qrels))


def test_ties_follow_pytrec_eval_like_mteb() -> None:
    # trec_eval ranks tied documents by descending id: 'c', 'b', then 'a'.
    result = evaluate_run({"q": {"a": 0.5, "b": 0.5, "c": 0.5}}, {"q": {"a": 1}})
    assert result.per_query["q"]["mrr"] == pytest.approx(1 / 3)
    assert (result.mean["acc@1"], result.mean["ndcg@1"], result.mean["mrr@1"], result.mean["recall@1"]) == (0, 0, 0, 0)
    assert result.mean["ndcg@10"] == pytest.approx(0.5)
    # String order, not numeric: "d9" ranks above "d10".
    assert evaluate_run({"q": {"d10": 1.0, "d9": 1.0}}, {"q": {"d9": 1}}).mean["acc@1"] == 1.0
    # The order of the run dict plays no part.
    forward = {f"d{j}": float(j % 3) for j in range(30)}
    backward = dict(reversed(list(forward.items())))
    qrels = {"q": {"d4": 1, "d13": 2, "d27": 1}}
    assert evaluate_run({"q": forward}, qrels) == evaluate_run({"q": backward}, qrels)


def test_ndcg_and_recall_equal_direct_pytrec_eval_on_tied_runs() -> None:
    # MTEB calls pytrec_eval.RelevanceEvaluator directly with ndcg_cut/recall; the numbers must be identical.
    run, qrels = random_case(11, ties=True)
    run = {qid: scores for qid, scores in run.items() if qid in qrels}
    ours = evaluate_run(run, qrels)
    direct = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,10,100", "recall.1,10,100", "recip_rank"}).evaluate(run)
    for qid, values in direct.items():
        for k in (1, 10, 100):
            assert ours.per_query[qid][f"ndcg@{k}"] == values[f"ndcg_cut_{k}"]
            assert ours.per_query[qid][f"recall@{k}"] == values[f"recall_{k}"]
        assert ours.per_query[qid]["mrr"] == values["recip_rank"]


def test_missing_and_empty_queries_score_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}, "q3": {"b": 1}}
    result = evaluate_run({"q1": {"a": 1.0, "b": 0.0}, "q2": {}, "other": {"a": 1.0}}, qrels)
    assert list(result.per_query) == ["q1", "q2", "q3"]
    assert result.per_query["q2"] == result.per_query["q3"] == dict.fromkeys(KEYS, 0.0)
    assert result.mean["acc@1"] == pytest.approx(1 / 3)
    assert evaluate_run({}, qrels).mean == dict.fromkeys(KEYS, 0.0)


def test_custom_k_values_and_score_types() -> None:
    run = {"q": {"a": np.float32(0.25), "b": 3, "c": float("inf"), "d": float("-inf")}}
    result = evaluate_run(run, {"q": {"a": 1}}, k_values=(5, 2, 2))  # type: ignore[arg-type]  # numpy accepted
    assert list(result.mean) == ["ndcg@2", "ndcg@5", "recall@2", "recall@5", "mrr", "mrr@2", "mrr@5", "acc@1"]
    assert result.mean["mrr"] == pytest.approx(1 / 3) and result.mean["mrr@2"] == 0.0 and result.mean["recall@5"] == 1


@pytest.mark.parametrize(
    ("run", "qrels", "k_values", "error", "message"),
    [
        ({}, {}, (1,), ValueError, "qrels are empty"),
        ({}, {"q": {}}, (1,), ValueError, "empty qrels entry"),
        ({}, {"q": {"a": 1.5}}, (1,), TypeError, "relevance must be an int"),
        ({}, {"q": {"a": 1}}, (), ValueError, "must not be empty"),
        ({}, {"q": {"a": 1}}, (0,), ValueError, "positive ints"),
        ({}, {"q": {"a": 1}}, (True,), ValueError, "positive ints"),
        ({"q": {"a": float("nan")}}, {"q": {"a": 1}}, (1,), ValueError, "NaN"),
        ({"q": {"a": "0.3"}}, {"q": {"a": 1}}, (1,), TypeError, "real number"),
    ],
)
def test_evaluate_run_errors(
    run: dict[str, dict[str, object]],
    qrels: dict[str, dict[str, object]],
    k_values: tuple[int, ...],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        evaluate_run(run, qrels, k_values)  # type: ignore[arg-type]


def test_all_tied_passkey_run_hits_the_floor() -> None:
    ds = make_passkey([256])[256]
    result = evaluate_run({qid: dict.fromkeys(ds.corpus, 0.0) for qid in ds.queries}, ds.qrels)
    top = max(ds.corpus)  # every query ranks the same document first: the largest id
    targets = {doc for judged in ds.qrels.values() for doc in judged}
    assert result.mean["acc@1"] == result.mean["ndcg@1"] == (1 / 50 if top in targets else 0.0)


def test_breakdown_by_length() -> None:
    per_query = {
        "q1": {"ndcg@10": 1.0, "acc@1": 1.0},
        "q2": {"ndcg@10": 0.5, "acc@1": 0.0},
        "q3": {"ndcg@10": 0.0, "acc@1": 0.0},
        "q4": {"ndcg@10": 0.2, "acc@1": 0.0},
    }
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 2}, "q3": {"c": 1, "a": 0}, "q4": {"a": 0}}
    lengths = {"a": 100, "b": 300, "c": 5000}
    bins = breakdown_by_length(per_query, lengths, qrels, [0, 256, 512, 4096, math.inf])
    assert list(bins) == ["0-256", "256-512", "512-4096", "4096+"]
    assert [b.count for b in bins.values()] == [1, 0, 0, 2]  # q2 goes by its longest relevant doc; q4 has none
    assert bins["0-256"].mean == {"ndcg@10": 1.0, "acc@1": 1.0}
    assert bins["256-512"].mean == {}
    assert bins["4096+"].mean == {"ndcg@10": 0.25, "acc@1": 0.0}
    assert (bins["4096+"].low, bins["4096+"].high) == (4096, math.inf)


@pytest.mark.parametrize(
    ("lengths", "edges", "message"),
    [
        ({"a": 10}, [0], "at least two"),
        ({"a": 10}, [0, 512, 256], "strictly increasing"),
        ({"a": 600}, [0, 512], "outside the bins"),
        ({}, [0, 512], "no length for document 'a'"),
    ],
)
def test_breakdown_errors(lengths: dict[str, int], edges: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        breakdown_by_length({"q": {"acc@1": 1.0}}, lengths, {"q": {"a": 1}}, edges)


def test_perfect_run_on_qmsum_scores_one() -> None:
    folder = SHARED_DATA / "qmsum"
    if not folder.is_dir():
        pytest.skip(f"shared data {folder} is not present")
    ds = load_beir(folder)
    run = {qid: {doc: float(doc in ds.qrels[qid]) for doc in ds.corpus} for qid in ds.queries}
    result = evaluate_run(run, ds.qrels)
    assert len(result.per_query) == 1527
    # Two queries have two relevant meetings, so one retrieved document recalls half of them.
    assert result.mean["recall@1"] == pytest.approx((1525 + 2 * 0.5) / 1527)
    assert all(result.mean[key] == pytest.approx(1.0) for key in KEYS if key != "recall@1")
