"""FAISS flat, FAISS HNSW, Qdrant Edge and qdrant-client local mode side by side, through the stores' own API.

Data: a realistic synthetic set of unit vectors (default 384-d, the bundled model's size): documents of 50 chunks,
each document near a topic, topics grouped in clusters, so neighbours are structured as real chunk embeddings are
(isotropic random vectors would be the worst case for any graph index): two chunks of one document have a cosine of
about 0.47, of one cluster (20 documents) about 0.39, of different clusters about 0, each +- 0.04. Queries are not
stored chunks: half are a held-out chunk of a stored document (drawn like its chunks, never stored), half the mean of
two held-out chunks of two documents of one cluster (a question between two documents). Their exact top 10 are
near-ties spread over 2.4 documents on average (1.4 and 3.4), as a question's best chunks are in real corpora; the
queries of earlier versions were stored chunks plus a little noise, which every index found (recall 1.0 at 100k).
Every backend gets the same documents through `replace_source` (one call per document, the indexer's path), then:

- insert: chunks per second of the `replace_source` calls (the store's upkeep included: SQLite rows for FAISS,
  document points for Qdrant; making the records is not timed), in wall-clock time and in this process's CPU time
  (`insert cpu/s`: the figure to compare on a machine shared with other jobs);
- build: seconds of the closing commit (FAISS writes its index file, HNSW included; Edge runs its optimizers: segment
  merging and HNSW);
- disk: the index folder's size; open: seconds to open it read-only;
- p50/p95: milliseconds per single-query `search(k=10)`;
- recall@10: against exact top-10 computed here with numpy;
- the HNSW backends are also searched with each `--efs` value (Edge's `hnsw_ef`, FAISS's efSearch): recall against
  latency, the same index.

`edge-engine` is Qdrant Edge's engine alone (1,000-point upserts with a one-key payload, no store upkeep), and
`edge-engine-payload` the same with each chunk's full payload as the store writes it (8 keys), to show what the store
adds: qdrant-edge-py converts a payload value by trying bool, int, float, then str (about 3 us per string value).

qdrant-client's local mode stores one pickled point per SQLite row and scores by brute force: it runs in memory and
only up to `--local-max` chunks (beyond that it is minutes per thousand points on disk and seconds per query); at a
larger size it runs at `--local-max` chunks instead, with its own queries and exact top 10, and its row says so.

Rows are printed and written to `--out` as each backend finishes, so an interrupted run keeps what it measured.

    python benchmarks/qdrant_backends.py --sizes 100000 [1000000] [--dim 384] [--queries 200] [--out results.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tempscale_rag.stores import ChunkRecord, FaissSettings, VectorStore  # noqa: E402
from tempscale_rag.stores.faiss import FaissStore  # noqa: E402
from tempscale_rag.stores.qdrant import MEMORY, QdrantStore  # noqa: E402
from tempscale_rag.stores.qdrant.edge import (  # noqa: E402
    EDGE_FULL_SCAN_THRESHOLD,
    EDGE_HNSW_EF,
    EDGE_HNSW_EF_CONSTRUCT,
    EDGE_HNSW_M,
    EdgeStore,
)

CHUNKS_PER_DOCUMENT = 50
DOCUMENTS_PER_TOPIC_CLUSTER = 20
SPREAD = {"topic": 0.5, "chunk": 1.2}
"""A document's topic is its cluster's centre plus `topic` isotropic noise per dimension; a chunk is its document's
topic plus `chunk` noise (`--topic-spread`, `--chunk-spread`)."""
K = 10


def document_topic(seed: int, dim: int, doc: int) -> tuple[np.ndarray, np.random.Generator]:
    """Document `doc`'s topic vector, and the generator its chunks are drawn from next."""
    cluster = np.random.default_rng([seed, 0, doc // DOCUMENTS_PER_TOPIC_CLUSTER]).standard_normal(dim)
    rng = np.random.default_rng([seed, 1, doc])
    return cluster + SPREAD["topic"] * rng.standard_normal(dim), rng


def document_vectors(seed: int, n_docs: int, dim: int, doc: int) -> np.ndarray:
    """The chunk vectors of document `doc` (deterministic: the same for every backend, regenerated on demand)."""
    topic, rng = document_topic(seed, dim, doc)
    vectors = topic + SPREAD["chunk"] * rng.standard_normal((CHUNKS_PER_DOCUMENT, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def documents(seed: int, n: int, dim: int) -> Iterator[tuple[str, list[ChunkRecord]]]:
    """(source, records) of every document of an `n`-chunk corpus."""
    n_docs = n // CHUNKS_PER_DOCUMENT
    for doc in range(n_docs):
        source = f"docs/d{doc:07d}.md"
        vectors = document_vectors(seed, n_docs, dim, doc)
        yield (
            source,
            [
                ChunkRecord(
                    id=f"{doc:07d}-{j:03d}",
                    text=f"chunk {j} of document {doc}",
                    vector=vector,
                    source=source,
                    position=j,
                    token_length=128,
                    bucket="128-256",
                    metadata={"chunk_tokens": 128},
                )
                for j, vector in enumerate(vectors)
            ],
        )


def held_out_queries(seed: int, n: int, dim: int, n_queries: int) -> np.ndarray:
    """Queries that are no stored chunk: held-out chunks of stored documents, and means of two (one cluster)."""
    n_docs = n // CHUNKS_PER_DOCUMENT
    rng = np.random.default_rng([seed, 2])
    queries = np.empty((n_queries, dim))
    for q in range(n_queries):
        doc = int(rng.integers(n_docs))
        query = document_topic(seed, dim, doc)[0] + SPREAD["chunk"] * rng.standard_normal(dim)
        if q % 2:
            # Another document of the same topic cluster (or any other, in a corpus smaller than one cluster).
            first = doc - doc % DOCUMENTS_PER_TOPIC_CLUSTER
            other = int(rng.integers(first, min(first + DOCUMENTS_PER_TOPIC_CLUSTER, n_docs)))
            other_chunk = document_topic(seed, dim, other)[0] + SPREAD["chunk"] * rng.standard_normal(dim)
            query = query / np.linalg.norm(query) + other_chunk / np.linalg.norm(other_chunk)
        queries[q] = query
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def queries_and_truth(seed: int, n: int, dim: int, n_queries: int) -> tuple[np.ndarray, list[list[str]]]:
    """The queries, and their exact top-10 chunk ids (brute force, a block of documents at a time)."""
    n_docs = n // CHUNKS_PER_DOCUMENT
    queries = held_out_queries(seed, n, dim, n_queries)
    best_scores = np.full((n_queries, K), -np.inf, dtype=np.float32)
    best_ids = np.full((n_queries, K), "", dtype=object)
    block_docs = 200
    for start in range(0, n_docs, block_docs):
        docs = range(start, min(start + block_docs, n_docs))
        vectors = np.concatenate([document_vectors(seed, n_docs, dim, d) for d in docs])
        ids = np.asarray([f"{d:07d}-{j:03d}" for d in docs for j in range(CHUNKS_PER_DOCUMENT)], dtype=object)
        scores = np.concatenate([best_scores, queries @ vectors.T], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids, (n_queries, ids.size))], axis=1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        best_scores = np.take_along_axis(scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    return queries, [list(row) for row in best_ids]


def folder_bytes(folder: Path) -> int:
    """Bytes allocated on disk (Edge preallocates sparse WAL and segment files: their apparent size overstates)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def timed_searches(
    search: Callable[[np.ndarray], list[str]], queries: np.ndarray, truth: list[list[str]]
) -> tuple[list[float], float]:
    """Milliseconds per single query, and recall@10 against `truth` (after one warm-up query)."""
    search(queries[0])  # first-touch of mmap'd files
    latencies, recalls = [], []
    for query, want in zip(queries, truth, strict=True):
        start = time.perf_counter()
        found = search(query)
        latencies.append(1000 * (time.perf_counter() - start))
        recalls.append(len(set(found) & set(want)) / K)
    return latencies, float(np.mean(recalls))


def sweep_row(name: str, n: int, ef: int, latencies: list[float], recall: float) -> dict[str, Any]:
    return {
        "backend": name,
        "chunks": n,
        "ef": ef,
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "recall_at_10": round(recall, 4),
    }


def measure_engine(
    n: int, args: argparse.Namespace, queries: np.ndarray, truth: list[list[str]], *, full_payload: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Qdrant Edge's engine alone: 1,000-point upserts with a one-key payload (or the store's), its HNSW settings."""
    import uuid

    import qdrant_edge as qe

    from tempscale_rag.stores.qdrant.points import chunk_point

    folder = Path(args.workdir) / f"edge-engine-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=args.dim, distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(
            m=EDGE_HNSW_M, ef_construct=EDGE_HNSW_EF_CONSTRUCT, full_scan_threshold=EDGE_FULL_SCAN_THRESHOLD
        ),
    )
    shard = qe.EdgeShard.create(str(folder), config)
    names: dict[str, str] = {}
    batch: list[Any] = []
    insert_s = insert_cpu = 0.0
    for source, records in documents(args.seed, n, args.dim):
        for record in records:
            point = str(uuid.uuid5(uuid.NAMESPACE_URL, record.id))
            names[point] = record.id
            payload = chunk_point(record).payload if full_payload else {"source": source}
            batch.append((point, record.vector, payload))
        if len(batch) >= 1000 or len(names) == n:
            start, cpu = time.perf_counter(), time.process_time()
            points = [qe.Point(i, v.tolist(), p) for i, v, p in batch]
            shard.update(qe.UpdateOperation.upsert_points(points))
            insert_s += time.perf_counter() - start
            insert_cpu += time.process_time() - cpu
            batch = []
    start = time.perf_counter()
    shard.optimize()
    shard.flush()
    shard.close()
    build_s = time.perf_counter() - start
    size = folder_bytes(folder)
    start = time.perf_counter()
    shard = qe.EdgeShard.load(str(folder))
    open_s = time.perf_counter() - start
    segments = int(shard.info().segments_count)

    def searcher(ef: int) -> Callable[[np.ndarray], list[str]]:
        params = qe.SearchParams(hnsw_ef=ef)

        def search(query: np.ndarray) -> list[str]:
            hits = shard.query(qe.QueryRequest(limit=K, query=qe.Query.Nearest(query.tolist()), params=params))
            return [names[str(h.id)] for h in hits]

        return search

    latencies, recall = timed_searches(searcher(EDGE_HNSW_EF), queries, truth)
    name = "qdrant-edge engine, payloads" if full_payload else "qdrant-edge engine only"
    sweep = [sweep_row(name, n, ef, *timed_searches(searcher(ef), queries, truth)) for ef in args.efs]
    shard.close()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    row = summary(name, n, insert_s, insert_cpu, build_s, size, open_s, latencies, recall)
    row["segments"] = segments
    return row, sweep


def summary(
    name: str,
    n: int,
    insert_s: float,
    insert_cpu: float,
    build_s: float,
    size: int,
    open_s: float,
    latencies: list[float],
    recall: float,
) -> dict[str, Any]:
    return {
        "backend": name,
        "chunks": n,
        "insert_per_s": round(n / insert_s),
        "insert_cpu_per_s": round(n / insert_cpu),
        "build_s": round(build_s, 2),
        "disk_mb": round(size / 2**20, 1),
        "open_s": round(open_s, 3),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "recall_at_10": round(recall, 4),
    }


BACKENDS: dict[str, tuple[Callable[[Path, int], VectorStore], Callable[[Path, int], VectorStore]]] = {
    "faiss-flat": (
        lambda f, d: FaissStore(f, dimension=d, create=True),
        lambda f, d: FaissStore(f, dimension=d, read_only=True),
    ),
    "faiss-hnsw": (
        lambda f, d: FaissStore(f, dimension=d, settings=FaissSettings(index="hnsw"), create=True),
        lambda f, d: FaissStore(f, dimension=d, settings=FaissSettings(index="hnsw"), read_only=True),
    ),
    "qdrant-edge": (
        lambda f, d: EdgeStore(dimension=d, path=f),
        lambda f, d: EdgeStore(dimension=d, path=f, read_only=True),
    ),
}


def set_faiss_threads(threads: int | None) -> None:
    if threads is not None:
        import faiss

        faiss.omp_set_num_threads(threads)


def store_search(store: VectorStore) -> Callable[[np.ndarray], list[str]]:
    return lambda query: [h.id for h in store.search(query, k=K)]


def ef_sweep(
    name: str, n: int, reader: VectorStore, folder: Path, args: argparse.Namespace, queries: np.ndarray, truth: list
) -> list[dict[str, Any]]:
    """The HNSW backends searched with each `--efs` value (the same index); other backends: nothing."""
    rows = []
    for ef in args.efs:
        if name == "qdrant-edge":
            with EdgeStore(dimension=args.dim, path=folder, read_only=True, hnsw_ef=ef) as edge:
                rows.append(sweep_row(name, n, ef, *timed_searches(store_search(edge), queries, truth)))
        elif name == "faiss-hnsw" and isinstance(reader, FaissStore):
            # FaissStore searches with the efSearch recorded in the index's settings (fixed when it was built);
            # the benchmark sets it on the open store's vectors instead of rebuilding the index per value.
            vectors: Any = reader._vectors
            vectors._settings = vectors._settings.model_copy(update={"hnsw_ef_search": ef})
            rows.append(sweep_row(name, n, ef, *timed_searches(store_search(reader), queries, truth)))
    return rows


def measure(
    name: str, n: int, args: argparse.Namespace, queries: np.ndarray, truth: list[list[str]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    folder = Path(args.workdir) / f"{name}-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    memory = name == "qdrant-local"
    if name.startswith("faiss"):
        set_faiss_threads(args.faiss_build_threads)
    store: VectorStore = QdrantStore(dimension=args.dim, path=MEMORY) if memory else BACKENDS[name][0](folder, args.dim)
    inserted = 0
    insert_s = insert_cpu = 0.0
    for source, records in documents(args.seed, n, args.dim):
        start, cpu = time.perf_counter(), time.process_time()
        store.replace_source(source, "v1", records)
        insert_s += time.perf_counter() - start
        insert_cpu += time.process_time() - cpu
        inserted += len(records)
        if inserted % 100_000 == 0:
            print(f"  {name}: {inserted} chunks, {inserted / insert_s:.0f}/s ({time.strftime('%H:%M:%S')})", flush=True)
    if memory:
        build_s, size, open_s, reader = 0.0, 0, 0.0, store
    else:
        start = time.perf_counter()
        store.close()
        build_s = time.perf_counter() - start
        print(f"  {name}: closed (build) in {build_s:.1f} s ({time.strftime('%H:%M:%S')})", flush=True)
        size = folder_bytes(folder)
        gc.collect()
        start = time.perf_counter()
        reader = BACKENDS[name][1](folder, args.dim)
        open_s = time.perf_counter() - start
    set_faiss_threads(args.faiss_threads)
    latencies, recall = timed_searches(store_search(reader), queries, truth)
    segments = reader.edge.segment_count(reader.collection) if isinstance(reader, EdgeStore) else None
    if isinstance(reader, EdgeStore):
        reader.close()  # Edge opens an index in one place at a time: the sweep reopens it with each ef
    sweep = [] if memory else ef_sweep(name, n, reader, folder, args, queries, truth)
    if not isinstance(reader, EdgeStore):
        reader.close()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    label = name
    if memory:
        label += " (in memory)"
    row = summary(label, n, insert_s, insert_cpu, build_s, size, open_s, latencies, recall)
    if segments is not None:
        row["segments"] = segments
    return row, sweep


def print_tables(rows: list[dict[str, Any]], sweep: list[dict[str, Any]]) -> None:
    header = f"{'backend':44} {'chunks':>8} {'insert/s':>9} {'cpu/s':>7} {'build s':>8} {'disk MB':>8} {'open s':>7} "
    print("\n" + header + f"{'p50 ms':>7} {'p95 ms':>7} {'recall@10':>9}")
    for r in rows:
        print(
            f"{r['backend']:44} {r['chunks']:>8} {r['insert_per_s']:>9} {r['insert_cpu_per_s']:>7} {r['build_s']:>8} "
            f"{r['disk_mb']:>8} {r['open_s']:>7} {r['p50_ms']:>7} {r['p95_ms']:>7} {r['recall_at_10']:>9}"
        )
    if sweep:
        print(
            f"\n{'backend (HNSW ef while searching)':44} {'chunks':>8} {'ef':>5} "
            f"{'p50 ms':>7} {'p95 ms':>7} {'recall@10':>9}"
        )
        for r in sweep:
            print(
                f"{r['backend']:44} {r['chunks']:>8} {r['ef']:>5} {r['p50_ms']:>7} {r['p95_ms']:>7} "
                f"{r['recall_at_10']:>9}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="chunk counts (multiples of 50)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["faiss-flat", "faiss-hnsw", "qdrant-edge", "edge-engine", "edge-engine-payload", "qdrant-local"],
        metavar="NAME",
        help="faiss-flat, faiss-hnsw, qdrant-edge (the store), edge-engine (EdgeShard alone), edge-engine-payload "
        "(EdgeShard alone with the store's chunk payloads), qdrant-local; run in the order given",
    )
    parser.add_argument(
        "--efs",
        type=int,
        nargs="*",
        default=[64, 128, 256, 512, 1024],
        help="HNSW candidate lists to search with as well (Edge hnsw_ef, FAISS efSearch); none: skip the sweep",
    )
    parser.add_argument(
        "--local-max", type=int, default=20_000, help="largest size run on qdrant-client local mode (larger: this)"
    )
    parser.add_argument("--workdir", default=None, help="where the indexes are built (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the indexes")
    parser.add_argument("--out", default=None, help="write the rows as JSON here (after every backend)")
    parser.add_argument(
        "--faiss-threads",
        type=int,
        default=None,
        help="FAISS OpenMP threads while searching (default: FAISS's own; on a busy machine its spinning threads "
        "slow single queries)",
    )
    parser.add_argument(
        "--faiss-build-threads",
        type=int,
        default=None,
        help="FAISS OpenMP threads while inserting and building (default: --faiss-threads; Edge builds its HNSW "
        "graphs on every core)",
    )
    parser.add_argument("--topic-spread", type=float, default=SPREAD["topic"], help="see SPREAD")
    parser.add_argument("--chunk-spread", type=float, default=SPREAD["chunk"], help="see SPREAD")
    args = parser.parse_args()
    SPREAD.update(topic=args.topic_spread, chunk=args.chunk_spread)
    if args.faiss_build_threads is None:
        args.faiss_build_threads = args.faiss_threads
    if args.workdir is None:
        args.workdir = tempfile.mkdtemp(prefix="qdrant-backends-")
    setup = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
        f"Edge HNSW m={EDGE_HNSW_M} ef_construct={EDGE_HNSW_EF_CONSTRUCT} ef={EDGE_HNSW_EF} "
        f"full_scan_threshold={EDGE_FULL_SCAN_THRESHOLD} KB; FAISS HNSW: FaissSettings() defaults "
        f"(m={FaissSettings().hnsw_m} ef_construction={FaissSettings().hnsw_ef_construction} "
        f"ef_search={FaissSettings().hnsw_ef_search}); FAISS threads: {args.faiss_threads or 'default'} searching, "
        f"{args.faiss_build_threads or 'default'} building"
    )
    print(f"# {setup}\n# started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {os.getloadavg()}", flush=True)
    rows: list[dict[str, Any]] = []
    sweep: list[dict[str, Any]] = []
    for n in args.sizes:
        queries, truth = queries_and_truth(args.seed, n, args.dim, args.queries)
        print(f"# {n} chunks: {len(queries)} queries and their exact top {K} ready ({time.strftime('%H:%M:%S')})")
        for name in args.backends:
            size = n
            if name == "qdrant-local" and n > args.local_max:
                size = args.local_max
                print(f"  qdrant-local: run at {size} chunks instead of {n} (> --local-max; see the docstring)")
            print(f"  {name}: {size} chunks, started {time.strftime('%H:%M:%S')}", flush=True)
            wanted_queries, wanted_truth = (
                (queries, truth) if size == n else queries_and_truth(args.seed, size, args.dim, args.queries)
            )
            if name in ("edge-engine", "edge-engine-payload"):
                row, more = measure_engine(
                    size, args, wanted_queries, wanted_truth, full_payload=name == "edge-engine-payload"
                )
            else:
                row, more = measure(name, size, args, wanted_queries, wanted_truth)
            if size != n:
                row["note"] = f"run at {size} chunks: local mode cannot hold {n} (see the docstring)"
            row["load_average"] = [round(x, 1) for x in os.getloadavg()]
            rows.append(row)
            sweep.extend(more)
            print(json.dumps(row), flush=True)
            for line in more:
                print(json.dumps(line), flush=True)
            if args.out:
                result = {"setup": setup, "rows": rows, "ef_sweep": sweep}
                Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_tables(rows, sweep)


if __name__ == "__main__":
    main()
