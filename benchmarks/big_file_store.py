"""Peak memory of the store alone while one big source is written batch by batch (issue 24, point 3).

`big_file.py` measures `tempscale-rag index` end to end, which on a 2-core CPU takes about 2 minutes per MB of text
even with the model stubbed. This measures only the store's part of a big file at the full scale, in minutes: a fresh
store with the default lexical channel (chunks of 499 tokens and whole documents) gets `--records` synthetic records
(random unit vectors, prose of the four default chunk sizes' lengths) through `replace_source_batches` in batches of
256, then `commit()` and `close()`, as the indexer does for a big file. A 50 MB text file at the default sizes
(24,48,192,499) makes about 600,000 chunks (`benchmarks/results/big_file_cpu.json`: 238,556 for 20 MB).

`--store faiss` (default): `FaissStore`, flat; closing writes `vectors.faiss`. `--store qdrant`: `EdgeStore` (Qdrant
Edge, `tempscale-rag index --store qdrant`'s default engine); closing runs Qdrant's optimizers (segment merging, HNSW
for the chunk collection), which happen in Qdrant's Rust engine, so the peak is reported before (`peak_write_rss_mb`)
and after them (`peak_rss_mb`).

Each run is a fresh child process; it reports its peak RSS (`ru_maxrss`), the RSS before writing (the libraries), the
vectors' size (records x 384 x 4 bytes) and, with `--trace`, tracemalloc's peak of Python allocations.

    nice python benchmarks/big_file_store.py --records 600000 [--store qdrant] [--write-only] [--trace] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_CHILD = r"""
import json, resource, sys, time, tracemalloc
from pathlib import Path
import numpy as np

def rss_mb(field="VmRSS"):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0

folder, records, trace, kind = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
write_only = sys.argv[5] == "1"
from tempscale_rag.config import LexicalSettings
from tempscale_rag.stores.base import ChunkRecord

DIM, SIZES, BATCH = 384, (24, 48, 192, 499), 256
WORDS = ("budget meeting design review team member product remote control battery energy market price survey "
         "user interface button screen voice speech cost plastic rubber fruit shape colour trend").split()

def batches():
    rng = np.random.default_rng(0)
    for start in range(0, records, BATCH):
        rows = min(BATCH, records - start)
        vectors = rng.standard_normal((rows, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        out = []
        for row in range(rows):
            position = start + row
            size = SIZES[position % len(SIZES)]
            text = " ".join(WORDS[(position + i) % len(WORDS)] for i in range(size * 3 // 4))
            out.append(ChunkRecord(id=f"big.txt:{position}", text=text, vector=vectors[row], source="big.txt",
                                   position=position, token_length=size, bucket=str(size),
                                   metadata={"chunk_tokens": size}))
        yield out

before = rss_mb()
if trace:
    tracemalloc.start()
start = time.perf_counter()
lexical = LexicalSettings.for_chunks(499)
if kind == "faiss":
    from tempscale_rag.stores.faiss import FaissStore
    store = FaissStore(folder, dimension=DIM, create=True, use_gpu=False, lexical=lexical)
else:
    from tempscale_rag.stores.qdrant.edge import EdgeStore
    store = EdgeStore(dimension=DIM, path=folder, lexical=lexical)
stored = store.replace_source_batches("big.txt", "f" * 64, batches())
after_write = rss_mb()
# Anonymous memory (Python, the engine's heap) and file-backed pages (mmapped storage the kernel can drop).
anon, file_backed = rss_mb("RssAnon"), rss_mb("RssFile")
peak_write = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
write_seconds = time.perf_counter() - start
store.commit()
if not write_only:
    store.close()
seconds = time.perf_counter() - start
out = {
    "store": kind,
    "records": stored,
    "seconds": round(seconds, 1),
    "write_seconds": round(write_seconds, 1),
    "rss_before_mb": round(before, 1),
    "rss_after_write_mb": round(after_write, 1),
    "rss_anon_after_write_mb": round(anon, 1),
    "rss_file_after_write_mb": round(file_backed, 1),
    "peak_write_rss_mb": round(peak_write, 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "vectors_mb": round(stored * DIM * 4 / 2**20, 1),
    "disk_mb": round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1),
}
if trace:
    out["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
if write_only:
    out["closed"] = False
print(json.dumps(out), flush=True)
if write_only:
    import os
    os._exit(0)  # skip close(): Qdrant Edge's optimizers (HNSW over every chunk) take minutes at this scale
"""


def run(records: int, *, trace: bool, store: str = "faiss", write_only: bool = False) -> dict[str, Any]:
    """Write `records` records into a fresh store in a child process; its measurements."""
    with tempfile.TemporaryDirectory(prefix="big_store_") as work:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                str(Path(work) / "index"),
                str(records),
                "1" if trace else "0",
                store,
                "1" if write_only else "0",
            ],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
        )
    if done.returncode != 0:
        raise SystemExit(f"store run failed ({done.returncode}): {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["peak_minus_before_mb"] = round(result["peak_rss_mb"] - result["rss_before_mb"], 1)
    result["write_peak_minus_before_mb"] = round(result["peak_write_rss_mb"] - result["rss_before_mb"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[600_000], help="Records per run (default 600000).")
    parser.add_argument("--store", choices=("faiss", "qdrant"), default="faiss", help="faiss, or qdrant (Edge).")
    parser.add_argument("--trace", action="store_true", help="Also report tracemalloc's peak (slower).")
    parser.add_argument(
        "--write-only", action="store_true", help="Measure the write and commit(), then exit without close()."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the results to this file.")
    args = parser.parse_args()
    results = []
    for records in args.records:
        row = run(records, trace=args.trace, store=args.store, write_only=args.write_only)
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
