"""Dense + lexical fusion on the shared sets: which lexical units, which fusion depth, which chunk sizes (issue 25).

Usage: python research/hybrid/fused.py DATA [--device cuda] [--sets qmsum,qmsum-questions,bamboo,passkey,needle]

For each dense pipeline (chunk sizes, temperatures) the documents are chunked and embedded as `tempscale-rag eval`
does (the evaluator's own chunking and embedding cache), every document is scored densely (softmax T 0.03, exact),
and lexically over the same chunks:
  W: BM25 over whole documents (Lucene, the corpus's average length)
  C: each document's best chunk of the largest size, pivot BM25 (`PivotBM25`, pivot = the chunks' mean length)
  Cp: the same with a fixed pivot (`--pivot`)
  WpP: BM25 over whole documents with the fixed length pivot P (`WHOLE_PIVOTS`)
Fusions are DBSF with equal weights, over every document (`all`) or over the union of each channel's top N.
Prints nDCG@10 (passkey/needle: mean acc@1 over the 8 lengths; the minimum length in brackets).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tempscale_rag import TempScaleEncoder
from tempscale_rag.config import ChunkingConfig, TempScaleConfig
from tempscale_rag.evaluation.datasets import RetrievalDataset, load_beir
from tempscale_rag.evaluation.metrics import evaluate_run
from tempscale_rag.evaluation.runner import RetrievalEvaluator, needle_task, passkey_task
from tempscale_rag.ranking.documents import DocumentScoring, score_documents
from tempscale_rag.ranking.fusion import normalise
from tempscale_rag.ranking.lexical import BM25Scorer, LexicalAnalyzer, PivotBM25

PIPELINES = {
    "4 sizes": ((24, 48, 192, 499), (1.0, 1.0, 0.9, 0.9), 0.8),
    "4 sizes tau1": ((24, 48, 192, 499), (1.0, 1.0, 1.0, 1.0), 1.0),
    "48+499": ((48, 499), (1.0, 0.9), 0.8),
    "48+499 tau1": ((48, 499), (1.0, 1.0), 1.0),
    "499": ((499,), (0.9,), 0.8),
    "499 tau1": ((499,), (1.0,), 1.0),
}
DEPTHS = (None, 100, 50)
WHOLE_PIVOTS: tuple[float, ...] = (1000.0, 1500.0, 2000.0)
"""Fixed length pivots (analysed terms) of whole-document BM25 (`Wp`): what a vector database's values can hold."""
FOCUSED = False


def beir(folder: Path, queries: str) -> RetrievalDataset:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("corpus.jsonl", "qrels.tsv"):
            os.symlink(folder.resolve() / name, Path(tmp) / name)
        os.symlink(folder.resolve() / queries, Path(tmp) / "queries.jsonl")
        return load_beir(tmp, name=folder.name)


WEIGHTS = (0.5, 1.5, 2.0, 3.0)


