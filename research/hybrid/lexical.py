"""BM25 on the shared long-document sets: whole documents, word windows, and both fused (issue 25's granularity).

Usage: python research/hybrid/lexical.py [DATA]   (DATA defaults to ../shared/data; prints one table, ~2 min on 2 cores)

Every score is exact (each query against every document or window). A document's window score is its best window.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tempscale_rag.evaluation.datasets import RetrievalDataset, load_beir
from tempscale_rag.evaluation.metrics import evaluate_run
from tempscale_rag.evaluation.synthetic import make_needle, make_passkey
from tempscale_rag.ranking.fusion import fuse_arrays
from tempscale_rag.ranking.lexical import BM25Scorer, LexicalAnalyzer, word_windows

WINDOWS = (64, 128, 256)


def beir(folder: Path, queries: str = "queries.jsonl") -> RetrievalDataset:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("corpus.jsonl", "qrels.tsv"):
            os.symlink(folder / name, Path(tmp) / name)
        os.symlink(folder / queries, Path(tmp) / "queries.jsonl")
        return load_beir(tmp, name=folder.name)


def channels(ds: RetrievalDataset) -> dict[str, dict[str, np.ndarray]]:
    """Per query, each channel's score of every document (documents in `ds.corpus` order)."""
    analyzer = LexicalAnalyzer()
    doc_ids = list(ds.corpus)
    docs = [ds.corpus[d] for d in doc_ids]
    whole = BM25Scorer(analyzer.terms_many(docs))
    per_window = {}
    for size in WINDOWS:
        owners, texts = [], []
        for i, doc in enumerate(docs):
            for window in word_windows(doc, size):
                owners.append(i)
                texts.append(window)
        per_window[size] = (np.asarray(owners), BM25Scorer(analyzer.terms_many(texts)))
    out: dict[str, dict[str, np.ndarray]] = {}
    for qid, text in ds.queries.items():
        terms = analyzer.terms(text)
        row = {"doc": whole.scores(terms)}
        for size, (owners, scorer) in per_window.items():
            best = np.full(len(docs), -np.inf, dtype=np.float64)
            np.maximum.at(best, owners, scorer.scores(terms))
            row[f"win{size}"] = best
        out[qid] = row
    return out


def score(ds: RetrievalDataset, table: dict[str, dict[str, np.ndarray]], combo: tuple[str, ...]) -> float:
    doc_ids = list(ds.corpus)
    run = {}
    for qid, row in table.items():
        fused = row[combo[0]] if len(combo) == 1 else fuse_arrays([row[c] for c in combo], method="dbsf")
        top = np.argsort(-fused, kind="stable")[:100]
        run[qid] = {doc_ids[i]: float(fused[i]) for i in top}
    result = evaluate_run(run, ds.qrels, k_values=(1, 10))
    return 100 * result.mean["ndcg@10"]


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    t0 = time.time()
    sets = {
        "qmsum": [beir(data / "qmsum")],
        "qmsum-questions": [beir(data / "qmsum", "queries_questions.jsonl")],
        "bamboo": [beir(data / "bamboo")],
        "passkey": list(make_passkey([256, 512, 1024, 2048, 4096, 8192, 16384, 32768]).values()),
        "needle": list(make_needle(data / "paul_graham_essays" / "txt", data / "needles" / "needles_100.tsv").values()),
    }
    combos = [("doc",), *((f"win{w}",) for w in WINDOWS), *(("doc", f"win{w}") for w in WINDOWS)]
    print("nDCG@10 (passkey/needle: mean over 8 lengths of nDCG@10)")
    print(f"{'set':<17}" + "".join(f"{'+'.join(c):>14}" for c in combos))
    for name, parts in sets.items():
        tables = [channels(ds) for ds in parts]
        cells = [np.mean([score(ds, t, c) for ds, t in zip(parts, tables, strict=True)]) for c in combos]
        print(f"{name:<17}" + "".join(f"{v:>14.2f}" for v in cells), flush=True)
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
