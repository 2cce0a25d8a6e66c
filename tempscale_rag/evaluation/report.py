"""Human-readable views of `EvalResults`: a Markdown report and a PNG plot.

The report puts configurations side by side with their delta against the baseline; the plot shows score against
length, one line per configuration.

Scores are shown in percent with two decimals, as MTEB and LongEmbed print them; the JSON keeps fractions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tempscale_rag.config import LexicalSettings
from tempscale_rag.evaluation.runner import ConfigurationResult, EvalResults

_LABELS = {"ndcg@10": "nDCG@10", "ndcg@1": "nDCG@1", "recall@10": "R@10", "recall@100": "R@100", "mrr": "MRR"}


def _label(metric: str) -> str:
    return _LABELS.get(metric, metric)


def _pct(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value * 100:+.2f}" if signed else f"{value * 100:.2f}"


def _temperatures(result: ConfigurationResult) -> str:
    """How the configuration sets temperatures, in a few characters."""
    chunking = result.configuration.chunking
    if chunking is not None and chunking.retrieval == "lexical":
        return "– (BM25: nothing embedded)"
    config = result.configuration.config
    sizes = result.pipeline.get("chunk_tokens")
    taus = result.pipeline.get("chunk_temperatures")
    if sizes and taus:
        text = "chunks " + ",".join(f"{n}:{t:g}" for n, t in zip(sizes, taus, strict=True))
        if config.query_temperature is not None:
            text += f"; queries {config.query_temperature:g}"
        return text
    if config.temperature is not None:
        text = f"{config.temperature:g} global"
    elif config.schedule is not None:
        text = f"{config.schedule} schedule"
    else:
        text = ", ".join(f"{b.label()}:{b.tau:g}" for b in config.buckets)
    if config.query_temperature is not None:
        text += f"; queries {config.query_temperature:g}"
    return text


def pipeline_label(result: ConfigurationResult) -> str:
    """How documents are represented, in a few characters: `max 64,128,256` or `vector truncate`."""
    configuration = result.configuration
    if configuration.chunking is None:
        return f"vector {configuration.config.long_text}"
    sizes = ",".join(map(str, configuration.chunking.sizes))
    retrieval = configuration.chunking.retrieval
    if retrieval == "lexical":
        return f"BM25 {LexicalSettings.for_chunks(max(configuration.chunking.sizes)).chunk_size}+doc"
    return f"{configuration.doc_score} {sizes}" + (" + BM25" if retrieval == "hybrid" else "")


def _cost_cells(result: ConfigurationResult) -> list[str]:
    cost = result.cost
    if not cost:
        return ["–", "–", "–"]
    return [
        f"{cost['tokens_per_source_token']:.2f}",
        f"{cost['vectors_per_1k_source_tokens']:.1f}",
        f"{cost['embedding_seconds']:.1f}",
    ]


_COST_HEAD = ["tokens/src", "vec/1k", "embed s"]
_COST_NOTE = (
    "Cost of indexing the documents: tokens/src = tokens embedded per source token; vec/1k = vectors stored per 1,000 "
    "source tokens; embed s = embedding seconds, each text's share of the measured time of the call that embedded "
    "it (also for configurations served from the cache; results.json has the wall time measured per configuration)."
)


def markdown_report(results: EvalResults) -> str:
    """The Markdown report: main table, then the per-length table (synthetic) or per-document-length table (BEIR)."""
    task = results.task
    main = task.main_metric
    n_queries = sum(len(ds.queries) for ds in task.parts.values())
    n_docs = sum(len(ds.corpus) for ds in task.parts.values())
    lines = [
        f"## {task.name}: {n_queries} queries, {n_docs} documents",
        "",
        f"Model `{results.model}` on {results.device or 'the default device'}; scores in percent; "
        f"Δ is against the tau = 1 baseline of the same pipeline and window; {results.seconds:.0f} s.",
        "",
    ]
    if task.synthetic:
        lengths = list(task.parts)
        head = ["configuration", "pipeline", "window", *lengths, f"mean {_label(main)}", "Δ mean", *_COST_HEAD]
        head.append("temperatures")
        lines += [_row(head), _rule(head, numeric_from=2)]
        for r in results.results:
            cells = [r.name, pipeline_label(r), str(r.window)]
            cells += [_pct(r.parts[label].mean[main]) for label in lengths]
            cells += [_pct(r.metrics[main]), _pct(results.delta(r, main), signed=True), *_cost_cells(r)]
            cells.append(_temperatures(r))
            lines.append(_row(cells))
        lines += [
            "",
            f"Per length: {_label(main)} (LongEmbed's score for passkey and needle); the mean is over lengths.",
            _COST_NOTE,
        ]
        return "\n".join(lines) + "\n"

    metrics = [m for m in ("ndcg@10", "ndcg@1", "recall@10", "recall@100", "mrr") if m in results.results[0].metrics]
    head = ["configuration", "pipeline", "window", *(_label(m) for m in metrics), f"Δ {_label(main)}", *_COST_HEAD]
    head.append("temperatures")
    lines += [_row(head), _rule(head, numeric_from=2)]
    for r in results.results:
        cells = [r.name, pipeline_label(r), str(r.window)]
        cells += [_pct(r.metrics[m]) for m in metrics]
        cells += [_pct(results.delta(r, main), signed=True), *_cost_cells(r), _temperatures(r)]
        lines.append(_row(cells))
    lines += ["", _COST_NOTE]
    bins = list(dict.fromkeys(label for r in results.results for label in r.by_doc_length))
    if bins:
        counts = {label: b.count for r in results.results for label, b in r.by_doc_length.items()}
        lines += ["", f"{_label(main)} by the token length of the relevant document (queries per bin in brackets):", ""]
        head = ["configuration", *(f"{label} ({counts[label]})" for label in bins)]
        lines += [_row(head), _rule(head, numeric_from=1, text_last=False)]
        for r in results.results:
            cells = [r.name] + [
                _pct(r.by_doc_length[label].mean[main]) if label in r.by_doc_length else "–" for label in bins
            ]
            lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _rule(head: list[str], numeric_from: int, text_last: bool = True) -> str:
    def align(i: int) -> str:
        return "---" if i < numeric_from or (text_last and i == len(head) - 1) else "---:"

    return "|" + "|".join(align(i) for i in range(len(head))) + "|"


def _setting(result: ConfigurationResult) -> tuple[Any, ...]:
    """What a configuration does with temperatures, whatever its pipeline and window (its colour in the plot)."""
    return (result.configuration.setting or result.name,)


def plot_results(results: EvalResults, path: str | Path) -> Path:
    """Write a PNG of the main metric against length: one panel per (window, pipeline), one line per setting.

    A temperature setting keeps its colour in every panel, so panels compare at a glance. Synthetic tasks are
    plotted against the target length (log scale); BEIR tasks against the token-length bin of the relevant
    document, with the number of queries per bin on the axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = results.task
    main = task.main_metric
    groups: dict[tuple[int, str], list[Any]] = {}
    for r in results.results:
        groups.setdefault((r.window, pipeline_label(r)), []).append(r)
    settings = list(dict.fromkeys(_setting(r) for r in results.results))
    palette = plt.get_cmap("tab10" if len(settings) <= 10 else "tab20")
    colours = {setting: palette(i % palette.N) for i, setting in enumerate(settings)}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups) + 3, 4.8), sharey=True, squeeze=False)
    handles: dict[str, Any] = {}
    bins = list(dict.fromkeys(label for r in results.results for label in r.by_doc_length))
    counts = {label: b.count for r in results.results for label, b in r.by_doc_length.items()}
    for ax, ((window, pipeline), members) in zip(axes[0], groups.items(), strict=True):
        for r in members:
            suffix = r.configuration.setting or r.name
            if task.synthetic:
                x: list[float] = [int(label) for label in task.parts]
                y = [r.parts[label].mean[main] * 100 for label in task.parts]
            else:
                x = list(range(len(bins)))
                y = [r.by_doc_length[b].mean[main] * 100 if b in r.by_doc_length else math.nan for b in bins]
            style = "-" if r.configuration.baseline is not None else "--"
            (line,) = ax.plot(x, y, style, marker="o", ms=4, color=colours[_setting(r)])
            handles.setdefault(suffix, line)
        if task.synthetic:
            lengths = [int(label) for label in task.parts]
            ax.set_xscale("log", base=2)
            ax.set_xticks(lengths, [f"{n // 1024}k" if n >= 1024 else str(n) for n in lengths])
            ax.minorticks_off()
            ax.set_xlabel("document length (target tokens)")
            ax.axhline(100 / max(len(ds.queries) for ds in task.parts.values()), color="grey", lw=0.8, ls=":")
        else:
            ax.set_xticks(range(len(bins)), [f"{b}\n({counts[b]} q)" for b in bins], fontsize=8)
            ax.set_xlabel("token length of the relevant document")
        ax.set_title(f"{pipeline}, window {window}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{_label(main)} (%)")
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"{task.name}: {_label(main)} by length ({results.model}; dashed: tau = 1 baseline)")
    fig.tight_layout(rect=(0, 0, 1 - 3 / (5.5 * len(groups) + 3), 1))
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_outputs(
    results: EvalResults, folder: str | Path, *, per_query: bool = True, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write `results.json`, `results.md` and `score_vs_length.png` into `folder` (created if needed).

    Args:
        results: The results.
        folder: Output folder.
        per_query: Include per-query metrics in the JSON.
        extra: More top-level JSON fields (the CLI records its arguments there).

    Returns:
        Kind (`json`, `markdown`, `plot`) -> path written.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "score_vs_length.png"}
    document = {**results.to_json_dict(per_query=per_query), **(extra or {})}
    # Compact when per-query numbers are in: they are most of the file and results.md is the human view.
    indent = None if per_query else 1
    paths["json"].write_text(json.dumps(document, indent=indent) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_report(results), encoding="utf-8")
    plot_results(results, paths["plot"])
    return paths
