"""Search latency, hybrid vs dense, side by side on one FAISS flat index of >= 100k chunks (issue 25's target).

The corpus is QMSum's 197 meeting transcripts cut into word windows of the default chunk sizes (about 18, 36, 144
and 375 words for 24, 48, 192 and 499 tokens, with the default overlaps), so the lexical channel indexes real text;
`--copies` repeats the corpus (each copy its own documents, 10% of its words shuffled) to reach the size wanted. The
vectors are random unit vectors near their document's topic (the dense side's cost depends on the count, not on what
the vectors mean); the queries are QMSum's summary queries as text (the lexical side) and noisy copies of a random
chunk's vector (the dense side). Every timing is one query at a time, median and p90 over `--queries` queries after
one warm-up each; the query's embedding (one model call, the same for both) is not included.

    python benchmarks/hybrid_search.py [--copies 1] [--queries 50] [--qmsum ../shared/data/qmsum]

Printed per method: median and p90 ms, and the ratio of hybrid to dense; the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tempscale_rag.config import DEFAULT_CHUNK_SIZES, LexicalSettings, default_overlap  # noqa: E402
from tempscale_rag.ranking.documents import DocumentScoring  # noqa: E402
from tempscale_rag.ranking.hybrid import Fusion, search_chunks_hybrid, search_documents_hybrid  # noqa: E402
from tempscale_rag.ranking.lexical import SparseEncoder  # noqa: E402
from tempscale_rag.stores import ChunkRecord  # noqa: E402
from tempscale_rag.stores.faiss import FaissStore  # noqa: E402

QMSUM = ROOT.parent / "shared" / "data" / "qmsum"
DIM = 384
WORDS_PER_TOKEN = 0.75
SCORING = DocumentScoring("softmax", softmax_temperature=0.03)


def documents(folder: Path, copies: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(name, words) of every transcript, `copies` times (copies after the first have 10% of words shuffled)."""
    rng = np.random.default_rng(seed)
    texts = [json.loads(line)["text"] for line in (folder / "corpus.jsonl").open(encoding="utf-8")]
    out = []
    for copy in range(copies):
        for i, text in enumerate(texts):
            words = text.split()
            if copy:
                swap = rng.choice(len(words), size=len(words) // 10, replace=False)
                words = list(words)
                for a, b in zip(swap, rng.permutation(swap), strict=True):
                    words[a] = text.split()[b]
            out.append((f"copy{copy}/meeting{i:03d}.txt", words))
    return out


def records(name: str, words: list[str], rng: np.random.Generator) -> list[ChunkRecord]:
    """A document's chunks at every default size (word windows), vectors near a random topic."""
    topic = rng.standard_normal(DIM).astype(np.float32)
    out: list[ChunkRecord] = []
    for size in DEFAULT_CHUNK_SIZES:
        width = max(1, int(size * WORDS_PER_TOKEN))
        step = max(1, width - int(default_overlap(size) * WORDS_PER_TOKEN))
        for start in range(0, max(1, len(words) - width + step), step):
            vector = topic + 1.5 * rng.standard_normal(DIM).astype(np.float32)
            out.append(
                ChunkRecord.create(
                    text=" ".join(words[start : start + width]),
                    vector=vector / np.linalg.norm(vector),
                    source=name,
                    position=len(out),
                    token_length=size,
                    bucket=str(size),
                    metadata={"chunk_tokens": size},
                )
            )
    return out


def timed(call: Callable[[int], object], n: int) -> tuple[float, float]:
    call(0)  # warm-up (the first document search builds the in-memory grouping)
    times = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--copies", type=int, default=1, help="copies of QMSum (1: ~211k chunks)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--qmsum", type=Path, default=QMSUM)
    args = parser.parse_args()
    if not (args.qmsum / "corpus.jsonl").exists():
        sys.exit(f"needs {args.qmsum}/corpus.jsonl (the shared QMSum data)")
    lexical = LexicalSettings.for_chunks(max(DEFAULT_CHUNK_SIZES))
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = FaissStore(Path(tmp) / "index", dimension=DIM, create=True, lexical=lexical)
        started = time.perf_counter()
        n_chunks = 0
        all_vectors = []
        for name, words in documents(args.qmsum, args.copies):
            batch = records(name, words, rng)
            n_chunks += len(batch)
            all_vectors.append(np.stack([r.vector for r in batch[:: max(1, len(batch) // 20)]]))
            store.replace_source(name, f"sha-{name}", batch)
        store.commit()
        built = time.perf_counter() - started
        texts = [json.loads(line)["text"] for line in (args.qmsum / "queries.jsonl").open(encoding="utf-8")]
        pool = np.concatenate(all_vectors)
        picks = rng.choice(len(pool), size=args.queries + 1)
        noisy = pool[picks] + 0.05 * rng.standard_normal((len(picks), DIM)).astype(np.float32)
        vectors = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
        sparse = [SparseEncoder().query(texts[i % len(texts)]) for i in range(len(picks))]

        def chunks(retrieval: str) -> Callable[[int], object]:
            fusion = Fusion(retrieval)  # type: ignore[arg-type]
            return lambda i: search_chunks_hybrid(store, vectors[i : i + 1], sparse[i : i + 1], 10, fusion)

        def docs(retrieval: str) -> Callable[[int], object]:
            fusion = Fusion(retrieval)  # type: ignore[arg-type]

            def call(i: int) -> object:
                return search_documents_hybrid(store, vectors[i : i + 1], sparse[i : i + 1], 10, SCORING, 3, fusion)

            return call

        rows = {
            "search (chunks), dense": timed(chunks("dense"), args.queries),
            "search (chunks), hybrid": timed(chunks("hybrid"), args.queries),
            "search (chunks), lexical": timed(chunks("lexical"), args.queries),
            "search --documents, dense": timed(docs("dense"), args.queries),
            "search --documents, hybrid": timed(docs("hybrid"), args.queries),
            "search --documents, lexical": timed(docs("lexical"), args.queries),
        }
        described = store.describe()
        store.close()
    print(
        f"FAISS flat, {n_chunks:,} chunks ({described.get('lexical', {})}) from {args.copies} x QMSum, built in "
        f"{built:.0f} s; {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}; {args.queries} queries one at a time"
    )
    print(f"{'method':30} {'median ms':>10} {'p90 ms':>8} {'x dense':>8}")
    for name, (median, p90) in rows.items():
        base = rows[name.rsplit(",", 1)[0] + ", dense"][0]
        print(f"{name:30} {median:10.1f} {p90:8.1f} {median / base:8.2f}")


if __name__ == "__main__":
    main()
