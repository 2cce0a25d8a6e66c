"""BM25 on the shared long-document sets: whole documents, word windows, and both fused (issue 25's granularity).

Usage: python research/hybrid/lexical.py [DATA] [--chunks 192,499]
  DATA defaults to ../shared/data; prints one table (~3 min on 2 cores). `--chunks` adds BM25 over the product's own
  chunks of those token sizes (WindowChunker with the bundled model's tokenizer, each size's default overlap), each
  document scored by its best chunk: the unit a store's lexical index would hold.

Every score is exact (each query against every document or window). A document's window score is its best window.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from tempscale_rag import TempScaleEncoder
from tempscale_rag.config import default_overlap
from tempscale_rag.evaluation.datasets import RetrievalDataset, load_beir
from tempscale_rag.evaluation.metrics import evaluate_run
from tempscale_rag.evaluation.synthetic import make_needle, make_passkey
from tempscale_rag.ingest.chunking import WindowChunker
from tempscale_rag.ranking.fusion import fuse_arrays
from tempscale_rag.ranking.lexical import BM25Scorer, LexicalAnalyzer, word_windows

WINDOWS = (64, 128, 256)
CHUNK_SIZES: tuple[int, ...] = ()


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
        per_window[f"win{size}"] = (np.asarray(owners), BM25Scorer(analyzer.terms_many(texts)))
    for size in CHUNK_SIZES:
        owners, texts = [], []
        for i, doc in enumerate(docs):
            for chunk in _chunker(size).split(doc) or [None]:
                owners.append(i)
                texts.append(chunk.text if chunk else "")
        per_window[f"chunk{size}"] = (np.asarray(owners), BM25Scorer(analyzer.terms_many(texts)))
    out: dict[str, dict[str, np.ndarray]] = {}
    for qid, text in ds.queries.items():
        terms = analyzer.terms(text)
        row = {"doc": whole.scores(terms)}
        for unit, (owners, scorer) in per_window.items():
            best = np.full(len(docs), -np.inf, dtype=np.float64)
            np.maximum.at(best, owners, scorer.scores(terms))
            row[unit] = best
        out[qid] = row
    return out


@cache
def _chunker(size: int) -> WindowChunker:

    return WindowChunker(_encoder(), size, default_overlap(size))


@lru_cache(maxsize=1)
def _encoder() -> TempScaleEncoder:
    return TempScaleEncoder(device="cpu")


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
    global CHUNK_SIZES
    args = sys.argv[1:]
    if "--chunks" in args:
        at = args.index("--chunks")
        CHUNK_SIZES = tuple(int(v) for v in args[at + 1].split(","))
        del args[at : at + 2]
    data = Path(args[0] if args else "../shared/data").resolve()
    t0 = time.time()
    sets = {
        "qmsum": [beir(data / "qmsum")],
        "qmsum-questions": [beir(data / "qmsum", "queries_questions.jsonl")],
        "bamboo": [beir(data / "bamboo")],
        "passkey": list(make_passkey([256, 512, 1024, 2048, 4096, 8192, 16384, 32768]).values()),
        "needle": list(make_needle(data / "paul_graham_essays" / "txt", data / "needles" / "needles_100.tsv").values()),
    }
    units = [*(f"win{w}" for w in WINDOWS), *(f"chunk{c}" for c in CHUNK_SIZES)]
    combos = [("doc",), *((u,) for u in units), *(("doc", u) for u in units)]
    print("nDCG@10 (passkey/needle: mean over 8 lengths of nDCG@10)")
    print(f"{'set':<17}" + "".join(f"{'+'.join(c):>15}" for c in combos))
    for name, parts in sets.items():
        tables = [channels(ds) for ds in parts]
        cells = [np.mean([score(ds, t, c) for ds, t in zip(parts, tables, strict=True)]) for c in combos]
        print(f"{name:<17}" + "".join(f"{v:>15.2f}" for v in cells), flush=True)
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
