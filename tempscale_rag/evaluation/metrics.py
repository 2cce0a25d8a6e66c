"""Retrieval metrics computed the way MTEB computes them, plus a per-length breakdown.

`evaluate_run` scores a run (query id -> {document id: score}) against qrels with ir_measures on its pytrec_eval
backend, the trec_eval code that MTEB's retrieval evaluator calls, so nDCG@10 on a LongEmbed task matches the MTEB
leaderboard for the same run.

Ranking and ties: pytrec_eval (like trec_eval) ranks each query's documents by score, highest first, and breaks ties
by document id in *descending* string order ("doc9" before "doc10" before "doc1"); the order of the run dict plays no
part. Every metric here, MRR included, uses that ranking. MTEB's own `mrr_at_k` instead sorts in Python, so tied
scores keep the run's insertion order there; the two can differ only when a relevant document's score is tied with
another document's. A run with all documents tied (e.g. a 512-token model on 32k-token needle documents that share
their first 512 tokens) thus ranks every query's documents identically, by descending id.

Queries: the mean is over every query in qrels. A query that is missing from the run, or has no scored documents,
scores 0 on every metric (trec_eval's `-c` convention; MTEB always returns results for every query, so its mean is
the same). Run entries for queries that are not in qrels are ignored. Relevance > 0 counts as relevant for recall,
MRR and acc@1; nDCG uses the graded relevance as gain (linear, as trec_eval does).
"""

from __future__ import annotations

import bisect
import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Run = Mapping[str, Mapping[str, float]]
"""Query id -> {document id: score}; higher scores rank first."""

Qrels = Mapping[str, Mapping[str, int]]
"""Query id -> {document id: graded relevance}; relevance > 0 is relevant."""


@dataclass(frozen=True)
class MetricsResult:
    """Metrics of one run.

    Keys are lower-case with `@` before the cutoff: `ndcg@k`, `recall@k` and `mrr@k` for each k of `k_values`,
    `mrr` (no cutoff) and `acc@1` (1 if the top-ranked document is relevant; equal to `ndcg@1` when each query has
    one relevant document, LongEmbed's score for the synthetic tasks).

    Attributes:
        mean: Metric -> mean over all queries in qrels.
        per_query: Query id -> metric -> value, for every query in qrels, in qrels order.
    """

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)


@dataclass(frozen=True)
class LengthBin:
    """Metrics of the queries whose relevant document falls in one token-length bin.

    Attributes:
        low: Inclusive lower edge in tokens.
        high: Exclusive upper edge in tokens (`math.inf` for an open-ended last bin).
        count: Number of queries in the bin.
        mean: Metric -> mean over those queries; empty when `count` is 0.
    """

    low: float
    high: float
    count: int
    mean: dict[str, float]


def evaluate_run(run: Run, qrels: Qrels, k_values: Sequence[int] = (1, 10, 100)) -> MetricsResult:
    """Score a run against qrels with pytrec_eval (through ir_measures), as MTEB does.

    See the module docstring for how ties and missing queries are treated.

    Args:
        run: Query id -> {document id: score}. Scores must be real numbers, not NaN (infinities are allowed).
        qrels: Query id -> {document id: int relevance}; every query needs at least one judged document.
        k_values: Cutoffs for nDCG, recall and MRR (positive ints; duplicates are dropped, order is ascending).

    Returns:
        The mean and per-query metrics.

    Raises:
        ValueError: If qrels are empty or malformed, `k_values` is invalid, or a score is NaN.
        TypeError: If an id is not a string, a relevance not an int, or a score not a real number.
    """
    import ir_measures

    cutoffs = _check_k_values(k_values)
    clean_qrels = _check_qrels(qrels)
    clean_run = _check_run(run, clean_qrels)

    measures = {}
    for k in cutoffs:
        measures[ir_measures.nDCG @ k] = f"ndcg@{k}"
        measures[ir_measures.R @ k] = f"recall@{k}"
    # RR@k is not a pytrec_eval measure; ir_measures would hand it to another provider with its own tie order, so
    # MRR@k is derived below from pytrec_eval's recip_rank, which keeps one ranking for every metric.
    measures[ir_measures.RR] = "mrr"
    measures[ir_measures.Success @ 1] = "acc@1"

    computed: dict[str, dict[str, float]] = {qid: {} for qid in clean_qrels}
    if clean_run:
        for metric in ir_measures.pytrec_eval.iter_calc(list(measures), clean_qrels, clean_run):
            if metric.query_id in computed:
                computed[metric.query_id][measures[metric.measure]] = float(metric.value)

    keys = [f"{name}@{k}" for name in ("ndcg", "recall") for k in cutoffs]
    keys += ["mrr", *(f"mrr@{k}" for k in cutoffs), "acc@1"]
    per_query: dict[str, dict[str, float]] = {}
    for qid, values in computed.items():
        rr = values.get("mrr", 0.0)
        # recip_rank is 1/rank of the first relevant document, so the rank is recovered exactly by rounding.
        first_relevant_rank = round(1.0 / rr) if rr > 0 else math.inf
        for k in cutoffs:
            values[f"mrr@{k}"] = rr if first_relevant_rank <= k else 0.0
        per_query[qid] = {key: values.get(key, 0.0) for key in keys}
    mean = {key: math.fsum(values[key] for values in per_query.values()) / len(per_query) for key in keys}
    return MetricsResult(mean=mean, per_query=per_query)


