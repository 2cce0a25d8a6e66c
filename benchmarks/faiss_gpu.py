"""FAISS on the GPU, proven: the store's GPU search path run for real against CPU FAISS, with timings and evidence.

Needs a GPU build of faiss (for CUDA 13: `faiss-cuda==1.14.1.post4`, whose `nvidia-cublas`/`nvidia-cuda-runtime`
needs are met by torch's CUDA 13 wheels). Two parts, random L2-normalised vectors (seeded):

1. The store: a `FaissStore` (SQLite + exact inner-product index) of `--store-vectors` chunks, opened twice read-only,
   once with `use_gpu=False` and once with `use_gpu=True`; `search_many` over `--queries` queries must return the
   same top-k (ids equal wherever the scores are not tied within 1e-5). Evidence: `faiss.get_num_gpus()`, the
   store's `uses_gpu`, the type of its GPU index, GPU memory in use before and after (`nvidia-smi`), timings.
2. The raw index at `--vectors` vectors: `IndexFlatIP` moved to the GPU (`index_cpu_to_gpu`) and back
   (`index_gpu_to_cpu`): the copy back holds the same vectors bit for bit, and all three indexes give the same top-k.

    PYTHONPATH=. python benchmarks/faiss_gpu.py --out /tmp/faiss [--vectors 2000000] [--store-vectors 200000]
    PYTHONPATH=. python benchmarks/faiss_gpu.py --smoke --out /tmp/faiss-smoke     # CPU faiss: the CPU half only
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from tempscale_rag.stores import ChunkRecord, FaissSettings
from tempscale_rag.stores.faiss import FaissStore, faiss_gpu_count


def log(line: str, sink: list[str]) -> None:
    print(line, flush=True)
    sink.append(line)


def gpu_memory_mib() -> list[int]:
    """Memory in use on each GPU (MiB) as nvidia-smi reports it: faiss allocates outside torch's caching allocator."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [int(x) for x in out.split()]


