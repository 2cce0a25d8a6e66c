"""Evaluation data and metrics: BEIR datasets, LongEmbed's synthetic tasks, and MTEB-compatible retrieval metrics."""

from tempscale_rag.evaluation.datasets import RetrievalDataset, load_beir
from tempscale_rag.evaluation.metrics import LengthBin, MetricsResult, breakdown_by_length, evaluate_run
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
    "LengthBin",
    "MetricsResult",
    "RetrievalDataset",
    "breakdown_by_length",
    "evaluate_run",
    "load_beir",
    "make_needle",
    "make_passkey",
    "read_haystack",
    "read_needles",
]
