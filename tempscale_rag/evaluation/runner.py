"""Side-by-side retrieval evaluation of TempScale configurations, with embeddings shared wherever that is exact.

A run evaluates several configurations on one task. A configuration is a *pipeline* (how a document becomes what a
query is compared with) and a temperature setting (the tau = 1 baseline, global taus, bucketed taus, per-chunk-size
taus, calibration files, a schedule):

- chunked pipelines (`doc_score` one of `tempscale_rag.ranking.documents.DOC_SCORES`, the default): what the product
  does. Every document is chunked by `MultiSizeChunker` (the chunker of `tempscale-rag index`) at every size of a
  `ChunkingConfig`, each chunk is embedded at the tau its length routes to (each size is its own length bucket,
  `ChunkingConfig.buckets`), and documents are ranked exactly by `score_documents` over every chunk, as the exact
  FAISS store ranks them;
- the `vector` pipeline: one vector per document (the first window, `truncate`, or the mean of windows,
  `chunk_mean`), LongEmbed's and MTEB's protocol, ranked exactly by inner product (`score_documents` with one chunk
  per document).

Sharing embeddings: the encoder makes a text's vector depend only on the text, the window segments it is cut into
(`tempscale_rag.windows.cut_windows`, the encoder's own rule),
each segment's temperature and its padded shape (batches never mix shapes, see `tempscale_rag.encoder`). The
`EmbeddingCache` therefore keys a vector by the text and that *segment signature*, so a query that every
configuration routes to tau = 1 is encoded once for all of them, a chunk embedded at tau = 0.8 is shared by every
configuration that embeds that chunk text at 0.8 (whatever the document, length or aggregation), and a sweep costs
one pass per distinct (text, tau). Passkey and needle chunks repeat heavily across documents and lengths: each
distinct chunk text is embedded once per tau.

Cost: every configuration reports its indexing cost beside its quality (`ConfigurationResult.cost`): tokens embedded
per source token, vectors stored per 1,000 source tokens and embedding seconds, from the measured time of the calls
that embedded its texts (see `ConfigurationResult`).

Tasks: a BEIR folder is one retrieval task; LongEmbed's passkey and needle are one task per target length (100
candidates and 50 queries each), scored per length and averaged over lengths, as LongEmbed does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import (
    DEFAULT_BUCKETS,
    DEFAULT_DOC_SCORE,
    Bucket,
    ChunkingConfig,
    LexicalSettings,
    LongTextPolicy,
    TempScaleConfig,
    chunk_query_temperature,
    chunked_index_config,
    parse_buckets,
    read_calibration,
)
from tempscale_rag.encoder import TempScaleEncoder, padded_length
from tempscale_rag.evaluation.chunkpool import MIN_POOL_CHARACTERS, ChunkPool, default_workers
from tempscale_rag.evaluation.datasets import RetrievalDataset, load_beir
from tempscale_rag.evaluation.metrics import LengthBin, MetricsResult, breakdown_by_length, evaluate_run
from tempscale_rag.evaluation.synthetic import LONGEMBED_LENGTHS, make_needle, make_passkey
from tempscale_rag.ingest.chunking import MultiSizeChunker
from tempscale_rag.models import special_tokens
from tempscale_rag.ranking.documents import DOC_SCORES, ChunkGroups, DocumentScoring, group_vectors, score_documents
from tempscale_rag.ranking.hybrid import Fusion, Retrieval, check_retrieval, fuse_ranked
from tempscale_rag.ranking.lexical import LexicalAnalyzer, PivotBM25
from tempscale_rag.windows import TokenCounter, cut_windows

logger = logging.getLogger(__name__)

TaskKind = Literal["beir", "passkey", "needle"]
QueryMode = Literal["same", "plain", "both"]

DEFAULT_K_VALUES: tuple[int, ...] = (1, 10, 100)
"""Cutoffs of nDCG, recall and MRR; the keys `ndcg@1`, `ndcg@10`, `recall@10` always exist."""

DOC_LENGTH_BINS: tuple[float, ...] = (0, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, math.inf)
"""Edges (tokens) of the per-document-length breakdown of BEIR tasks."""

EVAL_RETRIEVALS: tuple[str, ...] = ("lexical", "dense", "hybrid")
"""The retrieval rows of a default evaluation: BM25 alone, the dense rows, the same rows fused with BM25."""

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

VECTOR = "vector"
"""The one-vector-per-document pipeline (LongEmbed's protocol) on the `--doc-score` axis."""

EVAL_DOC_SCORES: tuple[str, ...] = (*DOC_SCORES, VECTOR)
"""Every value of the `doc_score` axis: the chunk aggregations of `tempscale_rag.ranking.documents`, then `vector`."""


def check_eval_doc_score(name: str) -> str:
    """Validate a `doc_score` axis value.

    Raises:
        ValueError: If `name` is not one of `EVAL_DOC_SCORES`.
    """
    if name not in EVAL_DOC_SCORES:
        raise ValueError(f"unknown document score {name!r}; choose one of {', '.join(EVAL_DOC_SCORES)}")
    return name


@dataclass(frozen=True)
class EvalConfiguration:
    """One configuration to evaluate: a pipeline and a temperature setting.

    Attributes:
        name: Readable name, unique within a run (`tau=0.8`, `taus 64:1,128:1,256:0.8`, `default buckets`, ...).
        config: The engine configuration: model, window and the temperatures of documents (or chunks) and queries.
        baseline: Name of the tau = 1 configuration with the same pipeline and window, or None for a baseline
            itself; deltas are reported against it.
        doc_score: `vector` (one vector per document), or how a document is scored from its chunks (`max`, ...).
        chunking: Chunk sizes and overlap of a chunked pipeline (None for `vector`).
        size_taus: The chunk temperatures are `chunking`'s per-size taus: the evaluator sets `config.buckets` to
            `chunking.buckets(n_special)` for the model's special-token count (see `resolved`).
        setting: The temperature setting's part of the name (`tau=0.8`, ...), shared across pipelines; default: the
            name.
    """

    name: str
    config: TempScaleConfig
    baseline: str | None = None
    doc_score: str = VECTOR
    chunking: ChunkingConfig | None = None
    size_taus: bool = False
    setting: str = ""

    def __post_init__(self) -> None:
        check_eval_doc_score(self.doc_score)
        if (self.doc_score == VECTOR) != (self.chunking is None):
            raise ValueError("a chunked configuration needs a ChunkingConfig, and `vector` takes none")
        if self.size_taus and self.chunking is None:
            raise ValueError("size_taus needs a ChunkingConfig")

    @property
    def chunked(self) -> bool:
        """Whether documents are ranked from their chunks (every `doc_score` but `vector`)."""
        return self.chunking is not None

    def resolved(self, n_special: int) -> EvalConfiguration:
        """This configuration with per-size taus turned into engine buckets (a no-op without `size_taus`).

        Args:
            n_special: Tokens the engine adds to every document (`TempScaleEncoder.count_tokens([""])[0]`).
        """
        if not self.size_taus or self.chunking is None:
            return self
        # The rule `Index` builds a chunked index's engine config with: a bucket per size, one tau for queries.
        config = chunked_index_config(self.config, self.chunking, n_special)
        return dataclasses.replace(self, config=config)


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
    doc_scores: Sequence[str] = (DEFAULT_DOC_SCORE,),
    chunkings: Sequence[str | ChunkingConfig] | None = None,
    overlap_tokens: int | None = None,
    retrievals: Sequence[str] = EVAL_RETRIEVALS,
    lexical_weights: Sequence[float] | None = None,
) -> list[EvalConfiguration]:
    """The configurations of one evaluation: the product of the temperature settings with the pipeline axes.

    Pipelines: one per (window, doc score, chunk sizes) for chunked doc scores, one per (window, long-text policy)
    for `vector`. Each pipeline has a tau = 1 baseline (every chunk size at tau 1), then one configuration per global
    tau, per-size tau spec, bucket spec, calibration file and schedule. With none of those given, a chunked
    pipeline is evaluated at its chunking's per-size taus and `vector` at the package's default buckets. A row name
    carries the pipeline's axis values only where an axis has several values (`tau=0.8 max chunks 64,128,256`).

    Args:
        base: Fields shared by every configuration (model, device, dtype, batching, chunk overlap, prompts).
        temperatures: Global taus; tau = 1 is the baseline and is always included.
        buckets: Bucket specs (`"0-128:1.0,128-256:0.9,256-:0.8"`, or `"default"`) or bucket lists.
        calibrations: Calibration files from `tempscale-rag calibrate`.
        schedules: Continuous schedules (`"longembed"`).
        long_text: Long-text policies of the `vector` pipeline (an axis).
        max_seq_lengths: Windows to compare (an axis); None is the model's full window.
        queries: For global taus: `same` encodes queries at tau too (the paper), `plain` keeps queries at tau = 1
            (documents-only TempScale), `both` evaluates both. For per-size taus: `same` encodes queries at
            `base.query_temperature`, else `DEFAULT_QUERY_TEMPERATURE` (what `index`/`search` do), `plain` at
            tau = 1.
        doc_scores: Pipelines (an axis): `vector` and/or chunk aggregations (`max`, `mean`, `hybrid`, `topm`,
            `softmax`).
        chunkings: Chunk settings of the chunked pipelines (an axis): `ChunkingConfig`s or specs such as
            `"64,128,256"` or `"64:1,128:1,256:0.8"` (per-size taus); default: `ChunkingConfig()`, what `index`
            uses. Specs with the same sizes share one pipeline, each tau spec being one row.
        overlap_tokens: Chunk overlap of the specs given as strings (None: the per-size default).
        retrievals: The retrieval channels of the chunked pipelines, on the same chunks: `lexical` (one `BM25` row:
            BM25 over the lexical chunks, no embedding), `dense` (every temperature row) and `hybrid` (every
            temperature row again, fused with BM25, named `hybrid ...`, against `hybrid tau=1`).
        lexical_weights: BM25 weights of the hybrid rows (an axis, rows `hybrid w=W ...` with several); None: each
            chunking's own `lexical_weight`.

    Returns:
        The configurations, baselines first within each pipeline.

    Raises:
        ValueError: For an invalid tau, bucket spec, chunk spec, doc score, calibration file or schedule, or an
            empty axis.
    """
    if queries not in ("same", "plain", "both"):
        raise ValueError(f"queries must be 'same', 'plain' or 'both', got {queries!r}")
    policies = list(dict.fromkeys(long_text))
    windows = list(dict.fromkeys(max_seq_lengths))
    scores = [check_eval_doc_score(s) for s in dict.fromkeys(doc_scores)]
    channels = [check_retrieval(r) for r in dict.fromkeys(retrievals)]
    weights = None if lexical_weights is None else list(dict.fromkeys(map(_check_weight, lexical_weights)))
    if not policies or not windows or not scores or not channels:
        raise ValueError("the long-text, window, doc-score and retrieval axes need at least one value each")
    chunk_groups = _chunk_groups(chunkings, overlap_tokens) if any(s != VECTOR for s in scores) else {}
    fields = base.model_dump()
    query_tau = chunk_query_temperature(base)  # of the per-size rows, as `index` gives it; other rows set their own
    for name in ("temperature", "schedule", "query_temperature", "calibration_file", "buckets"):
        fields.pop(name, None)
    temperature_rows = _TemperatureRows(
        taus=list(dict.fromkeys(float(t) for t in temperatures)),
        bucket_sets=_bucket_sets(buckets),
        calibrations=list(calibrations),
        schedules=list(schedules),
        queries=queries,
    )

    out: list[EvalConfiguration] = []
    for window in windows:
        for doc_score in scores:
            parts: list[str] = [doc_score] if len(scores) > 1 else []
            if len(windows) > 1:
                parts.append(f"@{window if window is not None else 'full'}")
            if doc_score == VECTOR:
                for policy in policies:
                    suffix = "".join(f" {p}" for p in [*parts, *([policy] if len(policies) > 1 else [])])
                    common = {**fields, "max_seq_length": window, "long_text": policy}
                    baseline = f"tau=1{suffix}"
                    out.append(EvalConfiguration(baseline, _config(common, temperature=1.0), setting="tau=1"))
                    for name, config in temperature_rows(common, suffix, None):
                        out.append(EvalConfiguration(name, config, baseline, setting=name.removesuffix(suffix)))
                continue
            dense = _chunked_configurations(
                {**fields, "max_seq_length": window}, doc_score, parts, chunk_groups, temperature_rows, query_tau
            )
            out.extend(_with_retrievals(dense, channels, weights))
    return _named_once(out)