def vectors(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def same_topk(scores_a: np.ndarray, ids_a: np.ndarray, scores_b: np.ndarray, ids_b: np.ndarray) -> dict[str, Any]:
    """Agreement of two top-k results: ids must match wherever neighbouring scores are not tied within 1e-5."""
    gaps = np.abs(np.diff(scores_a, axis=1))
    tied = np.zeros_like(ids_a, dtype=bool)
    tied[:, 1:] |= gaps < 1e-5
    tied[:, :-1] |= gaps < 1e-5
    tied[:, -1] = True  # the k-th hit may tie with the (k+1)-th, which we cannot see
    mismatched = (ids_a != ids_b) & ~tied
    return {
        "queries": int(ids_a.shape[0]),
        "identical_rows": int((ids_a == ids_b).all(axis=1).sum()),
        "untied_mismatches": int(mismatched.sum()),
        "max_score_diff": float(np.abs(scores_a - scores_b).max()),
    }


def store_part(args: argparse.Namespace, out: list[str]) -> dict[str, Any]:
    d, n = args.dim, args.store_vectors
    data = vectors(n, d, 1)
    queries = vectors(args.queries, d, 2)
    result: dict[str, Any] = {"vectors": n, "dimension": d, "queries": args.queries, "k": args.k}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        start = time.perf_counter()
        with FaissStore(folder, dimension=d, settings=FaissSettings(), create=True, use_gpu=False) as store:
            step = 20_000
            for s in range(0, n, step):
                store.upsert(
                    [
                        ChunkRecord.create(
                            text=f"chunk {i}",
                            vector=data[i],
                            source=f"doc{i // 100}",
                            position=i % 100,
                            token_length=1,
                            bucket="0-128",
                        )
                        for i in range(s, min(n, s + step))
                    ]
                )
        result["build_s"] = time.perf_counter() - start
        log(f"store: {n} chunks of {d} dims written in {result['build_s']:.1f} s", out)
        with FaissStore(folder, read_only=True, use_gpu=False) as cpu_store:
            start = time.perf_counter()
            cpu_hits = cpu_store.search_many(queries, k=args.k)
            result["cpu_search_s"] = time.perf_counter() - start
        log(f"  CPU store search ({args.queries} queries, k={args.k}): {result['cpu_search_s']:.3f} s", out)
        a_ids = np.array([[h.id for h in q] for q in cpu_hits])
        a_scores = np.array([[h.score for h in q] for q in cpu_hits], dtype=np.float32)
        if faiss_gpu_count() == 0:
            # Still check the comparison itself: the store against numpy's exact inner products.
            exact = queries @ data.T
            top = np.argsort(-exact, axis=1, kind="stable")[:, : args.k]
            names = np.array(
                [
                    ChunkRecord.create(
                        text=f"chunk {i}",
                        vector=data[i],
                        source=f"doc{i // 100}",
                        position=i % 100,
                        token_length=1,
                        bucket="0-128",
                    ).id
                    for i in range(n)
                ]
            )
            result["cpu_vs_numpy"] = same_topk(np.take_along_axis(exact, top, 1), names[top], a_scores, a_ids)
            log(f"  CPU store vs numpy: {result['cpu_vs_numpy']}", out)
            log("  faiss has no GPU support here (faiss.get_num_gpus() == 0): GPU half skipped", out)
            return result
        before = gpu_memory_mib()
        with FaissStore(folder, read_only=True, use_gpu=True) as gpu_store:
            if not gpu_store.uses_gpu:
                raise SystemExit("FaissStore(use_gpu=True) did not select the GPU")
            start = time.perf_counter()
            first = gpu_store.search_many(queries, k=args.k)  # copies the index to the GPU, then searches
            result["gpu_first_search_s"] = time.perf_counter() - start
            during = gpu_memory_mib()
            start = time.perf_counter()
            gpu_hits = gpu_store.search_many(queries, k=args.k)
            result["gpu_search_s"] = time.perf_counter() - start
            result["gpu_index_type"] = type(gpu_store.gpu_index).__name__
            result["uses_gpu"] = gpu_store.uses_gpu
        after = gpu_memory_mib()
        result["gpu_memory_mib"] = {"before": before, "during": during, "after_close": after}
        if [[h.id for h in q] for q in first] != [[h.id for h in q] for q in gpu_hits]:
            raise SystemExit("two GPU searches of the same queries disagree")
        b_ids = np.array([[h.id for h in q] for q in gpu_hits])
        b_scores = np.array([[h.score for h in q] for q in gpu_hits], dtype=np.float32)
        result["agreement"] = same_topk(a_scores, a_ids, b_scores, b_ids)
        log(
            f"  GPU store search: first {result['gpu_first_search_s']:.3f} s (copy + search), then "
            f"{result['gpu_search_s']:.3f} s; index {result['gpu_index_type']}; GPU MiB before/during/after "
            f"{before}/{during}/{after}; agreement {result['agreement']}",
            out,
        )
    return result


def raw_part(args: argparse.Namespace, out: list[str]) -> dict[str, Any]:
    d, n = args.dim, args.vectors
    data = vectors(n, d, 3)
    queries = vectors(args.queries, d, 4)
    cpu = faiss.IndexFlatIP(d)
    cpu.add(data)
    start = time.perf_counter()
    cpu_scores, cpu_ids = cpu.search(queries, args.k)
    result: dict[str, Any] = {"vectors": n, "cpu_search_s": time.perf_counter() - start}
    log(f"raw IndexFlatIP: {n} x {d}; CPU search {result['cpu_search_s']:.3f} s", out)
    if faiss_gpu_count() == 0:
        log("  faiss has no GPU support here: GPU half skipped", out)
        return result
    res = faiss.StandardGpuResources()
    before = gpu_memory_mib()
    start = time.perf_counter()
    gpu = faiss.index_cpu_to_gpu(res, 0, cpu)
    result["to_gpu_s"] = time.perf_counter() - start
    during = gpu_memory_mib()
    gpu.search(queries[:10], args.k)  # warm-up
    start = time.perf_counter()
    gpu_scores, gpu_ids = gpu.search(queries, args.k)
    result["gpu_search_s"] = time.perf_counter() - start
    start = time.perf_counter()
    back = faiss.index_gpu_to_cpu(gpu)
    result["to_cpu_s"] = time.perf_counter() - start
    result["back_type"] = type(back).__name__
    result["back_vectors_identical"] = bool(np.array_equal(back.reconstruct_n(0, n), data))
    back_scores, back_ids = back.search(queries, args.k)
    result["gpu_vs_cpu"] = same_topk(cpu_scores, cpu_ids, gpu_scores, gpu_ids)
    result["back_vs_cpu_identical"] = bool(
        np.array_equal(back_ids, cpu_ids) and np.array_equal(back_scores, cpu_scores)
    )
    result["gpu_memory_mib"] = {"before": before, "with_index": during}
    result["speedup"] = result["cpu_search_s"] / result["gpu_search_s"]
    log(
        f"  to GPU {result['to_gpu_s']:.2f} s (GPU MiB {before} -> {during}); "
        f"GPU search {result['gpu_search_s']:.4f} s ({result['speedup']:.0f}x CPU); "
        f"back to CPU {result['to_cpu_s']:.2f} s as {result['back_type']}, vectors "
        f"identical {result['back_vectors_identical']}, search identical to CPU {result['back_vs_cpu_identical']}; "
        f"GPU vs CPU {result['gpu_vs_cpu']}",
        out,
    )
    del gpu
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--vectors", type=int, default=2_000_000, help="raw index size")
    parser.add_argument("--store-vectors", type=int, default=200_000, help="FaissStore size")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU faiss runs the CPU half only)")
    args = parser.parse_args()
    if args.smoke:
        args.vectors, args.store_vectors, args.queries = 5_000, 2_000, 50
    out: list[str] = []
    env = {
        "faiss": faiss.__version__,
        "faiss_gpus": faiss_gpu_count(),
        "gpu_memory_mib": gpu_memory_mib(),
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    log(f"{env}", out)
    if not args.smoke and env["faiss_gpus"] == 0:
        sys.exit("this faiss has no GPU support (faiss.get_num_gpus() == 0): install a GPU wheel, or use --smoke")
    results = {"env": env, "store": store_part(args, out), "raw": raw_part(args, out)}
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "faiss_gpu.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    (folder / "faiss_gpu.log").write_text("\n".join(out) + "\n", encoding="utf-8")
    agreement = results["store"].get("agreement", results["store"].get("cpu_vs_numpy", {}))
    if agreement.get("untied_mismatches", 0) or results["raw"].get("gpu_vs_cpu", {}).get("untied_mismatches", 0):
        sys.exit("GPU and CPU top-k disagree beyond ties")
    print(f"wrote {folder / 'faiss_gpu.json'}")


if __name__ == "__main__":
    main()
