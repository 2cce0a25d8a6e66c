"""The FAISS store's lexical channel at scale: query latency, `add_lexical` and the cost it adds to writes.

Chunks are ~370-word windows of the QMSum transcripts (`--qmsum`, else Zipf-distributed `wordN` tokens), repeated
with 10% of their words swapped to reach `--chunks`; every chunk is of the lexical size (the worst case: with several
chunk sizes only one size is analysed). Vectors are random 16-d unit vectors (the dense side is not measured here).
Queries are the first 15 distinct analysed terms of QMSum's summary queries.

1. a dense-only store is filled (`replace_source`, 20 chunks per file), then `add_lexical` indexes it (timed);
2. `lexical_chunks` is timed for `--queries` queries with n = 100 and n = None (median and p90, warm page cache);
3. 200 more files are written into a lexical and a dense-only store, timed, for the per-chunk write overhead.

    PYTHONPATH=. python benchmarks/faiss_lexical.py --chunks 100000 [--qmsum ../shared/data/qmsum] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tempscale_rag.config import LexicalSettings
from tempscale_rag.ranking.lexical import LexicalAnalyzer, SparseEncoder
from tempscale_rag.stores import ChunkRecord
from tempscale_rag.stores.faiss import FaissStore

QMSUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "qmsum"
SETTINGS = LexicalSettings.for_chunks(499)
PER_FILE = 20


def corpus(n: int, qmsum: Path = QMSUM, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` chunk texts and the query texts (QMSum's, else Zipf-distributed `wordN` tokens)."""
    rng = np.random.default_rng(seed)
    if (qmsum / "corpus.jsonl").exists():
        docs = [json.loads(line)["text"] for line in (qmsum / "corpus.jsonl").open(encoding="utf-8")]
        queries = [json.loads(line)["text"] for line in (qmsum / "queries.jsonl").open(encoding="utf-8")]
    else:
        vocabulary = [f"word{i}" for i in range(20000)]
        weights = 1.0 / np.arange(1, len(vocabulary) + 1)
        weights /= weights.sum()
        docs = [" ".join(rng.choice(vocabulary, 5000, p=weights)) for _ in range(50)]
        queries = [" ".join(rng.choice(vocabulary, 30, p=weights)) for _ in range(200)]
    words = " ".join(docs).split()
    windows = [words[i : i + 370] for i in range(0, len(words) - 370, 370)]
    texts = []
    while len(texts) < n:
        for window in windows:
            swapped = list(window)
            for j in np.flatnonzero(rng.random(len(swapped)) < 0.1).tolist():
                swapped[j] = words[int(rng.integers(len(words)))]
            texts.append(" ".join(swapped))
            if len(texts) == n:
                break
    return texts, queries


def write(store: FaissStore, texts: list[str], prefix: str, seed: int) -> None:
    vectors = np.random.default_rng(seed).standard_normal((len(texts), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, len(texts), PER_FILE):
        source = f"{prefix}{start // PER_FILE}.txt"
        records = [
            ChunkRecord.create(
                text=text,
                vector=vectors[start + i],
                source=source,
                position=i,
                token_length=499,
                bucket="499",
                metadata={"chunk_tokens": 499},
            )
            for i, text in enumerate(texts[start : start + PER_FILE])
        ]
        store.replace_source(source, "fp", records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="Folder for the stores (default: a temp folder).")
    parser.add_argument("--qmsum", type=Path, default=QMSUM, help="The QMSum folder (missing: a Zipf corpus).")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="lexbench-"))
    texts, query_texts = corpus(args.chunks + 2 * 200 * PER_FILE, args.qmsum)
    print(f"corpus: {'QMSum' if (args.qmsum / 'corpus.jsonl').exists() else 'Zipf wordN (no QMSum)'}")
    bulk, extra = texts[: args.chunks], texts[args.chunks :]
    analyzer = LexicalAnalyzer()
    encoder = SparseEncoder()
    queries = []
    for text in query_texts[: args.queries]:
        terms = list(dict.fromkeys(analyzer.terms(text)))[:15]
        queries.append(encoder.query(" ".join(terms)))

    with FaissStore(out / "store", dimension=16, create=True) as store:
        t0 = time.perf_counter()
        write(store, bulk, "bulk", 1)
        dense_fill = time.perf_counter() - t0
        t0 = time.perf_counter()
        indexed = store.add_lexical(SETTINGS)
        add_seconds = time.perf_counter() - t0
        described = store.describe()["lexical"]
        for query in queries[:5]:
            store.lexical_chunks(query, 100)  # warm the page cache
        timings: dict[str, list[float]] = {"n=100": [], "n=None": []}
        matched = []
        for query in queries:
            for name, n in (("n=100", 100), ("n=None", None)):
                t0 = time.perf_counter()
                keys, _ = store.lexical_chunks(query, n)
                timings[name].append(time.perf_counter() - t0)
                if n is None:
                    matched.append(len(keys))
    write_seconds = {}
    for name, lexical in (("dense-only", None), ("lexical", SETTINGS)):
        with FaissStore(out / f"writes-{name}", dimension=16, create=True, lexical=lexical) as store:
            write(store, extra[: 100 * PER_FILE], "warm", 2)
            t0 = time.perf_counter()
            write(store, extra[100 * PER_FILE :], "timed", 3)
            write_seconds[name] = time.perf_counter() - t0
    timed_chunks = len(extra) - 100 * PER_FILE
    print(f"{indexed} lexical chunks, {described['terms']} distinct terms ({out})")
    per_chunk = 1e3 * add_seconds / max(indexed, 1)
    print(f"dense-only fill {dense_fill:.1f} s; add_lexical {add_seconds:.1f} s ({per_chunk:.2f} ms/chunk)")
    for name, values in timings.items():
        ms = 1e3 * np.asarray(values)
        print(f"lexical_chunks {name}: median {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms")
    print(f"query terms 15 (at most), chunks matched per query: median {int(np.median(matched))}")
    for name, seconds in write_seconds.items():
        print(f"replace_source, {name}: {1e3 * seconds / timed_chunks:.2f} ms per chunk")


if __name__ == "__main__":
    main()