def _named_once(configurations: list[EvalConfiguration]) -> list[EvalConfiguration]:
    """`configurations`, if no two share a name (else ValueError)."""
    names = [c.name for c in configurations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two configurations would share the name {duplicates[0]!r}; give each one only once")
    return configurations


def _bucket_sets(buckets: Sequence[str | Sequence[Bucket]]) -> list[tuple[str, list[Bucket]]]:
    """(row label, buckets) of each bucket spec (`"default"`, a spec string or a bucket list)."""
    out: list[tuple[str, list[Bucket]]] = []
    for spec in buckets:
        if isinstance(spec, str):
            if spec.strip().lower() == "default":
                out.append(("default buckets", list(DEFAULT_BUCKETS)))
            else:
                parsed = parse_buckets(spec)
                out.append((f"buckets {format_buckets(parsed)}", parsed))
        else:
            out.append((f"buckets {format_buckets(spec)}", list(spec)))
    return out


@dataclass
class _TemperatureRows:
    """The temperature settings of an evaluation (every row but the baseline and the per-size taus)."""

    taus: list[float]
    bucket_sets: list[tuple[str, list[Bucket]]]
    calibrations: list[str | Path]
    schedules: list[str]
    queries: QueryMode
    calibration_data: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.calibration_data = {str(path): read_calibration(path) for path in self.calibrations}

    @property
    def explicit(self) -> bool:
        """Whether any temperature setting was given (else each pipeline gets its default rows)."""
        return bool(self.taus or self.bucket_sets or self.calibrations or self.schedules)

    def __call__(
        self, common: dict[str, Any], suffix: str, chunking: ChunkingConfig | None
    ) -> list[tuple[str, TempScaleConfig]]:
        """(name, config) of every setting for one pipeline (`common` fields, names ending in `suffix`)."""
        rows: list[tuple[str, TempScaleConfig]] = []
        for tau in self.taus:
            if tau == 1.0:
                continue
            if self.queries in ("same", "both"):
                rows.append((f"tau={tau:g}{suffix}", _config(common, temperature=tau)))
            if self.queries in ("plain", "both"):
                rows.append((f"tau={tau:g} docs-only{suffix}", _config(common, temperature=tau, query_temperature=1.0)))
        # With no setting given, `vector` is compared with the default buckets (a chunked pipeline with its taus).
        defaults = [("default buckets", list(DEFAULT_BUCKETS))] if not self.explicit and chunking is None else []
        for label, bucket_list in self.bucket_sets or defaults:
            rows.append((f"{label}{suffix}", _config(common, buckets=bucket_list)))
        for path in self.calibrations:
            rows.append((f"calibrated {Path(path).stem}{suffix}", self._calibrated(path, common, chunking)))
        for schedule in self.schedules:
            rows.append((f"schedule {schedule}{suffix}", _config(common, schedule=schedule)))
        return rows

    def _calibrated(self, path: str | Path, common: dict[str, Any], chunking: ChunkingConfig | None) -> TempScaleConfig:
        data = self.calibration_data[str(path)]
        config = TempScaleConfig.with_calibration(path, **common)
        window = common.get("max_seq_length")
        made_for = data.get("settings", {}).get("max_seq_length")
        if made_for is not None and window is not None and made_for != window:
            logger.warning("calibration %s was made for window %s, used here at %s", path, made_for, window)
        made_sizes = (data.get("chunking") or {}).get("sizes")
        if chunking is not None and made_sizes is not None and tuple(made_sizes) != chunking.sizes:
            logger.warning(
                "calibration %s was made for chunk sizes %s, used here with %s",
                path,
                ",".join(map(str, made_sizes)),
                ",".join(map(str, chunking.sizes)),
            )
        return config


def _chunked_configurations(
    common: dict[str, Any],
    doc_score: str,
    parts: list[str],
    chunk_groups: dict[tuple[tuple[int, ...], int | None], list[ChunkingConfig]],
    temperature_rows: _TemperatureRows,
    query_tau: float,
) -> list[EvalConfiguration]:
    """The configurations of the chunked pipelines of one (window, doc score).

    Per chunk-size group: its tau = 1 baseline, its per-size taus, then the temperature settings.
    """
    out: list[EvalConfiguration] = []
    queries = temperature_rows.queries
    for (sizes, overlap), members in chunk_groups.items():
        label = [f"chunks {','.join(map(str, sizes))}"] if len(chunk_groups) > 1 else []
        if label and overlap is not None and len({k[0] for k in chunk_groups}) < len(chunk_groups):
            label[0] += f" overlap {overlap}"
        suffix = "".join(f" {p}" for p in [*parts[:1], *label, *parts[1:]])
        first = members[0].model_copy(update={"temperatures": None, "doc_score": _chunk_doc_score(doc_score)})
        baseline = f"tau=1{suffix}"
        out.append(
            EvalConfiguration(baseline, _config(common, temperature=1.0), None, doc_score, first, setting="tau=1")
        )
        size_tau_specs = [m for m in members if m.temperatures is not None]
        if not temperature_rows.explicit and not size_tau_specs:
            size_tau_specs = [first]
        for chunking in dict.fromkeys(
            m.model_copy(update={"temperatures": m.taus, "doc_score": first.doc_score}) for m in size_tau_specs
        ):
            if all(t == 1.0 for t in chunking.taus):
                continue  # the baseline already
            # `same` is what `index` and `search` do with per-size taus: queries at `query_temperature`,
            # `DEFAULT_QUERY_TEMPERATURE` unless set (a query is not a chunk); `plain` keeps them at tau = 1, a
            # separate row only when that differs.
            rows = [(f"taus {chunking.spec()}", query_tau)] if queries in ("same", "both") else []
            if queries in ("plain", "both") and (not rows or query_tau != 1.0):
                rows.append((f"taus {chunking.spec()} docs-only", 1.0))
            for setting, row_query_tau in rows:
                config = _config(common, query_temperature=row_query_tau)
                out.append(
                    EvalConfiguration(f"{setting}{suffix}", config, baseline, doc_score, chunking, True, setting)
                )
        for name, config in temperature_rows(common, suffix, first):
            out.append(EvalConfiguration(name, config, baseline, doc_score, first, setting=name.removesuffix(suffix)))
    return out


def _with_retrievals(
    dense: list[EvalConfiguration], channels: list[Retrieval], weights: list[float] | None = None
) -> list[EvalConfiguration]:
    """The rows of each retrieval channel over one doc score's dense rows (see `build_configurations`)."""
    out: list[EvalConfiguration] = []
    dense = [dataclasses.replace(c, chunking=_retrieving(c.chunking, "dense")) for c in dense]
    if "lexical" in channels:
        for baseline in (c for c in dense if c.baseline is None):
            suffix = baseline.name.removeprefix("tau=1")
            chunking = _retrieving(baseline.chunking, "lexical")
            out.append(dataclasses.replace(baseline, name=f"BM25{suffix}", chunking=chunking, setting="BM25"))
    if "dense" in channels:
        out.extend(dense)
    if "hybrid" in channels:
        listed: list[float | None] = list(weights) if weights else [None]
        for weight in listed:
            label = "hybrid" if weight is None or len(listed) < 2 else f"hybrid w={weight:g}"
            for c in dense:
                chunking = _retrieving(c.chunking, "hybrid")
                if weight is not None and chunking is not None:
                    chunking = chunking.model_copy(update={"lexical_weight": weight})
                out.append(
                    dataclasses.replace(
                        c,
                        name=f"{label} {c.name}",
                        chunking=chunking,
                        baseline=None if c.baseline is None else f"{label} {c.baseline}",
                        setting=f"{label} {c.setting or c.name}",
                    )
                )
    return out


def _check_weight(weight: float) -> float:
    value = float(weight)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a lexical weight must be a finite number >= 0, got {weight!r}")
    return value


def _retrieving(chunking: ChunkingConfig | None, retrieval: Retrieval) -> ChunkingConfig | None:
    return None if chunking is None else chunking.model_copy(update={"retrieval": retrieval})


def _chunk_doc_score(doc_score: str) -> str:
    """The `ChunkingConfig.doc_score` recorded with a chunked configuration."""
    return doc_score if doc_score in DOC_SCORES else DEFAULT_DOC_SCORE


def _chunk_groups(
    chunkings: Sequence[str | ChunkingConfig] | None, overlap_tokens: int | None
) -> dict[tuple[tuple[int, ...], int | None], list[ChunkingConfig]]:
    """Chunk settings grouped by (sizes, overlap): one pipeline each, in the order first given."""
    parsed: list[ChunkingConfig] = []
    for spec in chunkings if chunkings else [ChunkingConfig(overlap_tokens=overlap_tokens)]:
        if isinstance(spec, ChunkingConfig):
            parsed.append(spec)
            continue
        try:
            parsed.append(ChunkingConfig.parse(spec, overlap_tokens=overlap_tokens))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError; keep the message to one line
            raise ValueError(f"invalid chunk sizes {spec!r}: {exc}".replace("\n", " ")) from None
    groups: dict[tuple[tuple[int, ...], int | None], list[ChunkingConfig]] = {}
    for chunking in parsed:
        groups.setdefault((chunking.sizes, chunking.overlap_tokens), []).append(chunking)
    return groups


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
        vectors: Key -> vector.
        hits: Vectors served from the cache.
        misses: Vectors that had to be encoded.
    """

    vectors: dict[tuple[Any, ...], npt.NDArray[np.float32]] = field(default_factory=dict)
    seconds: dict[tuple[Any, ...], float] = field(default_factory=dict)
    """Per key: its share of the measured time of the call that embedded it (by its tokens)."""
    hits: int = 0
    misses: int = 0

    def __len__(self) -> int:
        return len(self.vectors)


def segment_signature(encoder: TempScaleEncoder, n_tokens: int, specials: int, *, query: bool) -> tuple[Any, ...]:
    """What a text's vector depends on besides the text: how it is cut, and each segment's tau and padded shape.

    Args:
        encoder: The engine that embeds the text.
        n_tokens: The text's tokens as `encoder.count_tokens` counts them (prompt and special tokens included).
        specials: The model's special tokens per input (no prompt).
        query: Whether the text is embedded as a query.
    """
    return _signatures(encoder, [n_tokens], specials, query=query)[0]


def _segments(encoder: TempScaleEncoder, tokens: Sequence[int], specials: int) -> tuple[npt.NDArray[np.int64], ...]:
    """Per text, the lengths (special tokens included) of the windows the encoder cuts it into (`cut_windows`)."""
    config = encoder.config
    if not len(tokens):
        return ()
    content = np.asarray(tokens, dtype=np.int64) - specials
    windows = cut_windows(content, encoder.window - specials, config.long_text, config.chunk_overlap)
    return tuple(np.split(windows.body + specials, windows.first[1:]))


def _signatures(
    encoder: TempScaleEncoder, tokens: Sequence[int], specials: int, *, query: bool
) -> list[tuple[Any, ...]]:
    """`segment_signature` of many texts (routes are looked up once per length)."""
    config = encoder.config
    window = encoder.window
    capacity = window - specials
    overlap = config.chunk_overlap if config.long_text == "chunk_mean" else 0
    prompt = config.query_prompt if query else config.document_prompt
    head = (config.model, config.dtype, config.normalize, prompt)
    routes: dict[int, tuple[Any, ...]] = {}

    def route(length: int) -> tuple[Any, ...]:
        if length not in routes:
            routes[length] = (length, encoder.router.route(length, query=query).tau, padded_length(length, window))
        return routes[length]

    out = []
    for n, lengths in zip(tokens, _segments(encoder, tokens, specials), strict=True):
        cut: tuple[Any, ...] = (config.long_text, capacity, overlap) if n - specials > capacity else ()
        out.append((*head, cut, tuple(route(length) for length in lengths.tolist())))
    return out


# -- results -------------------------------------------------------------------------------------------------------


@dataclass
class ConfigurationResult:
    """The scores of one configuration on one task, with what it cost to index.

    Attributes:
        configuration: What was evaluated (per-size taus resolved into `config.buckets`).
        window: The window the encoder used (resolved, also when the config says None).
        metrics: Metric -> score: the task's metrics (BEIR), or the mean over lengths (synthetic).
        parts: Part label -> metrics of that part (one per length for synthetic tasks; `all` for BEIR).
        by_doc_length: Bin label -> metrics of the queries whose relevant document falls in that token-length bin.
        encoding: Encoding statistics: seconds, texts encoded and served from the cache, truncation.
        cost: Indexing cost of the configuration's documents, summed over the task's parts:
            `source_tokens` (content tokens of the documents), `tokens_embedded` (tokens the model runs over to
            index them, special tokens included, every chunk or window counted as an index embeds it),
            `tokens_per_source_token`, `vectors_stored` (chunk vectors, plus one mean vector per (document, chunk
            size) group for `mean` and `hybrid`; one per document for `vector`), `vectors_per_1k_source_tokens`,
            `embedding_seconds` (every embedded text's share, by tokens, of the measured time of the call that
            embedded it, so a configuration served from the cache still reports what embedding it costs; texts
            repeated across documents are counted each time, as an index embeds them), `embedding_seconds_measured`
            (wall time of the document embedding calls this configuration made in this run; 0 when every vector
            came from the cache), `texts_embedded` / `texts_from_cache` (distinct document texts embedded in this
            configuration's pass / served from the cache).
        pipeline: `doc_score`, `chunk_tokens` (sizes, None for `vector`), `chunk_overlap_tokens` (per size),
            `chunk_temperatures` (the tau a full chunk of each size gets), `chunks` (chunk count).
    """

    configuration: EvalConfiguration
    window: int
    metrics: dict[str, float]
    parts: dict[str, MetricsResult]
    by_doc_length: dict[str, LengthBin]
    encoding: dict[str, Any]
    cost: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)

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

        Each configuration carries `doc_score`, `chunk_tokens`, `chunk_temperatures`, `chunk_overlap_tokens` and
        `chunking` (null for `vector`), its engine `config`, `metrics`, `delta_vs_baseline`, `cost` (see
        `ConfigurationResult.cost`) and `encoding`.

        Args:
            per_query: Include per-query metrics (the bulk of the document).
        """
        configurations = []
        for result in self.results:
            chunking = result.configuration.chunking
            entry: dict[str, Any] = {
                "name": result.name,
                "baseline": result.configuration.baseline,
                **result.pipeline,
                "window": result.window,
                "long_text": None if result.configuration.chunked else result.configuration.config.long_text,
                "chunking": None if chunking is None else chunking.to_json_dict(),
                "config": result.configuration.config.to_json_dict(),
                "metrics": _rounded(result.metrics),
                "delta_vs_baseline": None
                if result.configuration.baseline is None
                else {k: round(v, 6) for k in result.metrics if (v := self.delta(result, k)) is not None},
                "cost": result.cost,
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
            "format": "tempscale-rag eval v2",
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

SCORE_BLOCK_ELEMENTS = 1 << 22
"""Query-by-chunk cosines scored at once (4M floats, 16 MB): queries are ranked in blocks of this many cells."""


@dataclass
class _Embedded:
    """Vectors of a list of texts, and what embedding them cost."""

    vectors: npt.NDArray[np.float32]
    seconds: npt.NDArray[np.float64]
    """Per text: its share of the measured time of the call that embedded it."""
    tokens: npt.NDArray[np.int64]
    """Per text: tokens the model ran over (every segment, special tokens included)."""


@dataclass
class _ChunkedPart:
    """One part's documents chunked at every size: flat chunk lists in document order."""

    texts: list[str]
    keys: list[str]
    sizes: list[int]
    documents: list[str]
    groups: ChunkGroups


class RetrievalEvaluator:
    """Evaluates configurations of one loaded model side by side, sharing embeddings where exact.

    Args:
        encoder: The engine; its loaded model is shared by every configuration (its own temperatures are unused).
        k_values: Cutoffs of nDCG, recall and MRR.
        cache: Share embeddings across configurations (see `EmbeddingCache`); False encodes every text for every
            configuration (slower, same numbers: kept for checking).
        show_progress: Show a progress bar while embedding.
        length_bins: Token-length bin edges of the per-document-length breakdown.
        chunk_workers: Worker processes that split large corpora into chunks (`ChunkPool`, same chunks); None: one
            per core but one on hosts with 4+ cores, else none; 0: split in this process.
    """

    def __init__(
        self,
        encoder: TempScaleEncoder,
        *,
        k_values: Sequence[int] = DEFAULT_K_VALUES,
        cache: bool = True,
        show_progress: bool = False,
        length_bins: Sequence[float] = DOC_LENGTH_BINS,
        chunk_workers: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.k_values = tuple(sorted(set(k_values) | {1, 10}))
        self.cache: EmbeddingCache | None = EmbeddingCache() if cache else None
        self.show_progress = show_progress
        self.length_bins = tuple(length_bins)
        self._n_special = encoder.count_tokens([""])[0]
        # The model's own special tokens (no prompt): what the encoder's window rule subtracts from the window.
        self._specials = special_tokens(encoder.model.tokenizer).count
        self._token_counts: dict[tuple[str, bool, str], int] = {}
        self._chunkers: dict[tuple[Any, ...], MultiSizeChunker] = {}
        self._chunked: dict[tuple[Any, ...], _ChunkedPart] = {}
        self._splits: dict[tuple[Any, ...], tuple[list[list[str]], list[list[str]]]] = {}
        self._lexical_runs: dict[tuple[Any, ...], dict[str, LexicalLists]] = {}
        if chunk_workers is not None and (isinstance(chunk_workers, bool) or chunk_workers < 0):
            raise ValueError(f"chunk_workers must be None or an integer >= 0, got {chunk_workers!r}")
        self.chunk_workers = chunk_workers
        self._pool_characters = MIN_POOL_CHARACTERS
        self.texts_encoded = 0
        """Texts passed to the model so far (every configuration, documents, chunks and queries)."""

    # -- public ----------------------------------------------------------------------------------------------------

    def evaluate(self, task: EvalTask, configurations: Sequence[EvalConfiguration]) -> EvalResults:
        """Evaluate every configuration on every part of `task`.

        Args:
            task: The task.
            configurations: From `build_configurations`; names must be unique and each baseline must be present.

        Returns:
            The results, in configuration order.

        Raises:
            ValueError: If names repeat, a baseline is missing, or a chunk size does not fit the window.
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
            configuration = configuration.resolved(self._n_special)
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

    def score(
        self,
        encoder: TempScaleEncoder,
        task: EvalTask,
        metric: str | None = None,
        *,
        doc_score: str = VECTOR,
        chunking: ChunkingConfig | None = None,
    ) -> float:
        """One number for a configuration on a task (the main metric by default); used by the dev-set search.

        Args:
            encoder: The configuration to score, as an encoder (e.g. from `TempScaleEncoder.with_config`); its
                temperatures apply to documents (or chunks) and queries.
            task: The labelled dev task.
            metric: Metric key; default: nDCG@10 for BEIR, acc@1 averaged over lengths for synthetic tasks.
            doc_score: The pipeline: `vector` (one vector per document) or a chunk aggregation.
            chunking: Chunk sizes and overlap of a chunked pipeline.
        """
        # Temperatures are chosen on the dense channel alone: BM25 does not depend on them.
        dense = None if chunking is None else chunking.model_copy(update={"retrieval": "dense"})
        configuration = EvalConfiguration("dev", encoder.config, None, doc_score, dense)
        result = self._evaluate(encoder, task, configuration)
        return result.metrics[metric or task.main_metric]

    # -- internals -------------------------------------------------------------------------------------------------

    def _evaluate(
        self, encoder: TempScaleEncoder, task: EvalTask, configuration: EvalConfiguration
    ) -> ConfigurationResult:
        stats: dict[str, Any] = {"seconds": 0.0, "encoded": 0, "cached": 0, "segments": 0, "truncated_documents": 0}
        stats["encode_seconds"] = 0.0
        cost = {"source_tokens": 0, "tokens_embedded": 0, "vectors_stored": 0, "embedding_seconds": 0.0}
        cost |= {"embedding_seconds_measured": 0.0, "texts_embedded": 0, "texts_from_cache": 0}
        parts: dict[str, MetricsResult] = {}
        doc_lengths: dict[str, int] = {}
        per_query: dict[str, dict[str, float]] = {}
        qrels: dict[str, dict[str, int]] = {}
        n_chunks = 0
        for label, dataset in task.parts.items():
            started = time.perf_counter()
            doc_ids = list(dataset.corpus)
            doc_texts = [dataset.corpus[d] for d in doc_ids]
            doc_tokens = self._count(encoder, doc_texts, query=False)
            before = dict(stats)
            retrieval = configuration.chunking.retrieval if configuration.chunking is not None else "dense"
            if configuration.chunking is not None:
                chunked = self._chunk(encoder, configuration.chunking, label, doc_ids, doc_texts)
                chunk_tokens = self._count(encoder, chunked.texts, query=False, keys=chunked.keys)
                if retrieval == "lexical":  # BM25 alone: nothing is embedded
                    docs = _Embedded(np.zeros((0, 0), np.float32), np.zeros(0), np.zeros(0, np.int64))
                else:
                    docs = self._embed(encoder, chunked.texts, chunk_tokens, False, stats, chunked.keys)
                    stats["truncated_documents"] += sum(n > encoder.window for n in chunk_tokens)
                n_chunks += len(chunked.texts)
            else:
                docs = self._embed(encoder, doc_texts, doc_tokens, False, stats)
                stats["truncated_documents"] += sum(n > encoder.window for n in doc_tokens)
            cost["embedding_seconds_measured"] += stats["encode_seconds"] - before["encode_seconds"]
            cost["texts_embedded"] += stats["encoded"] - before["encoded"]
            cost["texts_from_cache"] += stats["cached"] - before["cached"]
            cost["source_tokens"] += sum(n - self._n_special for n in doc_tokens)
            cost["tokens_embedded"] += int(docs.tokens.sum())
            cost["embedding_seconds"] += float(docs.seconds.sum())
            query_ids = list(dataset.queries)
            query_texts = [dataset.queries[q] for q in query_ids]
            if retrieval != "lexical":
                query_tokens = self._count(encoder, query_texts, query=True)
                queries = self._embed(encoder, query_texts, query_tokens, True, stats)
            stats["seconds"] = before["seconds"] + time.perf_counter() - started
            if configuration.chunking is not None:
                scoring = DocumentScoring(configuration.doc_score)  # type: ignore[arg-type]
                if retrieval != "lexical":
                    cost["vectors_stored"] += len(chunked.texts) + (
                        chunked.groups.n_groups if scoring.needs_group_vectors else 0
                    )
                    run = self._rank_documents(chunked.groups, docs.vectors, scoring, query_ids, queries.vectors)
                else:
                    run = {qid: {} for qid in query_ids}
                if retrieval != "dense":
                    lexical = self._lexical_run(configuration.chunking, chunked, label, doc_ids, query_ids, query_texts)
                    run = fuse_runs(run, lexical, configuration.chunking)
            else:
                cost["vectors_stored"] += len(doc_ids)
                # One vector per document: `max` over a single chunk is the exact inner-product ranking.
                groups = ChunkGroups.build(doc_ids)
                run = self._rank_documents(groups, docs.vectors, DocumentScoring("max"), query_ids, queries.vectors)
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
        stats["encode_seconds"] = round(float(stats["encode_seconds"]), 3)
        source = max(1, cost["source_tokens"])
        cost["tokens_per_source_token"] = round(cost["tokens_embedded"] / source, 4)
        cost["vectors_per_1k_source_tokens"] = round(1000 * cost["vectors_stored"] / source, 4)
        cost["embedding_seconds"] = round(cost["embedding_seconds"], 3)
        cost["embedding_seconds_measured"] = round(cost["embedding_seconds_measured"], 3)
        return ConfigurationResult(
            configuration=configuration,
            window=encoder.window,
            metrics=metrics,
            parts=parts,
            by_doc_length={label: b for label, b in bins.items() if b.count},
            encoding=stats,
            cost=cost,
            pipeline=self._pipeline(encoder, configuration, n_chunks),
        )

    def _pipeline(self, encoder: TempScaleEncoder, configuration: EvalConfiguration, n_chunks: int) -> dict[str, Any]:
        chunking = configuration.chunking
        if chunking is None:
            return {
                "retrieval": "dense",
                "doc_score": VECTOR,
                "chunk_tokens": None,
                "chunk_overlap_tokens": None,
                "chunk_temperatures": None,
                "chunks": None,
            }
        return {
            "retrieval": chunking.retrieval,
            "doc_score": configuration.doc_score,
            "chunk_tokens": list(chunking.sizes),
            "chunk_overlap_tokens": [chunking.overlap(size) for size in chunking.sizes],
            # The tau a full chunk of each size is embedded at, whatever set it (size taus, global, buckets...).
            "chunk_temperatures": [encoder.router.route(size + self._n_special).tau for size in chunking.sizes],
            "chunks": n_chunks,
        }

    def _chunk(
        self, encoder: TempScaleEncoder, chunking: ChunkingConfig, label: str, doc_ids: list[str], texts: list[str]
    ) -> _ChunkedPart:
        """Every document of a part chunked as `index` chunks it, cached per (window, sizes, overlap, part).

        `MultiSizeChunker` splits each size independently and returns a document's chunks size by size, smallest
        first; each size is therefore split once per part with a one-size `MultiSizeChunker` and cached on its own,
        so configurations that share a size (`256` and `64,128,256`) split it once. Chunk order is the chunker's.
        """
        shape = (encoder.window, chunking.sizes, tuple(chunking.overlap(s) for s in chunking.sizes))
        docs_key = (label, text_key("\x00".join(doc_ids)), text_key("\x00".join(texts)))
        key = (*shape, *docs_key)
        if key in self._chunked:
            return self._chunked[key]
        per_size = [self._split(encoder, size, chunking.overlap(size), docs_key, texts) for size in chunking.sizes]
        out_texts: list[str] = []
        keys: list[str] = []
        sizes: list[int] = []
        documents: list[str] = []
        for i, doc_id in enumerate(doc_ids):
            for size, (split_texts, split_keys) in zip(chunking.sizes, per_size, strict=True):
                out_texts += split_texts[i]
                keys += split_keys[i]
                sizes += [size] * len(split_texts[i])
                documents += [doc_id] * len(split_texts[i])
        if not out_texts:
            raise ValueError(f"no document of part {label!r} has any text to chunk")
        part = _ChunkedPart(out_texts, keys, sizes, documents, ChunkGroups.build(documents, sizes))
        self._chunked[key] = part
        return part

    def _split(
        self, encoder: TempScaleEncoder, size: int, overlap: int, docs_key: tuple[str, ...], texts: list[str]
    ) -> tuple[list[list[str]], list[list[str]]]:
        """Chunk texts and their digests, per document, of one chunk size (cached)."""
        key = (encoder.window, size, overlap, *docs_key)
        if key not in self._splits:
            shape = (encoder.window, size, overlap)
            if shape not in self._chunkers:
                one = ChunkingConfig(sizes=(size,), overlap_tokens=overlap)
                self._chunkers[shape] = MultiSizeChunker(TokenCounter.from_encoder(encoder), one)
            chunker = self._chunkers[shape]
            unique = list(dict.fromkeys(texts))  # a text repeated in the corpus is split once
            workers = default_workers() if self.chunk_workers is None else self.chunk_workers
            pooled = workers > 0 and chunker.counter.tokenizer_json is not None
            if pooled and sum(len(t) for t in unique) >= self._pool_characters:
                pieces = ChunkPool(chunker.counter, size, overlap, workers).split(unique)
            else:
                pieces = [[chunk.text for chunk in chunker.split(text)] for text in unique]
            by_text = {text: (p, [text_key(piece) for piece in p]) for text, p in zip(unique, pieces, strict=True)}
            self._splits[key] = ([by_text[t][0] for t in texts], [by_text[t][1] for t in texts])
        return self._splits[key]

    def _count(
        self, encoder: TempScaleEncoder, texts: list[str], query: bool, keys: list[str] | None = None
    ) -> list[int]:
        prompt = encoder.config.query_prompt if query else encoder.config.document_prompt
        full_keys = [(k, query, prompt) for k in (keys if keys is not None else [text_key(t) for t in texts])]
        missing: dict[tuple[str, bool, str], int] = {}
        for i, k in enumerate(full_keys):
            if k not in self._token_counts and k not in missing:
                missing[k] = i
        if missing:
            counts = encoder.count_tokens([texts[i] for i in missing.values()], query=query)
            for k, n in zip(missing, counts, strict=True):
                self._token_counts[k] = n
        return [self._token_counts[k] for k in full_keys]

    def _embed(
        self,
        encoder: TempScaleEncoder,
        texts: list[str],
        tokens: list[int],
        query: bool,
        stats: dict[str, Any],
        keys: list[str] | None = None,
    ) -> _Embedded:
        seen = np.fromiter((int(lengths.sum()) for lengths in _segments(encoder, tokens, self._specials)), np.int64)
        if self.cache is None:
            started = time.perf_counter()
            with _quiet_truncation():
                vectors = encoder.encode(texts, query=query, show_progress=self.show_progress)
            elapsed = time.perf_counter() - started
            stats["encode_seconds"] += elapsed
            self.texts_encoded += len(texts)
            stats["encoded"] += len(texts)
            stats["segments"] += encoder.last_report.segments
            share = elapsed * seen / max(1, int(seen.sum()))
            return _Embedded(vectors, share.astype(np.float64), seen)
        text_keys = keys if keys is not None else [text_key(t) for t in texts]
        signatures = _signatures(encoder, tokens, self._specials, query=query)
        full_keys = [(k, query, signature) for k, signature in zip(text_keys, signatures, strict=True)]
        todo: dict[tuple[Any, ...], int] = {}
        for i, key in enumerate(full_keys):
            if key not in self.cache.vectors and key not in todo:
                todo[key] = i
        if todo:
            started = time.perf_counter()
            with _quiet_truncation():
                vectors = encoder.encode(
                    [texts[i] for i in todo.values()], query=query, show_progress=self.show_progress
                )
            elapsed = time.perf_counter() - started
            stats["encode_seconds"] += elapsed
            self.texts_encoded += len(todo)
            stats["segments"] += encoder.last_report.segments
            todo_seen = seen[list(todo.values())]
            total = max(1, int(todo_seen.sum()))
            for key, vector, n in zip(todo, vectors, todo_seen, strict=True):
                self.cache.vectors[key] = vector
                self.cache.seconds[key] = elapsed * int(n) / total
        self.cache.misses += len(todo)
        self.cache.hits += len(full_keys) - len(todo)
        stats["encoded"] += len(todo)
        stats["cached"] += len(full_keys) - len(todo)
        vectors = np.stack([self.cache.vectors[k] for k in full_keys]).astype(np.float32, copy=False)
        seconds = np.fromiter((self.cache.seconds[k] for k in full_keys), np.float64, len(full_keys))
        return _Embedded(vectors, seconds, seen)

    def _lexical_run(
        self,
        chunking: ChunkingConfig,
        chunked: _ChunkedPart,
        label: str,
        doc_ids: list[str],
        query_ids: list[str],
        query_texts: list[str],
    ) -> dict[str, LexicalLists]:
        """Per query, the lexical channel's two document lists, best first, as an index's store ranks them.

        BM25 (`PivotBM25`, the stores' exact formula) with the index default (`LexicalSettings.for_chunks` of the
        largest size): each document's best chunk of the lexical size, and the whole document (its lexical chunks'
        terms, `document_pivot`). Cached per part and query set, whatever the temperatures.
        """
        lexical = LexicalSettings.for_chunks(max(chunking.sizes))
        key = (label, text_key("\x00".join(chunked.keys)), text_key("\x00".join(query_texts)), lexical)
        cached = self._lexical_runs.get(key)
        if cached is not None:
            return cached
        analyzer = LexicalAnalyzer()
        rows = [i for i, size in enumerate(chunked.sizes) if size == lexical.chunk_size]
        chunk_terms = analyzer.terms_many([chunked.texts[i] for i in rows])
        scorer = PivotBM25(chunk_terms, lexical.pivot, lexical.k1, lexical.b)
        number = {doc_id: i for i, doc_id in enumerate(doc_ids)}
        owners = np.array([number[chunked.documents[i]] for i in rows], dtype=np.int64)
        # A store's documents are those with lexical chunks (every document has one chunk of each size at least).
        whole_terms: list[list[str]] = [[] for _ in doc_ids]
        for owner, terms in zip(owners.tolist(), chunk_terms, strict=True):
            whole_terms[owner].extend(terms)
        listed = np.zeros(len(doc_ids), dtype=bool)
        listed[owners] = True
        pivot = lexical.document_pivot if lexical.document_pivot is not None else lexical.pivot
        whole = PivotBM25([whole_terms[j] for j in np.flatnonzero(listed)], pivot, lexical.k1, lexical.b)
        depth = min(len(doc_ids), max(RETRIEVAL_DEPTH, *self.k_values))

        def ranked(scores: npt.NDArray[np.float64]) -> list[tuple[str, float]]:
            matched = np.flatnonzero(scores > 0)  # a store lists only documents with a matching term
            order = matched[np.argsort(-scores[matched], kind="stable")][:depth]
            return [(doc_ids[j], float(scores[j])) for j in order]

        out: dict[str, LexicalLists] = {}
        for qid, text in zip(query_ids, query_texts, strict=True):
            terms = analyzer.terms(text)
            best = np.zeros(len(doc_ids), dtype=np.float64)
            np.maximum.at(best, owners, scorer.scores(terms))
            whole_scores = np.zeros(len(doc_ids), dtype=np.float64)
            whole_scores[listed] = whole.scores(terms)
            out[qid] = LexicalLists(ranked(best), ranked(whole_scores))
        self._lexical_runs[key] = out
        return out

    def _rank_documents(
        self,
        groups: ChunkGroups,
        chunks: npt.NDArray[np.float32],
        scoring: DocumentScoring,
        query_ids: list[str],
        queries: npt.NDArray[np.float32],
    ) -> dict[str, dict[str, float]]:
        """Exact document ranking: `score_documents` over every chunk, for blocks of queries (memory stays bounded)."""
        means = group_vectors(chunks, groups) if scoring.needs_group_vectors else None
        n_docs = groups.n_documents
        k = min(n_docs, max(RETRIEVAL_DEPTH, *self.k_values))
        block = max(1, SCORE_BLOCK_ELEMENTS // max(1, groups.n_chunks))
        documents = groups.documents
        run: dict[str, dict[str, float]] = {}
        for start in range(0, len(query_ids), block):
            q = queries[start : start + block]
            group_scores = None if means is None else q @ means.T
            scores = score_documents(q @ chunks.T, groups, scoring, group_scores)
            if k < n_docs:
                top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(n_docs), (len(q), n_docs))
            for row, qid in enumerate(query_ids[start : start + block]):
                run[qid] = {str(documents[j]): float(scores[row, j]) for j in top[row]}
        return run


class LexicalLists(NamedTuple):
    """One query's lexical document lists, best first: each document's best lexical chunk, and the whole document."""

    chunks: list[tuple[str, float]]
    whole: list[tuple[str, float]]


def fuse_runs(
    dense: Mapping[str, Mapping[str, float]], lexical: Mapping[str, LexicalLists], chunking: ChunkingConfig
) -> dict[str, dict[str, float]]:
    """Each query's dense and lexical rankings fused as an index fuses them (`tempscale_rag.ranking.hybrid`)."""
    fusion = Fusion(chunking.retrieval, chunking.fusion, chunking.lexical_weight, chunking.fusion_depth)
    out: dict[str, dict[str, float]] = {}
    for qid, scores in dense.items():
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        lists = lexical.get(qid, LexicalLists([], []))
        out[qid] = {str(doc): score for doc, score in fuse_ranked(ranked, lists.chunks, fusion, lists.whole)}
    return out


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
