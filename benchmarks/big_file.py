"""Peak memory of `tempscale-rag index` on one big text file, for files of several sizes (issue 24, point 3).

For each size it writes an N-MB text file (deterministic prose-like paragraphs), indexes it with the CLI in a fresh
process at the default settings (or `--sizes`) and reports:

- peak RSS of the index process (`ru_maxrss` of the child, the kernel's VmHWM, plus its RSS sampled every 0.1 s);
- wall time, chunks (vectors) stored and tokens embedded;
- the stored vectors' size (vectors x dimension x 4 bytes: what a search process's FAISS flat index keeps resident)
  and the RSS a process gains by opening the finished index (`FaissStore`, read only), measured;
- `above_baseline_mb`: the peak minus the 1-KB run's peak, which should not grow with the file size if reading,
  splitting, embedding, staging, writing the store and `vectors.faiss` are bounded by a batch (the index process no
  longer holds the vectors: `FaissStore` releases its flat index for a streamed file, `stores/faiss/streaming.py`);
- `within_target`: whether the peak is at most `TARGET_MB` (issue 24's 1.5 GB for a 50 MB file).

A 1-KB file gives the baseline (interpreter, torch, the model). Each run's numbers print as one JSON line; `--json`
writes them all to a file. (`peak_minus_vectors_mb` and `pipeline_mb`, the peak less the vectors the index process
used to hold, are kept for comparison with the rows measured before.)

    nice python benchmarks/big_file.py --mb 2 4 [--sizes 24,48,192,499] [--commit-every 256] [--json out.json]
    nice python benchmarks/big_file.py --stub-model --mb 5 20 50     # the model's arithmetic stubbed out
    nice python benchmarks/big_file.py --stub-model --mb 2 --store qdrant   # on Qdrant Edge
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 1536.0
"""Issue 24's target: a 50 MB file indexes at the default settings with peak RSS <= 1.5 GB."""

_WORDS_TEXT = (
    "the report covers budget meeting design review team member product remote control battery energy market "
    "price survey user interface button screen voice recognition speech market cost plastic rubber fruit shape "
    "colour corporate identity trend fashion younger people older customers functional project manager marketing "
    "industrial designer expert decision agenda minutes evaluation prototype component chip material sample kinetic "
    "solar cell titanium wood sponge scroll wheel menu channel volume power standby television universal advanced"
)


