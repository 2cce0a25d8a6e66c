"""Why does a Qdrant Edge query take ~15 ms at 1M chunks whatever its HNSW ef (issue 26)?

At 100k chunks Edge's engine answers in 0.3-0.6 ms and its latency grows with ef; at 1M it was 15-20 ms at every ef
from 64 to 1024 (`benchmarks/results/qdrant_backends_1m.log`), while FAISS HNSW on the same vectors took 0.7-3.5 ms.
This probe builds one Edge shard (Edge's engine alone, one-key payloads, the store's HNSW settings) from the
benchmark's synthetic chunk vectors, then prints what the shard reports (segments, points, indexed vectors) and the
query latency under several search settings: Edge's default search pool, one search thread, the pool pinned to one
core, and the process limited to two cores (as on the development machine).

Needs only numpy and qdrant-edge-py, so it runs on a machine without the package's other dependencies:

    python research/edge1m/probe.py --n 1000000 [--queries 200] [--workdir /tmp/probe] [--build-cores 0-15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

CHUNKS_PER_DOCUMENT = 50
DOCUMENTS_PER_CLUSTER = 20
TOPIC, CHUNK = 0.5, 1.2
K = 10


def document_topic(seed: int, dim: int, doc: int) -> tuple[np.ndarray, np.random.Generator]:
    """As `benchmarks/qdrant_backends.py`: a document's topic, and the generator of its chunks."""
    cluster = np.random.default_rng([seed, 0, doc // DOCUMENTS_PER_CLUSTER]).standard_normal(dim)
    rng = np.random.default_rng([seed, 1, doc])
    return cluster + TOPIC * rng.standard_normal(dim), rng


def document_vectors(seed: int, dim: int, doc: int) -> np.ndarray:
    topic, rng = document_topic(seed, dim, doc)
    vectors = topic + CHUNK * rng.standard_normal((CHUNKS_PER_DOCUMENT, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def queries_and_truth(seed: int, n: int, dim: int, count: int) -> tuple[np.ndarray, list[set[int]]]:
    """Held-out queries (as the benchmark's), and their exact top 10 as chunk numbers."""
    n_docs = n // CHUNKS_PER_DOCUMENT
    rng = np.random.default_rng([seed, 2])
    queries = np.empty((count, dim))
    for q in range(count):
        doc = int(rng.integers(n_docs))
        query = document_topic(seed, dim, doc)[0] + CHUNK * rng.standard_normal(dim)
        if q % 2:
            first = doc - doc % DOCUMENTS_PER_CLUSTER
            other = int(rng.integers(first, min(first + DOCUMENTS_PER_CLUSTER, n_docs)))
            other_chunk = document_topic(seed, dim, other)[0] + CHUNK * rng.standard_normal(dim)
            query = query / np.linalg.norm(query) + other_chunk / np.linalg.norm(other_chunk)
        queries[q] = query
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    best = np.full((count, K), -np.inf, dtype=np.float32)
    best_ids = np.zeros((count, K), dtype=np.int64)
    for start in range(0, n_docs, 500):
        docs = range(start, min(start + 500, n_docs))
        vectors = np.concatenate([document_vectors(seed, dim, d) for d in docs])
        scores = np.concatenate([best, queries @ vectors.T], axis=1)
        numbers = np.arange(vectors.shape[0]) + start * CHUNKS_PER_DOCUMENT
        ids = np.concatenate([best_ids, np.broadcast_to(numbers, (count, len(vectors)))], axis=1)
        top = np.argsort(-scores, axis=1)[:, :K]
        best, best_ids = np.take_along_axis(scores, top, axis=1), np.take_along_axis(ids, top, axis=1)
    return queries, [set(row.tolist()) for row in best_ids]


def point_id(number: int) -> str:
    return str(uuid.UUID(int=number + 1))


def build(folder: Path, n: int, dim: int, seed: int, hnsw: dict[str, Any]) -> dict[str, Any]:
    shutil.rmtree(folder, ignore_errors=True)
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(full_scan_threshold=10_000, **hnsw),
    )
    shard = qe.EdgeShard.create(str(folder), config)
    start = time.perf_counter()
    for doc in range(n // CHUNKS_PER_DOCUMENT):
        base = doc * CHUNKS_PER_DOCUMENT
        vectors = document_vectors(seed, dim, doc)
        points = [qe.Point(point_id(base + j), v.tolist(), {"source": f"d{doc}"}) for j, v in enumerate(vectors)]
        shard.update(qe.UpdateOperation.upsert_points(points))
    insert_s = time.perf_counter() - start
    start = time.perf_counter()
    shard.optimize()
    shard.flush()
    shard.close()
    return {"insert_per_s": round(n / insert_s), "build_s": round(time.perf_counter() - start, 1)}


def search_rows(
    folder: Path, queries: np.ndarray, truth: list[set[int]], efs: list[int], label: str, **config: Any
) -> list[dict[str, Any]]:
    start = time.perf_counter()
    # Edge's load() needs the vector config beside any setting it is given (and then persists them).
    vectors = qe.EdgeVectorParams(size=queries.shape[1], distance=qe.Distance.Cosine)
    shard = qe.EdgeShard.load(str(folder), qe.EdgeConfig(vectors=vectors, **config) if config else None)
    open_s = time.perf_counter() - start
    info = shard.info()
    rows = []
    for ef in efs:
        params = qe.SearchParams(hnsw_ef=ef) if ef else qe.SearchParams(exact=True)
        latencies, recalls = [], []
        shard.query(qe.QueryRequest(limit=K, query=qe.Query.Nearest(queries[0].tolist()), params=params))
        for query, want in zip(queries, truth, strict=True):
            t = time.perf_counter()
            hits = shard.query(qe.QueryRequest(limit=K, query=qe.Query.Nearest(query.tolist()), params=params))
            latencies.append(1000 * (time.perf_counter() - t))
            recalls.append(len({uuid.UUID(str(h.id)).int - 1 for h in hits} & want) / K)
        rows.append(
            {
                "setting": label,
                "ef": ef or "exact",
                "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                "p95_ms": round(float(np.percentile(latencies, 95)), 2),
                "recall_at_10": round(float(np.mean(recalls)), 4),
                "open_s": round(open_s, 2),
                "segments": info.segments_count,
                "points": info.points_count,
                "indexed_vectors": info.indexed_vectors_count,
                "cpus": len(os.sched_getaffinity(0)),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    shard.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/edge-probe")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construct", type=int, default=100)
    parser.add_argument("--efs", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--search-cores", default="0,1", help="cores the search rows run on (the 2-core machine)")
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, qdrant-edge {getattr(qe, '__version__', '?')}", flush=True)
    folder = Path(args.workdir) / f"edge-{args.n}-m{args.m}-efc{args.ef_construct}"
    if not args.skip_build:
        built = build(folder, args.n, args.dim, args.seed, {"m": args.m, "ef_construct": args.ef_construct})
        print(json.dumps({"n": args.n, "m": args.m, "ef_construct": args.ef_construct, **built}), flush=True)
    queries, truth = queries_and_truth(args.seed, args.n, args.dim, args.queries)
    os.sched_setaffinity(0, {int(c) for c in args.search_cores.split(",")})
    search_rows(folder, queries, truth, args.efs, "default pool")
    search_rows(folder, queries, truth, args.efs[:2], "1 search thread", max_search_threads=1)
    search_rows(folder, queries, truth, args.efs[:2], "pool pinned to core 0", search_pool_core=0)
    pinned = qe.HnswIndexConfig(
        m=args.m, ef_construct=args.ef_construct, full_scan_threshold=10_000, memory=qe.Memory.Pinned
    )
    search_rows(folder, queries, truth, args.efs[:2], "HNSW graph pinned", hnsw_config=pinned)
    search_rows(folder, queries, truth, [0], "exact")


if __name__ == "__main__":
    main()
