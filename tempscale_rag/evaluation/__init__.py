"""Evaluation: BEIR datasets, LongEmbed's synthetic tasks, MTEB-compatible metrics, and the side-by-side runner."""

from tempscale_rag.evaluation.datasets import RetrievalDataset, load_beir
from tempscale_rag.evaluation.metrics import LengthBin, MetricsResult, breakdown_by_length, evaluate_run
from tempscale_rag.evaluation.report import markdown_report, plot_results, write_outputs
from tempscale_rag.evaluation.runner import (
    ConfigurationResult,
    EmbeddingCache,
    EvalConfiguration,
    EvalResults,
    EvalTask,
    RetrievalEvaluator,
    beir_task,
    build_configurations,
    needle_task,
    passkey_task,
    split_by_documents,
)
from tempscale_rag.evaluation.synthetic import (
    LONGEMBED_LENGTHS,
    PASSKEY_FILLER,
    make_needle,
    make_passkey,
    read_haystack,
    read_needles,
)

__all__ = [
    "LONGEMBED_LENGTHS",
    "PASSKEY_FILLER",
    "ConfigurationResult",
    "EmbeddingCache",
    "EvalConfiguration",
    "EvalResults",
    "EvalTask",
    "LengthBin",
    "MetricsResult",
    "RetrievalDataset",
    "RetrievalEvaluator",
    "beir_task",
    "breakdown_by_length",
    "build_configurations",
    "evaluate_run",
    "load_beir",
    "make_needle",
    "make_passkey",
    "markdown_report",
    "needle_task",
    "passkey_task",
    "plot_results",
    "read_haystack",
    "read_needles",
    "split_by_documents",
    "write_outputs",
]
