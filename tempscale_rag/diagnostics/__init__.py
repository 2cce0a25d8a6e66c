"""Diagnostics: measure length collapse per token-length bin, with and without TempScale."""

from tempscale_rag.diagnostics.collapse import (
    BinMeasurement,
    CollapseStats,
    LengthSample,
    collapse_stats,
    collapse_table,
    measure_collapse,
    plot_collapse,
    read_corpus,
    results_to_json,
    sample_windows,
)

__all__ = [
    "BinMeasurement",
    "CollapseStats",
    "LengthSample",
    "collapse_stats",
    "collapse_table",
    "measure_collapse",
    "plot_collapse",
    "read_corpus",
    "results_to_json",
    "sample_windows",
]