def _vocabulary(rng: random.Random, size: int = 30_000) -> list[str]:
    """The common words, then `size` pronounceable made-up words: a long-document vocabulary for the lexical index."""
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    made = {"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(size * 2)}
    return _WORDS_TEXT.split() + rng.sample(sorted(made), size)


def write_text(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write about `megabytes` MB of paragraphs of sentences; the number of bytes written.

    Words are drawn with Zipf-like frequencies (weight 1/rank) from the common words and 30,000 made-up ones, so
    a big file has a realistic vocabulary for BM25 and the tokenizer, and every paragraph differs.
    """
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    weights = list(itertools.accumulate(1.0 / rank for rank in range(1, len(vocabulary) + 1)))
    target = int(megabytes * 1_000_000)
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        paragraph = 0
        while written < target:
            sentences = []
            for _ in range(rng.randint(2, 8)):
                chosen = rng.choices(vocabulary, cum_weights=weights, k=rng.randint(6, 24))
                sentences.append(" ".join(chosen).capitalize() + ".")
            text = f"Section {paragraph}. " + " ".join(sentences) + "\n\n"
            handle.write(text)
            written += len(text.encode("utf-8"))
            paragraph += 1
    return written


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# `--stub-model`: the transformer's forward is replaced by the mean of fixed random token vectors, so a run costs
# what everything but the model's arithmetic costs (reading, splitting and tokenising at every size, the engine's
# batching, staging, the final write, FAISS) and a 50 MB file can be measured on a 2-core CPU. Memory-wise the real
# model adds a constant (its weights and one batch's activations), which the baseline run measures.
_STUB = r"""
import sys
import torch
from sentence_transformers import SentenceTransformer
_table = {}
def forward(self, features, **kwargs):
    if "t" not in _table:
        generator = torch.Generator().manual_seed(0)
        _table["t"] = torch.randn(len(self.tokenizer), self.get_sentence_embedding_dimension(), generator=generator)
    mask = features["attention_mask"].unsqueeze(-1).float()
    summed = (_table["t"][features["input_ids"]] * mask).sum(1)
    return {"sentence_embedding": summed / mask.sum(1).clamp(min=1.0)}
SentenceTransformer.forward = forward
from tempscale_rag.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_index(text: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Index `text` into `out` in a child process; its peak RSS, wall time and summary."""
    runner = ["-c", _STUB] if args.stub_model else ["-m", "tempscale_rag.cli"]
    command = [sys.executable, *runner, "-q", "index", str(text), "--out", str(out), "--json"]
    command += ["--commit-every", str(args.commit_every), "--max-file-mb", "none"]
    if args.store != "faiss":
        command += ["--store", args.store]
    if args.sizes:
        command += ["--chunk-tokens", args.sizes]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int]] = []
    finished = threading.Event()

    def sample() -> None:
        # Not proc.poll(): it would reap the child before os.wait4 reads its rusage.
        while not finished.is_set():
            samples.append((time.perf_counter() - start, _rss_kb(proc.pid)))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # wait4 gives this child's own rusage (ru_maxrss: its peak RSS in kB on Linux), not that of earlier children.
    stdout_chunks: list[str] = []
    reader = threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    finished.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    reader.join()
    sampler.join()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"index failed ({proc.returncode}): {err}")
    summary = json.loads("".join(stdout_chunks))
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "sampled_peak_rss_mb": round(max((kb for _, kb in samples), default=0) / 1024, 1),
        "chunks": summary["chunks"],
        "tokens": summary["tokens"],
    }


_OPEN_JOB = r"""
import json, sys
from pathlib import Path
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
from tempscale_rag.stores.faiss import FaissStore
before = rss()
store = FaissStore(sys.argv[1], read_only=True, use_gpu=False)
after = rss()
print(json.dumps({"dimension": store.dimension, "count": store.count(), "open_rss_kb": after - before}))
"""


def resident_vectors(out: Path) -> dict[str, Any]:
    """The stored vectors' size, and the RSS a process gains by opening the index (the FAISS index is loaded)."""
    done = subprocess.run([sys.executable, "-c", _OPEN_JOB, str(out)], capture_output=True, text=True, check=True)
    info = json.loads(done.stdout)
    return {
        "vectors_mb": round(info["count"] * info["dimension"] * 4 / 2**20, 1),
        "open_index_rss_mb": round(info["open_rss_kb"] / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, nargs="+", default=[2.0, 4.0], help="File sizes in MB (default 2 4).")
    parser.add_argument("--sizes", default=None, help="Chunk sizes, e.g. 48,499 (default: the index defaults).")
    parser.add_argument("--commit-every", type=int, default=256, help="Chunks per batch (the CLI's default 256).")
    parser.add_argument(
        "--store", choices=("faiss", "qdrant"), default="faiss", help="The CLI's --store (qdrant: Qdrant Edge)."
    )
    parser.add_argument(
        "--stub-model",
        action="store_true",
        help="Replace the transformer's arithmetic by a cheap stand-in (everything else real): big files in minutes.",
    )
    parser.add_argument("--no-baseline", action="store_true", help="Skip the 1-KB baseline run.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results to this file.")
    parser.add_argument("--keep", type=Path, default=None, help="Work in this folder and keep it (default: a temp).")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="big_file_"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    sizes = ([0.001] if not args.no_baseline else []) + list(args.mb)
    baseline: float | None = None
    try:
        for megabytes in sizes:
            folder = work / f"{megabytes:g}mb"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            text = folder / "big.txt"
            size = write_text(text, megabytes)
            row: dict[str, Any] = {"file_mb": round(size / 1e6, 3), "sizes": args.sizes or "default"}
            row["model"] = "stub" if args.stub_model else "real"
            row.update(run_index(text, folder / "index", args))
            row["store"] = args.store
            if args.store == "faiss":
                row.update(resident_vectors(folder / "index"))
            else:
                row["vectors_mb"] = round(row["chunks"] * 384 * 4 / 2**20, 1)
            row["peak_minus_vectors_mb"] = round(row["peak_rss_mb"] - row["vectors_mb"], 1)
            if megabytes == 0.001 and not args.no_baseline:
                baseline = row["peak_rss_mb"]
                row["baseline"] = True
            elif baseline is not None:
                row["pipeline_mb"] = round(row["peak_minus_vectors_mb"] - baseline, 1)
                row["above_baseline_mb"] = round(row["peak_rss_mb"] - baseline, 1)
            row["within_target"] = row["peak_rss_mb"] <= TARGET_MB
            print(json.dumps(row), flush=True)
            results.append(row)
            if args.keep is None:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