def weighted(lists: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """DBSF over every document with per-list weights."""
    return np.sum([wt * normalise(s, "dbsf") for wt, s in zip(weights, lists, strict=True)], axis=0)


def fused(lists: list[np.ndarray], depth: int | None) -> np.ndarray:
    """DBSF of per-document score arrays (one query), over all documents or the union of each list's top `depth`."""
    n = lists[0].size
    if depth is None or depth >= n:
        return np.sum([normalise(s, "dbsf") for s in lists], axis=0)
    keep = np.zeros(n, dtype=bool)
    tops = [np.argpartition(-s, depth - 1)[:depth] for s in lists]
    for top in tops:
        keep[top] = True
    out = np.full(n, -np.inf)
    total = np.zeros(int(keep.sum()))
    idx = np.flatnonzero(keep)
    for s, top in zip(lists, tops, strict=True):
        floor = s[top].min()
        sub = np.where(np.isin(idx, top), s[idx], floor)
        norm_top = normalise(s[top], "dbsf")
        # the candidates a channel did not return get its list's minimum, normalised with its own list's statistics
        mean, sd = s[top].mean(), s[top].std()
        total += (sub - (mean - 3 * sd)) / (6 * sd) if sd > 0 else 0.5
        del norm_top
    out[idx] = total
    return out


def run_part(
    ev: RetrievalEvaluator,
    enc: TempScaleEncoder,
    chunking: ChunkingConfig,
    label: str,
    ds: RetrievalDataset,
    analyzer: LexicalAnalyzer,
    pivot: float,
) -> dict[str, dict[str, dict[str, float]]]:
    doc_ids = list(ds.corpus)
    texts = [ds.corpus[d] for d in doc_ids]
    chunked = ev._chunk(enc, chunking, label, doc_ids, texts)
    stats = {"seconds": 0.0, "encoded": 0, "cached": 0, "segments": 0, "encode_seconds": 0.0}
    tokens = ev._count(enc, chunked.texts, query=False, keys=chunked.keys)
    docs = ev._embed(enc, chunked.texts, tokens, False, stats, chunked.keys)
    qids = list(ds.queries)
    qtexts = [ds.queries[q] for q in qids]
    queries = ev._embed(enc, qtexts, ev._count(enc, qtexts, query=True), True, stats)
    scoring = DocumentScoring("softmax", softmax_temperature=0.03)
    dense = np.concatenate(
        [
            score_documents(queries.vectors[s : s + 64] @ docs.vectors.T, chunked.groups, scoring)
            for s in range(0, len(qids), 64)
        ]
    )
    order = {d: i for i, d in enumerate(chunked.groups.documents)}
    perm = np.array([order[d] for d in doc_ids])
    dense = dense[:, perm]
    whole_terms = analyzer.terms_many(texts)
    whole = BM25Scorer(whole_terms)
    whole_fixed = {p: PivotBM25(whole_terms, pivot=p) for p in WHOLE_PIVOTS}
    big = max(chunking.sizes)
    lex_rows = [i for i, s in enumerate(chunked.sizes) if s == big]
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    lex_owner = np.array([doc_index[chunked.documents[i]] for i in lex_rows])
    lex_terms = analyzer.terms_many([chunked.texts[i] for i in lex_rows])
    auto = PivotBM25(lex_terms)
    fixed = PivotBM25(lex_terms, pivot=pivot)
    runs: dict[str, dict[str, dict[str, float]]] = {}

    def put(name: str, qid: str, scores: np.ndarray) -> None:
        top = np.argsort(-scores, kind="stable")[:100]
        runs.setdefault(name, {})[qid] = {doc_ids[j]: float(scores[j]) for j in top}

    for qi, qid in enumerate(qids):
        terms = analyzer.terms(qtexts[qi])
        w = whole.scores(terms).astype(np.float64)
        chans = {}
        for tag, scorer in (("C", auto), ("Cp", fixed)):
            chunk_scores = scorer.scores(terms).astype(np.float64)
            best = np.zeros(len(doc_ids))
            np.maximum.at(best, lex_owner, chunk_scores)
            chans[tag] = best
            if tag == "Cp":
                total = np.zeros(len(doc_ids))
                np.add.at(total, lex_owner, chunk_scores)
                chans["Csum"] = total
                counts = np.bincount(lex_owner, minlength=len(doc_ids)).clip(1)
                chans["Cmean"] = total / counts
                second = chunk_scores.copy()
                # a document's second-best chunk: its best removed once
                order_idx = np.lexsort((-chunk_scores, lex_owner))
                first = np.r_[True, lex_owner[order_idx][1:] != lex_owner[order_idx][:-1]]
                second[order_idx[first]] = -np.inf
                top2 = np.full(len(doc_ids), -np.inf)
                np.maximum.at(top2, lex_owner, second)
                chans["Ctop2"] = (best + np.where(np.isfinite(top2), top2, best)) / 2
        d = dense[qi].astype(np.float64)
        put("dense", qid, d)
        for p, scorer in whole_fixed.items():
            wp = scorer.scores(terms).astype(np.float64)
            put(f"Wp{p:g}", qid, wp)
            put(f"D+Wp{p:g}", qid, fused([d, wp], None))
            put(f"D+Wp{p:g}+Cp", qid, fused([d, wp, chans["Cp"]], None))
            put(f"Wp{p:g}+Cp", qid, fused([wp, chans["Cp"]], None))
        if FOCUSED:
            put("D+Cp", qid, fused([d, chans["Cp"]], None))
            put("D+W+Cp", qid, fused([d, w, chans["Cp"]], None))
            continue
        put("W", qid, w)
        put("C", qid, chans["C"])
        put("W+C", qid, fused([w, chans["C"]], None))
        for depth in DEPTHS:
            tag = "all" if depth is None else str(depth)
            put(f"D+W {tag}", qid, fused([d, w], depth))
            put(f"D+C {tag}", qid, fused([d, chans["C"]], depth))
            put(f"D+Cp {tag}", qid, fused([d, chans["Cp"]], depth))
            put(f"D+W+C {tag}", qid, fused([d, w, chans["C"]], depth))
            put(f"D+W+Cp {tag}", qid, fused([d, w, chans["Cp"]], depth))
            if depth is None:
                for weight in WEIGHTS:
                    put(f"D+{weight:g}Cp", qid, weighted([d, chans["Cp"]], [1.0, weight]))
                    put(f"D+{weight:g}(W+Cp)", qid, weighted([d, w, chans["Cp"]], [1.0, weight, weight]))
                put("D+Csum", qid, fused([d, chans["Csum"]], None))
                put("D+Cmean", qid, fused([d, chans["Cmean"]], None))
                put("D+Ctop2", qid, fused([d, chans["Ctop2"]], None))
                put("D+Cp+Csum", qid, fused([d, chans["Cp"], chans["Csum"]], None))
                put("Cp+Csum", qid, fused([chans["Cp"], chans["Csum"]], None))
                put(".5D+W+Cp", qid, fused([0.5 * normalise(d, "dbsf"), w, chans["Cp"]], None))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--device", default=None)
    parser.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    parser.add_argument("--sets", default="qmsum,qmsum-questions,bamboo,passkey,needle")
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--pivot", type=float, default=200.0)
    parser.add_argument("--focused", action="store_true", help="only dense, W, C, the Wp fusions, D+Cp and D+W+Cp")
    args = parser.parse_args()
    global FOCUSED
    FOCUSED = args.focused
    started = time.time()
    analyzer = LexicalAnalyzer()
    model = {"model": args.model} if args.model else {}
    base = TempScaleEncoder(config=TempScaleConfig(device=args.device, dtype="float32", **model))
    ev = RetrievalEvaluator(base)
    tasks = {}
    for name in args.sets.split(","):
        if name == "qmsum":
            tasks[name] = {"all": beir(args.data / "qmsum", "queries.jsonl")}
        elif name == "qmsum-questions":
            tasks[name] = {"all": beir(args.data / "qmsum", "queries_questions.jsonl")}
        elif name == "bamboo":
            tasks[name] = {"all": beir(args.data / "bamboo", "queries.jsonl")}
        elif name == "passkey":
            tasks[name] = passkey_task().parts
        elif name == "needle":
            tasks[name] = needle_task(args.data / "paul_graham_essays/txt", args.data / "needles/needles_100.tsv").parts
    for pname in args.pipelines.split(","):
        sizes, taus, qtau = PIPELINES[pname]
        chunking = ChunkingConfig(sizes=sizes, temperatures=taus)
        cfg = TempScaleConfig(
            device=args.device,
            dtype="float32",
            **model,
            buckets=chunking.buckets(ev._n_special),
            query_temperature=qtau,
        )
        enc = ev.encoder_for(cfg)
        table: dict[str, dict[str, str]] = {}
        for tname, parts in tasks.items():
            per_part: dict[str, list[float]] = {}
            for label, ds in parts.items():
                runs = run_part(ev, enc, chunking, f"{tname}/{label}", ds, analyzer, args.pivot)
                for name, run in runs.items():
                    m = evaluate_run(run, ds.qrels, (1, 10)).mean
                    key = "ndcg@10" if len(parts) == 1 else "acc@1"
                    per_part.setdefault(name, []).append(100 * m[key])
            for name, values in per_part.items():
                cell = f"{np.mean(values):.2f}" + (f" ({min(values):.0f})" if len(values) > 1 else "")
                table.setdefault(name, {})[tname] = cell
        print(f"\n## {pname} (sizes {sizes}, taus {taus}, queries {qtau}); {time.time() - started:.0f} s", flush=True)
        print(f"{'fusion':16s}" + "".join(f"{t:>18s}" for t in tasks))
        for name, row in table.items():
            print(f"{name:16s}" + "".join(f"{row.get(t, ''):>18s}" for t in tasks), flush=True)


if __name__ == "__main__":
    main()
