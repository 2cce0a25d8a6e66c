"""Search latency: plain top-k chunk search vs document ranking (every aggregation), FAISS flat and Qdrant local mode.

The corpus is synthetic so that the benchmark needs no model and builds in minutes: documents of realistic length
(log-normal, median ~6,000 tokens) chunked at 128, 256 and 512 tokens, each chunk a random unit vector of dimension 384
near its document's topic. Queries are noisy copies of random chunks. Every timing is one query at a time (latency),
median over `--queries` queries, after one warm-up query per method (the first document search builds the in-memory
grouping of the chunks, reported separately as "first call").

Qdrant local mode stores each point with its own SQLite commit when it has a folder, which makes a 200k-point on-disk
build take hours; the Qdrant index is therefore built in local mode's in-memory storage (`:memory:`, the same search
code), and the on-disk write rate is measured on a small sample and reported.

    python benchmarks/search_documents.py [--chunks 200000] [--qdrant-chunks 200000] [--queries 50]
"""

from __future__ import annotations

import argparse
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

from tempscale_rag.ranking import search_documents  # noqa: E402
from tempscale_rag.ranking.documents import DOC_SCORES  # noqa: E402
from tempscale_rag.stores import ChunkRecord, FaissSettings, VectorStore  # noqa: E402
from tempscale_rag.stores.faiss import FaissStore  # noqa: E402
from tempscale_rag.stores.qdrant import MEMORY, QdrantStore  # noqa: E402

DIM = 384
SIZES = (128, 256, 512)
K = 10


def corpus(n_chunks: int, seed: int = 0) -> list[list[ChunkRecord]]:
    """Documents (lists of records) until about `n_chunks` chunks in total."""
    rng = np.random.default_rng(seed)
    documents: list[list[ChunkRecord]] = []
    total = 0
    while total < n_chunks:
        tokens = int(np.clip(rng.lognormal(np.log(6000), 0.6), 300, 60000))
        counts = [max(1, -(-tokens // size)) for size in SIZES]
        n = min(sum(counts), n_chunks - total)
        source = f"docs/{len(documents):05d}.txt"
        topic = rng.standard_normal(DIM).astype(np.float32)
        topic /= np.linalg.norm(topic)
        vectors = rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM) + 0.7 * topic
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        sizes = np.repeat(SIZES, counts)[:n]
        documents.append(
            [
                ChunkRecord(
                    id=f"{len(documents):05d}-{i:05d}",
                    text=f"chunk {i} of {source}",
                    vector=vectors[i],
                    source=source,
                    position=i,
                    token_length=int(sizes[i]),
                    bucket=str(sizes[i]),
                    metadata={"chunk_tokens": int(sizes[i])},
                )
                for i in range(n)
            ]
        )
        total += n
    return documents


def queries(documents: list[list[ChunkRecord]], n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        records = documents[int(rng.integers(len(documents)))]
        vector = records[int(rng.integers(len(records)))].vector + rng.standard_normal(DIM).astype(np.float32) * 0.05
        rows.append(vector / np.linalg.norm(vector))
    return np.asarray(rows, dtype=np.float32)


def median_ms(call: Callable[[np.ndarray], object], vectors: np.ndarray) -> tuple[float, float]:
    """(first call ms, median ms of the following calls); the first call is the warm-up."""
    start = time.perf_counter()
    call(vectors[0])
    first = (time.perf_counter() - start) * 1000
    times = []
    for vector in vectors[1:]:
        start = time.perf_counter()
        call(vector)
        times.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(times)


def time_store(name: str, store: VectorStore, vectors: np.ndarray, lines: list[str]) -> None:
    first, plain = median_ms(lambda q: store.search(q, K), vectors)
    lines.append(f"| {name} | top-{K} chunks (`search`) | {plain:.1f} | 1.00 | {first:.0f} |")
    print(lines[-1], flush=True)
    for method in DOC_SCORES:
        first, ms = median_ms(lambda q, m=method: search_documents(store, q, K, scoring=m, evidence=3), vectors)
        lines.append(f"| {name} | top-{K} documents, `{method}` | {ms:.1f} | {ms / plain:.2f} | {first:.0f} |")
        print(lines[-1], flush=True)


def qdrant_disk_rate(documents: list[list[ChunkRecord]], n: int) -> float:
    """Points per second written by Qdrant's on-disk local mode (one SQLite commit per point)."""
    records = [r for records in documents for r in records][:n]
    with tempfile.TemporaryDirectory() as folder, QdrantStore(dimension=DIM, path=Path(folder) / "q") as store:
        start = time.perf_counter()
        store.upsert(records)
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=200_000, help="chunks in the FAISS index")
    parser.add_argument("--qdrant-chunks", type=int, default=200_000, help="chunks in the Qdrant local index")
    parser.add_argument("--queries", type=int, default=50, help="timed queries per method (plus one warm-up)")
    parser.add_argument("--qdrant-distance", default="cosine", choices=["cosine", "dot"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search_documents_cpu.log")
    args = parser.parse_args()

    lines = [
        "# Document ranking vs plain chunk search (CPU, one query at a time, median ms)",
        "",
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        f"command: python benchmarks/search_documents.py --chunks {args.chunks} --qdrant-chunks {args.qdrant_chunks} "
        f"--queries {args.queries} --qdrant-distance {args.qdrant_distance}",
        "",
    ]
    documents = corpus(max(args.chunks, args.qdrant_chunks))
    vectors = queries(documents, args.queries + 1)
    table = ["| store | search | median ms | x plain | first call ms |", "|---|---|---:|---:|---:|"]

    with tempfile.TemporaryDirectory() as folder:
        subset = _take(documents, args.chunks)
        start = time.perf_counter()
        with FaissStore(Path(folder) / "faiss", dimension=DIM, settings=FaissSettings(index="flat"), create=True) as s:
            for records in subset:
                s.replace_source(records[0].source, "fp", records)
        build = time.perf_counter() - start
        with FaissStore(Path(folder) / "faiss", read_only=True) as store:
            lines.append(
                f"FAISS flat: {store.count()} chunks, {len(subset)} documents, sizes {SIZES}; "
                f"built in {build:.0f} s (replace_source per document)"
            )
            print(lines[-1], flush=True)
            time_store("FAISS flat", store, vectors, table)

    subset = _take(documents, args.qdrant_chunks)
    start = time.perf_counter()
    with QdrantStore(dimension=DIM, path=MEMORY, distance=args.qdrant_distance, batch_size=2048) as store:
        records = [r for records in subset for r in records]
        for begin in range(0, len(records), 25_000):
            store.upsert(records[begin : begin + 25_000])
        build = time.perf_counter() - start
        lines.append(
            f"Qdrant local (in memory, {args.qdrant_distance}): {store.count()} chunks, {len(subset)} documents; "
            f"built in {build:.0f} s (upsert, 25,000 per call)"
        )
        print(lines[-1], flush=True)
        time_store(f"Qdrant local {args.qdrant_distance}", store, vectors, table)
    rate = qdrant_disk_rate(documents, 500)
    lines.append(f"Qdrant local on disk writes {rate:.0f} points/s here (one SQLite commit per point).")
    lines += ["", *table, ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


def _take(documents: list[list[ChunkRecord]], n_chunks: int) -> list[list[ChunkRecord]]:
    out, total = [], 0
    for records in documents:
        if total >= n_chunks:
            break
        out.append(records[: n_chunks - total])
        total += len(out[-1])
    return out


if __name__ == "__main__":
    main()
