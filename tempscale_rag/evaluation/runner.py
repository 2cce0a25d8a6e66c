"""Side-by-side retrieval evaluation of TempScale configurations, with embeddings shared wherever that is exact.

A run evaluates several `TempScaleConfig`s (the tau = 1 baseline, global taus, bucketed taus, calibration files, a
schedule) on one task, along two more axes: the long-text policy and the window. Every configuration goes through
the same engine (`TempScaleEncoder`), the same exact FAISS store and the same metrics (`evaluate_run`).

Sharing embeddings: the encoder makes a text's vector depend only on the text, the window segments it is cut into,
each segment's temperature and its padded shape (batches never mix shapes, see `tempscale_rag.encoder`). The
`EmbeddingCache` therefore keys a vector by the text and that *segment signature*, so a query that every
configuration routes to tau = 1 is encoded once for all of them, a document truncated to the window at tau = 0.8 is
shared by `tau=0.8` and bucket configurations that route it to 0.8, and an untruncated text is shared across windows.

Tasks: a BEIR folder is one retrieval task; LongEmbed's passkey and needle are one task per target length (100
candidates and 50 queries each), scored per length and averaged over lengths, as LongEmbed does.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import (
    DEFAULT_BUCKETS,
    Bucket,
    LongTextPolicy,
    TempScaleConfig,
    parse_buckets,
    read_calibration,
)
from tempscale_rag.encoder import TempScaleEncoder, padded_length
from tempscale_rag.evaluation.datasets import RetrievalDataset, load_beir
from tempscale_rag.evaluation.metrics import LengthBin, MetricsResult, breakdown_by_length, evaluate_run
from tempscale_rag.evaluation.synthetic import LONGEMBED_LENGTHS, make_needle, make_passkey

logger = logging.getLogger(__name__)

TaskKind = Literal["beir", "passkey", "needle"]
QueryMode = Literal["same", "plain", "both"]

DEFAULT_K_VALUES: tuple[int, ...] = (1, 10, 100)
"""Cutoffs of nDCG, recall and MRR; the keys `ndcg@1`, `ndcg@10`, `recall@10` always exist."""

DOC_LENGTH_BINS: tuple[float, ...] = (0, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, math.inf)
"""Edges (tokens) of the per-document-length breakdown of BEIR tasks."""

RETRIEVAL_DEPTH = 1000
"""Documents retrieved per query (MTEB's depth); every document when the corpus is smaller."""

SUMMARY_METRICS: tuple[str, ...] = ("ndcg@10", "ndcg@1", "recall@10", "mrr", "acc@1")
"""Metrics shown in tables, in this order."""


# -- tasks ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalTask:
    """What is evaluated: one BEIR dataset, or one synthetic dataset per target length.

    Attributes:
        name: Task name used in reports and the default output folder (`qmsum`, `passkey`, ...).
        kind: `beir`, `passkey` or `needle`.
        parts: Part label -> dataset; `{"all": dataset}` for BEIR, `{"256": passkey_256, ...}` for synthetic tasks.
        info: How the task was made (path, lengths, seed, counts), for the record.
    """

    name: str
    kind: TaskKind
    parts: dict[str, RetrievalDataset]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """True for passkey and needle, scored per length and averaged (LongEmbed's acc@1)."""
        return self.kind != "beir"

    @property
    def main_metric(self) -> str:
        """LongEmbed's score: nDCG@10 on real tasks, acc@1 (= nDCG@1 here) on the synthetic ones."""
        return "acc@1" if self.synthetic else "ndcg@10"

    def limited(self, n_queries: int | None, seed: int = 0) -> EvalTask:
        """The same task with at most `n_queries` queries per part (a seeded sample; every document is kept)."""
        if n_queries is None:
            return self
        if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries < 1:
            raise ValueError(f"the query limit must be a positive int, got {n_queries!r}")
        parts = {
            label: ds.subset(n_queries, seed) if n_queries < len(ds.queries) else ds for label, ds in self.parts.items()
        }
        return EvalTask(self.name, self.kind, parts, {**self.info, "limit_queries": n_queries, "limit_seed": seed})


def beir_task(folder: str | Path, *, name: str | None = None, split: str | None = None) -> EvalTask:
    """A task from a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels.tsv`); see `load_beir`."""
    dataset = load_beir(folder, name=name, split=split)
    info = {"path": str(Path(folder).resolve()), "documents": len(dataset.corpus), "queries": len(dataset.queries)}
    return EvalTask(dataset.name, "beir", {"all": dataset}, info)


def passkey_task(
    lengths: Sequence[int] = LONGEMBED_LENGTHS, *, n_docs: int = 100, n_queries: int = 50, seed: int = 0
) -> EvalTask:
    """LongEmbed's passkey task, generated (see `make_passkey`), one part per length."""
    datasets = make_passkey(lengths, n_docs=n_docs, n_queries=n_queries, seed=seed)
    info = {"lengths": list(datasets), "documents_per_length": n_docs, "queries_per_length": n_queries, "seed": seed}
    return EvalTask("passkey", "passkey", {str(length): ds for length, ds in datasets.items()}, info)


def needle_task(
    haystack_dir: str | Path,
    needles_tsv: str | Path,
    lengths: Sequence[int] = LONGEMBED_LENGTHS,
    *,
    n_docs: int = 100,
    n_queries: int = 50,
    seed: int = 0,
) -> EvalTask:
    """LongEmbed's needle task, generated from a haystack folder and a fact/question file (see `make_needle`)."""
    datasets = make_needle(haystack_dir, needles_tsv, lengths, n_docs=n_docs, n_queries=n_queries, seed=seed)
    info = {
        "lengths": list(datasets),
        "documents_per_length": n_docs,
        "queries_per_length": n_queries,
        "seed": seed,
        "haystack": str(Path(haystack_dir).resolve()),
        "needles": str(Path(needles_tsv).resolve()),
    }
    return EvalTask("needle", "needle", {str(length): ds for length, ds in datasets.items()}, info)


def split_by_documents(task: EvalTask, split_file: str | Path, split: str) -> EvalTask:
    """Keep the queries whose relevant documents all belong to `split` in a `doc_id<TAB>split` file.

    The corpus is kept whole, so scores stay comparable with the full task; only the queries are split. This gives
    a fair dev/test protocol on one dataset: calibrate on the queries about one set of documents, report on the
    queries about the others (for QMSum, `doc_splits.tsv` with `train` and `val`).

    Raises:
        ValueError: If the file is unreadable or malformed, or no query falls in `split`.
    """
    path = Path(split_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the split file {path}: {exc}") from None
    doc_split: dict[str, str] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'document-id<TAB>split', got {line!r}")
        doc_split[fields[0]] = fields[1]
    parts = {}
    for label, ds in task.parts.items():
        kept = [
            qid
            for qid in ds.queries
            if (relevant := ds.relevant_docs(qid)) and all(doc_split.get(doc) == split for doc in relevant)
        ]
        if not kept:
            known = sorted(set(doc_split.values()))
            raise ValueError(
                f"no query of {ds.name!r} has its relevant documents in split {split!r} of {path} ({known})"
            )
        parts[label] = RetrievalDataset(
            name=f"{ds.name}[{split}]",
            corpus=ds.corpus,
            queries={qid: ds.queries[qid] for qid in kept},
            qrels={qid: ds.qrels[qid] for qid in kept},
        )
    info = {**task.info, "split_file": str(path.resolve()), "split": split}
    info["queries"] = sum(len(ds.queries) for ds in parts.values())
    return EvalTask(f"{task.name}-{split}", task.kind, parts, info)


# -- configurations ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalConfiguration:
    """One configuration to evaluate.

    Attributes:
        name: Readable name, unique within a run (`tau=0.8`, `tau=0.8 docs-only`, `default buckets`, ...).
        config: The complete engine configuration.
        baseline: Name of the tau = 1 configuration with the same window and long-text policy, or None for a
            baseline itself; deltas are reported against it.
    """

    name: str
    config: TempScaleConfig
    baseline: str | None = None


def format_buckets(buckets: Sequence[Bucket]) -> str:
    """Buckets in the CLI's spec form, e.g. `0-128:1,128-256:0.9,256-:0.8`."""
    return ",".join(f"{b.min_tokens}-{'' if b.max_tokens is None else b.max_tokens}:{b.tau:g}" for b in buckets)


def build_configurations(
    base: TempScaleConfig,
    *,
    temperatures: Sequence[float] = (),
    buckets: Sequence[str | Sequence[Bucket]] = (),
    calibrations: Sequence[str | Path] = (),
    schedules: Sequence[str] = (),
    long_text: Sequence[LongTextPolicy] = ("truncate",),
    max_seq_lengths: Sequence[int | None] = (None,),
    queries: QueryMode = "same",
) -> list[EvalConfiguration]:
    """The configurations of one evaluation: the product of the temperature settings with the two axes.

    For every (window, long-text policy) pair there is a tau = 1 baseline, then one configuration per global tau,
    bucket spec, calibration file and schedule. With none of those given, the package's default configuration (the
    default buckets) is evaluated against the baseline.

    Args:
        base: Fields shared by every configuration (model, device, dtype, batching, chunk overlap, prompts).
        temperatures: Global taus; tau = 1 is the baseline and is always included.
        buckets: Bucket specs (`"0-128:1.0,128-256:0.9,256-:0.8"`, or `"default"`) or bucket lists.
        calibrations: Calibration files from `tempscale-rag calibrate`.
        schedules: Continuous schedules (`"longembed"`).
        long_text: Long-text policies to compare (an axis).
        max_seq_lengths: Windows to compare (an axis); None is the model's full window.
        queries: For global taus: `same` encodes queries at tau too (the paper), `plain` keeps queries at tau = 1
            (documents-only TempScale), `both` evaluates both.

    Returns:
        The configurations, baselines first within each (window, policy) pair.

    Raises:
        ValueError: For an invalid tau, bucket spec, calibration file or schedule, or an empty axis.
    """
    if queries not in ("same", "plain", "both"):
        raise ValueError(f"queries must be 'same', 'plain' or 'both', got {queries!r}")
    policies = list(dict.fromkeys(long_text))
    windows = list(dict.fromkeys(max_seq_lengths))
    if not policies or not windows:
        raise ValueError("the long-text and window axes need at least one value each")
    fields = base.model_dump()
    for name in ("temperature", "schedule", "query_temperature", "calibration_file", "buckets"):
        fields.pop(name, None)
    taus = list(dict.fromkeys(float(t) for t in temperatures))
    bucket_sets: list[tuple[str, list[Bucket]]] = []
    for spec in buckets:
        if isinstance(spec, str):
            if spec.strip().lower() == "default":
                bucket_sets.append(("default buckets", list(DEFAULT_BUCKETS)))
            else:
                parsed = parse_buckets(spec)
                bucket_sets.append((f"buckets {format_buckets(parsed)}", parsed))
        else:
            bucket_sets.append((f"buckets {format_buckets(spec)}", list(spec)))
    if not (taus or bucket_sets or calibrations or schedules):
        bucket_sets.append(("default buckets", list(DEFAULT_BUCKETS)))

    out: list[EvalConfiguration] = []
    for window in windows:
        for policy in policies:
            suffix = ""
            if len(windows) > 1:
                suffix += f" @{window if window is not None else 'full'}"
            if len(policies) > 1:
                suffix += f" {policy}"
            common = {**fields, "max_seq_length": window, "long_text": policy}
            baseline = f"tau=1{suffix}"
            group = [EvalConfiguration(baseline, _config(common, temperature=1.0))]
            for tau in taus:
                if tau == 1.0:
                    continue
                if queries in ("same", "both"):
                    group.append(EvalConfiguration(f"tau={tau:g}{suffix}", _config(common, temperature=tau), baseline))
                if queries in ("plain", "both"):
                    config = _config(common, temperature=tau, query_temperature=1.0)
                    group.append(EvalConfiguration(f"tau={tau:g} docs-only{suffix}", config, baseline))
            for label, bucket_list in bucket_sets:
                group.append(EvalConfiguration(f"{label}{suffix}", _config(common, buckets=bucket_list), baseline))
            for path in calibrations:
                config = TempScaleConfig.with_calibration(path, **common)
                made_for = read_calibration(path).get("settings", {}).get("max_seq_length")
                if made_for is not None and window is not None and made_for != window:
                    logger.warning("calibration %s was made for window %s, used here at %s", path, made_for, window)
                group.append(EvalConfiguration(f"calibrated {Path(path).stem}{suffix}", config, baseline))
            for schedule in schedules:
                group.append(
                    EvalConfiguration(f"schedule {schedule}{suffix}", _config(common, schedule=schedule), baseline)
                )
            out.extend(group)
    names = [c.name for c in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two configurations would share the name {duplicates[0]!r}; give each one only once")
    return out


def _config(common: dict[str, Any], **changes: Any) -> TempScaleConfig:
    try:
        return TempScaleConfig(**{**common, **changes})
    except ValueError as exc:  # pydantic's ValidationError is a ValueError; keep the message to one readable line
        raise ValueError(f"invalid configuration {changes}: {exc}".replace("\n", " ")) from None


# -- embedding cache -----------------------------------------------------------------------------------------------


def text_key(text: str) -> str:
    """A short stable digest of a text, the text's part of a cache key."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass
class EmbeddingCache:
    """Vectors keyed by (text digest, role, segment signature); see the module docstring for why this is exact.

    Attributes:
        hits: Vectors served from the cache.
        misses: Vectors that had to be encoded.
    """

    vectors: dict[tuple[Any, ...], npt.NDArray[np.float32]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    def __len__(self) -> int:
        return len(self.vectors)


def segment_lengths(n_tokens: int, window: int, n_special: int, policy: LongTextPolicy, overlap: int) -> list[int]:
    """Token counts (special tokens included) of the segments the encoder cuts a text of `n_tokens` into.

    Mirrors `TempScaleEncoder`'s plan: a text that fits is one segment; otherwise `truncate` keeps one full window
    and `chunk_mean` cuts windows of `window - n_special` content tokens every `stride` tokens.
    """
    capacity = window - n_special
    n = n_tokens - n_special
    if n <= capacity:
        return [n_tokens]
    if policy == "truncate":
        return [window]
    stride = max(1, capacity - min(overlap, capacity - 1))
    return [min(capacity, n - s) + n_special for s in range(0, n - capacity + stride, stride)]


def segment_signature(encoder: TempScaleEncoder, n_tokens: int, n_special: int, *, query: bool) -> tuple[Any, ...]:
    """What a text's vector depends on besides the text: how it is cut, and each segment's tau and padded shape."""
    config = encoder.config
    window = encoder.window
    lengths = segment_lengths(n_tokens, window, n_special, config.long_text, config.chunk_overlap)
    capacity = window - n_special
    cut: tuple[Any, ...] = ()
    if n_tokens - n_special > capacity:
        cut = (config.long_text, capacity, config.chunk_overlap if config.long_text == "chunk_mean" else 0)
    routes = tuple(
        (length, encoder.router.route(length, query=query).tau, padded_length(length, window)) for length in lengths
    )
    prompt = config.query_prompt if query else config.document_prompt
    return (config.model, config.dtype, config.normalize, prompt, cut, routes)


# -- results -------------------------------------------------------------------------------------------------------


@dataclass
class ConfigurationResult:
    """The scores of one configuration on one task.

    Attributes:
        configuration: What was evaluated.
        window: The window the encoder used (resolved, also when the config says None).
        metrics: Metric -> score: the task's metrics (BEIR), or the mean over lengths (synthetic).
        parts: Part label -> metrics of that part (one per length for synthetic tasks; `all` for BEIR).
        by_doc_length: Bin label -> metrics of the queries whose relevant document falls in that token-length bin.
        encoding: Encoding statistics: seconds, texts encoded and served from the cache, truncation.
    """

    configuration: EvalConfiguration
    window: int
    metrics: dict[str, float]
    parts: dict[str, MetricsResult]
    by_doc_length: dict[str, LengthBin]
    encoding: dict[str, Any]

    @property
    def name(self) -> str:
        """The configuration's name."""
        return self.configuration.name


@dataclass
class EvalResults:
    """All configurations of one task, evaluated side by side."""

    task: EvalTask
    model: str
    k_values: tuple[int, ...]
    results: list[ConfigurationResult]
    seconds: float = 0.0
    device: str = ""

    def by_name(self) -> dict[str, ConfigurationResult]:
        """Configuration name -> result."""
        return {r.name: r for r in self.results}

    def delta(self, result: ConfigurationResult, metric: str) -> float | None:
        """`metric` of `result` minus that of its baseline (None for a baseline)."""
        baseline = result.configuration.baseline
        if baseline is None:
            return None
        return result.metrics[metric] - self.by_name()[baseline].metrics[metric]

    def to_json_dict(self, *, per_query: bool = True) -> dict[str, Any]:
        """Every number and the exact configurations, as plain JSON types (scores are fractions in [0, 1]).

        Args:
            per_query: Include per-query metrics (the bulk of the document).
        """
        configurations = []
        for result in self.results:
            entry: dict[str, Any] = {
                "name": result.name,
                "baseline": result.configuration.baseline,
                "window": result.window,
                "long_text": result.configuration.config.long_text,
                "config": result.configuration.config.to_json_dict(),
                "metrics": _rounded(result.metrics),
                "delta_vs_baseline": None
                if result.configuration.baseline is None
                else {k: round(v, 6) for k in result.metrics if (v := self.delta(result, k)) is not None},
            }
            if self.task.synthetic:
                entry["by_length"] = {label: _rounded(part.mean) for label, part in result.parts.items()}
            entry["by_doc_length"] = {
                label: {"low": b.low, "high": None if math.isinf(b.high) else b.high, "queries": b.count}
                | {"metrics": _rounded(b.mean)}
                for label, b in result.by_doc_length.items()
            }
            entry["encoding"] = result.encoding
            if per_query:
                entry["per_query"] = {
                    label: {qid: _rounded(values) for qid, values in part.per_query.items()}
                    for label, part in result.parts.items()
                }
            configurations.append(entry)
        return {
            "format": "tempscale-rag eval v1",
            "task": {"name": self.task.name, "kind": self.task.kind, **self.task.info},
            "model": self.model,
            "device": self.device,
            "main_metric": self.task.main_metric,
            "k_values": list(self.k_values),
            "seconds": round(self.seconds, 2),
            "configurations": configurations,
        }


def _rounded(values: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in values.items()}


# -- the evaluator -------------------------------------------------------------------------------------------------


class RetrievalEvaluator:
    """Evaluates configurations of one loaded model side by side, sharing embeddings where exact.

    Args:
        encoder: The engine; its loaded model is shared by every configuration (its own temperatures are unused).
        k_values: Cutoffs of nDCG, recall and MRR.
        cache: Share embeddings across configurations (see `EmbeddingCache`); False encodes every text for every
            configuration (slower, same numbers: kept for checking).
        show_progress: Show a progress bar while embedding.
        length_bins: Token-length bin edges of the per-document-length breakdown.
    """

    def __init__(
        self,
        encoder: TempScaleEncoder,
        *,
        k_values: Sequence[int] = DEFAULT_K_VALUES,
        cache: bool = True,
        show_progress: bool = False,
        length_bins: Sequence[float] = DOC_LENGTH_BINS,
    ) -> None:
        self.encoder = encoder
        self.k_values = tuple(sorted(set(k_values) | {1, 10}))
        self.cache: EmbeddingCache | None = EmbeddingCache() if cache else None
        self.show_progress = show_progress
        self.length_bins = tuple(length_bins)
        self._n_special = encoder.count_tokens([""])[0]
        self._token_counts: dict[tuple[str, bool, str], int] = {}

    # -- public ----------------------------------------------------------------------------------------------------

    def evaluate(self, task: EvalTask, configurations: Sequence[EvalConfiguration]) -> EvalResults:
        """Evaluate every configuration on every part of `task`.

        Args:
            task: The task.
            configurations: From `build_configurations`; names must be unique and each baseline must be present.

        Returns:
            The results, in configuration order.

        Raises:
            ValueError: If names repeat or a baseline is missing.
        """
        names = [c.name for c in configurations]
        if len(set(names)) != len(names):
            raise ValueError("configuration names must be unique")
        missing = sorted({c.baseline for c in configurations if c.baseline is not None} - set(names))
        if missing:
            raise ValueError(f"baseline configuration {missing[0]!r} is not among the configurations")
        start = time.perf_counter()
        results = []
        for i, configuration in enumerate(configurations, start=1):
            logger.info("[%d/%d] %s on %s", i, len(configurations), configuration.name, task.name)
            encoder = self.encoder_for(configuration.config)
            results.append(self._evaluate(encoder, task, configuration))
        return EvalResults(
            task=task,
            model=self.encoder.model_name,
            k_values=self.k_values,
            results=results,
            seconds=time.perf_counter() - start,
            device=str(self.encoder.device),
        )

    def encoder_for(self, config: TempScaleConfig) -> TempScaleEncoder:
        """An encoder for `config` that shares this evaluator's loaded model when it can."""
        return self.encoder.with_config(**config.model_dump())

    def score(self, encoder: TempScaleEncoder, task: EvalTask, metric: str | None = None) -> float:
        """One number for a configuration on a task (the main metric by default); used by the dev-set search.

        Args:
            encoder: The configuration to score, as an encoder (e.g. from `TempScaleEncoder.with_config`).
            task: The labelled dev task.
            metric: Metric key; default: nDCG@10 for BEIR, acc@1 averaged over lengths for synthetic tasks.
        """
        result = self._evaluate(encoder, task, EvalConfiguration("dev", encoder.config))
        return result.metrics[metric or task.main_metric]

    # -- internals -------------------------------------------------------------------------------------------------

    def _evaluate(
        self, encoder: TempScaleEncoder, task: EvalTask, configuration: EvalConfiguration
    ) -> ConfigurationResult:
        stats = {"seconds": 0.0, "encoded": 0, "cached": 0, "segments": 0, "truncated_documents": 0}
        parts: dict[str, MetricsResult] = {}
        doc_lengths: dict[str, int] = {}
        per_query: dict[str, dict[str, float]] = {}
        qrels: dict[str, dict[str, int]] = {}
        for label, dataset in task.parts.items():
            started = time.perf_counter()
            doc_ids = list(dataset.corpus)
            doc_texts = [dataset.corpus[d] for d in doc_ids]
            doc_tokens = self._count(encoder, doc_texts, query=False)
            docs = self._embed(encoder, doc_texts, doc_tokens, query=False, stats=stats)
            query_ids = list(dataset.queries)
            query_texts = [dataset.queries[q] for q in query_ids]
            queries = self._embed(encoder, query_texts, self._count(encoder, query_texts, query=True), True, stats)
            stats["seconds"] += time.perf_counter() - started
            stats["truncated_documents"] += sum(n > encoder.window for n in doc_tokens)
            run = self._retrieve(encoder, doc_ids, doc_texts, doc_tokens, docs, query_ids, queries)
            parts[label] = evaluate_run(run, dataset.qrels, self.k_values)
            for doc_id, n in zip(doc_ids, doc_tokens, strict=True):
                doc_lengths[f"{label}\x00{doc_id}"] = n
            for qid, values in parts[label].per_query.items():
                per_query[f"{label}\x00{qid}"] = values
                qrels[f"{label}\x00{qid}"] = {f"{label}\x00{d}": r for d, r in dataset.qrels[qid].items()}
        if task.synthetic:
            keys = list(next(iter(parts.values())).mean)
            metrics = {k: math.fsum(p.mean[k] for p in parts.values()) / len(parts) for k in keys}
        else:
            metrics = dict(next(iter(parts.values())).mean)
        bins = breakdown_by_length(per_query, doc_lengths, qrels, self.length_bins)
        stats["seconds"] = round(float(stats["seconds"]), 2)
        return ConfigurationResult(
            configuration=configuration,
            window=encoder.window,
            metrics=metrics,
            parts=parts,
            by_doc_length={label: b for label, b in bins.items() if b.count},
            encoding=stats,
        )

    def _count(self, encoder: TempScaleEncoder, texts: list[str], query: bool) -> list[int]:
        prompt = encoder.config.query_prompt if query else encoder.config.document_prompt
        keys = [(text_key(t), query, prompt) for t in texts]
        missing = [i for i, k in enumerate(keys) if k not in self._token_counts]
        if missing:
            counts = encoder.count_tokens([texts[i] for i in missing], query=query)
            for i, n in zip(missing, counts, strict=True):
                self._token_counts[keys[i]] = n
        return [self._token_counts[k] for k in keys]

    def _embed(
        self, encoder: TempScaleEncoder, texts: list[str], tokens: list[int], query: bool, stats: dict[str, Any]
    ) -> npt.NDArray[np.float32]:
        if self.cache is None:
            with _quiet_truncation():
                vectors = encoder.encode(texts, query=query, show_progress=self.show_progress)
            stats["encoded"] += len(texts)
            stats["segments"] += encoder.last_report.segments
            return vectors
        keys = [
            (text_key(t), query, segment_signature(encoder, n, self._n_special, query=query))
            for t, n in zip(texts, tokens, strict=True)
        ]
        todo: dict[tuple[Any, ...], int] = {}
        for i, key in enumerate(keys):
            if key not in self.cache.vectors and key not in todo:
                todo[key] = i
        if todo:
            with _quiet_truncation():
                vectors = encoder.encode(
                    [texts[i] for i in todo.values()], query=query, show_progress=self.show_progress
                )
            stats["segments"] += encoder.last_report.segments
            for key, vector in zip(todo, vectors, strict=True):
                self.cache.vectors[key] = vector
        self.cache.misses += len(todo)
        self.cache.hits += len(keys) - len(todo)
        stats["encoded"] += len(todo)
        stats["cached"] += len(keys) - len(todo)
        return np.stack([self.cache.vectors[k] for k in keys]).astype(np.float32, copy=False)

    def _retrieve(
        self,
        encoder: TempScaleEncoder,
        doc_ids: list[str],
        doc_texts: list[str],
        doc_tokens: list[int],
        docs: npt.NDArray[np.float32],
        query_ids: list[str],
        queries: npt.NDArray[np.float32],
    ) -> dict[str, dict[str, float]]:
        """Exact inner-product search through the FAISS store, in a temporary folder."""
        from tempscale_rag.stores.base import ChunkRecord
        from tempscale_rag.stores.faiss_store import FaissStore

        records = []
        for doc_id, text, n, vector in zip(doc_ids, doc_texts, doc_tokens, docs, strict=True):
            seen = min(n, encoder.window)
            records.append(
                ChunkRecord.create(
                    text=text,
                    vector=vector,
                    source=doc_id,
                    position=0,
                    token_length=seen,
                    bucket=encoder.router.route(seen).bucket,
                )
            )
        k = min(len(doc_ids), max(RETRIEVAL_DEPTH, *self.k_values))
        with tempfile.TemporaryDirectory(prefix="tempscale-eval-") as folder:
            store = FaissStore(Path(folder) / "index", dimension=docs.shape[1], create=True, use_gpu=False)
            try:
                store.upsert(records)
                hits = store.search_many(queries, k=k)
            finally:
                store.close()
        return {qid: {hit.source: hit.score for hit in found} for qid, found in zip(query_ids, hits, strict=True)}


@contextlib.contextmanager
def _quiet_truncation() -> Iterator[None]:
    """Silence the encoder's per-call truncation warning: the evaluator reports truncation in its results."""
    encoder_logger = logging.getLogger("tempscale_rag.encoder")
    previous = encoder_logger.level
    encoder_logger.setLevel(max(previous, logging.ERROR))
    try:
        yield
    finally:
        encoder_logger.setLevel(previous)
