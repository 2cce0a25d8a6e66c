"""The fast preset's BM25 weight, measured on the shared sets with the product's evaluator (issue 25).

`tempscale-rag eval DATA --preset fast --lexical-weight 1 1.5 2 3` does the same per set; this runs several sets in
one process so that QMSum's summary and question queries share the documents' embeddings, and leaves out the tau-1
rows (their embedding doubles the time on a CPU; the tau-1 comparison is made on the default pipeline).

    python research/hybrid/fast_weights.py ../shared/data --sets qmsum questions --out research/hybrid-eval-fast
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from tempscale_rag import TempScaleConfig, TempScaleEncoder
from tempscale_rag.config import ChunkingConfig
from tempscale_rag.evaluation.report import markdown_report, write_outputs
from tempscale_rag.evaluation.runner import (
    EvalTask,
    RetrievalEvaluator,
    beir_task,
    build_configurations,
    needle_task,
    passkey_task,
)

WEIGHTS = (1.0, 1.5, 2.0, 3.0)


def task(data: Path, name: str, tmp: Path) -> EvalTask:
    if name == "questions":
        folder = tmp / "questions"
        folder.mkdir(exist_ok=True)
        for file in ("corpus.jsonl", "qrels.tsv"):
            os.symlink((data / "qmsum" / file).resolve(), folder / file)
        os.symlink((data / "qmsum" / "queries_questions.jsonl").resolve(), folder / "queries.jsonl")
        return beir_task(folder, name="qmsum-questions")
    if name == "passkey":
        return passkey_task()
    if name == "needle":
        return needle_task(data / "paul_graham_essays" / "txt", data / "needles" / "needles_100.tsv")
    return beir_task(data / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("--sets", nargs="+", default=["qmsum", "questions"])
    parser.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    base = TempScaleConfig(device="cpu")
    configurations = build_configurations(base, chunkings=[ChunkingConfig.preset("fast")], lexical_weights=args.weights)
    # Drop the tau-1 rows (and the baselines they are): the TempScale rows are the preset's.
    configurations = [
        dataclasses.replace(c, baseline=None) for c in configurations if c.setting != "tau=1" and "tau=1" not in c.name
    ]
    evaluator = RetrievalEvaluator(TempScaleEncoder(base))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            start = time.perf_counter()
            results = evaluator.evaluate(task(args.data, name, Path(tmp)), configurations)
            print(markdown_report(results), flush=True)
            write_outputs(results, args.out / name, per_query=False)
            print(f"## {name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
