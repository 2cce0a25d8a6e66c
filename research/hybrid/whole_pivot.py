"""Whole-document BM25 (W) alone: the corpus's average length vs a fixed length pivot (issue 25).

Usage: python research/hybrid/whole_pivot.py DATA

A vector database's sparse vectors hold values written once, so a whole-document channel in Qdrant needs a length
pivot fixed when a document is written. This measures how much W alone moves with the pivot on every shared set.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from fused import beir

from tempscale_rag.evaluation.metrics import evaluate_run
from tempscale_rag.evaluation.runner import needle_task, passkey_task
from tempscale_rag.ranking.lexical import LexicalAnalyzer, PivotBM25

PIVOTS = (None, "x0.5", 500, 750, 1000, 1250, 1500, 2000, 3000, "b0")


def main() -> None:
    data = Path(sys.argv[1])
    analyzer = LexicalAnalyzer()
    tasks = {
        "qmsum": {"all": beir(data / "qmsum", "queries.jsonl")},
        "qmsum-q": {"all": beir(data / "qmsum", "queries_questions.jsonl")},
        "bamboo": {"all": beir(data / "bamboo", "queries.jsonl")},
        "passkey": passkey_task().parts,
        "needle": needle_task(data / "paul_graham_essays/txt", data / "needles/needles_100.tsv").parts,
    }
    table: dict[str, dict[str, str]] = {}
    for tname, parts in tasks.items():
        per: dict[str, list[float]] = {}
        lengths = []
        for ds in parts.values():
            ids = list(ds.corpus)
            terms = analyzer.terms_many([ds.corpus[d] for d in ids])
            mean = float(np.mean([len(t) for t in terms]))
            lengths.append(mean)
            queries = {q: analyzer.terms(t) for q, t in ds.queries.items()}
            for p in PIVOTS:
                if p == "b0":
                    scorer = PivotBM25(terms, pivot=mean, b=0.0)
                elif isinstance(p, str):
                    scorer = PivotBM25(terms, pivot=mean * float(p[1:]))
                else:
                    scorer = PivotBM25(terms, pivot=p)
                run = {}
                for q, qt in queries.items():
                    s = scorer.scores(qt)
                    top = np.argsort(-s, kind="stable")[:100]
                    run[q] = {ids[j]: float(s[j]) for j in top}
                m = evaluate_run(run, ds.qrels, (1, 10)).mean
                per.setdefault(str(p), []).append(100 * m["ndcg@10" if len(parts) == 1 else "acc@1"])
        for name, values in per.items():
            table.setdefault(name, {})[tname] = f"{np.mean(values):.2f}"
        table.setdefault("mean doc terms", {})[tname] = f"{np.mean(lengths):.0f}"
        print(tname, "done", flush=True)
    print(f"{'pivot':14s}" + "".join(f"{t:>10s}" for t in tasks))
    for name, row in table.items():
        print(f"{name:14s}" + "".join(f"{row.get(t, ''):>10s}" for t in tasks))


if __name__ == "__main__":
    main()