def breakdown_by_length(
    per_query: Mapping[str, Mapping[str, float]],
    doc_lengths: Mapping[str, int],
    qrels: Qrels,
    bins: Sequence[float],
) -> dict[str, LengthBin]:
    """Group per-query metrics by the token length of each query's relevant document.

    A query with several relevant documents (relevance > 0) is placed by the longest of them, the one hardest to
    embed. Queries with no relevant document cannot be placed and are left out.

    Args:
        per_query: Query id -> metric -> value, e.g. `MetricsResult.per_query`.
        doc_lengths: Document id -> length in tokens, counted by the caller's tokenizer.
        qrels: The qrels the metrics were computed with.
        bins: Increasing bin edges `[e0, e1, ..., en]` giving bins `[e0, e1)`, ..., `[e(n-1), en)`; make the last
            edge `math.inf` for an open-ended last bin.

    Returns:
        Bin label (`"512-1024"`, or `"4096+"` for an open-ended bin) -> `LengthBin`, in bin order, empty bins
        included.

    Raises:
        ValueError: If the edges are not increasing (at least two), a query has no qrels, a relevant document has no
            length, or a length falls outside the bins.
    """
    edges = [float(edge) for edge in bins]
    if len(edges) < 2 or any(math.isnan(edge) for edge in edges) or any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(
            f"bins must be at least two strictly increasing edges, e.g. [0, 512, 2048, math.inf]; got {list(bins)}"
        )
    members: list[list[str]] = [[] for _ in edges[:-1]]
    for qid in per_query:
        if qid not in qrels:
            raise ValueError(f"query {qid!r} has metrics but no qrels")
        relevant = [doc_id for doc_id, rel in qrels[qid].items() if rel > 0]
        if not relevant:
            continue
        missing = [doc_id for doc_id in relevant if doc_id not in doc_lengths]
        if missing:
            raise ValueError(f"no length for document {missing[0]!r} (relevant to query {qid!r}) in doc_lengths")
        length = max(doc_lengths[doc_id] for doc_id in relevant)
        if not edges[0] <= length < edges[-1]:
            raise ValueError(
                f"query {qid!r}: relevant document length {length} is outside the bins [{edges[0]:g}, {edges[-1]:g}); "
                "widen the first or last edge (math.inf makes the last bin open-ended)"
            )
        members[bisect.bisect_right(edges, length) - 1].append(qid)

    result: dict[str, LengthBin] = {}
    for i, qids in enumerate(members):
        low, high = edges[i], edges[i + 1]
        label = f"{low:g}+" if math.isinf(high) else f"{low:g}-{high:g}"
        keys = list(per_query[qids[0]]) if qids else []
        mean = {key: math.fsum(per_query[qid][key] for qid in qids) / len(qids) for key in keys}
        result[label] = LengthBin(low=low, high=high, count=len(qids), mean=mean)
    return result


def _check_k_values(k_values: Sequence[int]) -> list[int]:
    cutoffs = list(k_values)
    if not cutoffs:
        raise ValueError("k_values must not be empty")
    for k in cutoffs:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k_values must be positive ints, got {k!r}")
    return sorted(set(cutoffs))


def _check_qrels(qrels: Qrels) -> dict[str, dict[str, int]]:
    if not qrels:
        raise ValueError("qrels are empty: there is nothing to evaluate")
    clean: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        if not isinstance(qid, str):
            raise TypeError(f"query ids must be strings, got {qid!r}")
        if not judged:
            raise ValueError(f"query {qid!r} has an empty qrels entry; drop the query or judge a document")
        clean[qid] = {}
        for doc_id, rel in judged.items():
            if not isinstance(doc_id, str):
                raise TypeError(f"document ids must be strings, got {doc_id!r} in qrels of query {qid!r}")
            if isinstance(rel, bool) or not isinstance(rel, numbers.Integral):
                raise TypeError(f"relevance must be an int, got {rel!r} for ({qid!r}, {doc_id!r})")
            clean[qid][doc_id] = int(rel)
    return clean


def _check_run(run: Run, qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    clean: dict[str, dict[str, float]] = {}
    for qid, scores in run.items():
        if qid not in qrels or not scores:
            continue
        clean[qid] = {}
        for doc_id, score in scores.items():
            if not isinstance(doc_id, str):
                raise TypeError(f"document ids must be strings, got {doc_id!r} in the run of query {qid!r}")
            if isinstance(score, bool) or not isinstance(score, numbers.Real):
                raise TypeError(f"score of ({qid!r}, {doc_id!r}) must be a real number, got {score!r}")
            value = float(score)
            if math.isnan(value):
                raise ValueError(f"score of ({qid!r}, {doc_id!r}) is NaN; pytrec_eval cannot rank it")
            clean[qid][doc_id] = value
    return clean
