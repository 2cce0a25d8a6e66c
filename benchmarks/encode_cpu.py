"""CPU encode throughput: the engine vs `SentenceTransformer.encode`, and TempScale on vs off, in one run.

Corpus: mixed-length chunks (16 to 512 tokens) cut from real meeting transcripts (../shared/data/qmsum when present,
else the sample documents in examples/docs), plus a few inputs longer than the window. Same model (the bundled
all-MiniLM-L6-v2), same window (512), same texts for every method. Methods are interleaved and repeated; the table
shows medians.

    python benchmarks/encode_cpu.py [--chunks 600] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from tempscale_rag import TempScaleEncoder
from tempscale_rag.models import bundled_model_path

ROOT = Path(__file__).resolve().parents[1]
QMSUM = ROOT.parent / "shared" / "data" / "qmsum" / "corpus.jsonl"


def source_text() -> tuple[str, str]:
    if QMSUM.exists():
        docs = [json.loads(line)["text"] for line in QMSUM.open(encoding="utf-8")]
        return "\n".join(docs[:40]), f"QMSum transcripts ({QMSUM})"
    files = sorted((ROOT / "examples" / "docs").rglob("*.*"))
    return "\n".join(p.read_text(encoding="utf-8", errors="ignore") for p in files), "examples/docs"


def build_corpus(encoder: TempScaleEncoder, n_chunks: int, seed: int = 0) -> list[str]:
    text, _ = source_text()
    ids = encoder.model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    rng = random.Random(seed)
    chunks = []
    for _ in range(n_chunks):
        n = int(rng.uniform(16, 510))
        start = rng.randrange(0, max(1, len(ids) - n))
        chunks.append(encoder.model.tokenizer.decode(ids[start : start + n]))
    for _ in range(max(2, n_chunks // 50)):  # past the window: exercises truncation
        start = rng.randrange(0, max(1, len(ids) - 2000))
        chunks.append(encoder.model.tokenizer.decode(ids[start : start + 1500]))
    rng.shuffle(chunks)
    return chunks


def timed(fn: object) -> tuple[float, float, np.ndarray]:
    """Wall seconds and process CPU seconds (all threads; less disturbed by other load on the machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()  # type: ignore[operator]
    return time.perf_counter() - start, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    engine_off = TempScaleEncoder(device="cpu", temperature=1.0)  # patched, every bucket at tau = 1
    engine_on = engine_off.with_config()  # the default buckets (TempScale on), same loaded model
    st = SentenceTransformer(bundled_model_path(), device="cpu")  # the baseline a user would otherwise run
    st.max_seq_length = engine_off.window

    texts = build_corpus(engine_off, args.chunks)
    real_tokens = sum(min(n, engine_off.window) for n in engine_off.count_tokens(texts))
    methods = {
        "sentence-transformers encode (tau=1)": lambda: st.encode(texts, normalize_embeddings=True),
        "tempscale engine, tau=1": lambda: engine_off.encode(texts),
        "tempscale engine, default buckets": lambda: engine_on.encode(texts),
    }
    for fn in methods.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu_times: dict[str, list[float]] = {name: [] for name in methods}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            seconds, cpu_seconds, outputs[name] = timed(fn)
            times[name].append(seconds)
            cpu_times[name].append(cpu_seconds)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    cpu = {name: statistics.median(ts) for name, ts in cpu_times.items()}
    base = med["sentence-transformers encode (tau=1)"]
    base_cpu = cpu["sentence-transformers encode (tau=1)"]
    cos = (outputs["tempscale engine, tau=1"] * outputs["sentence-transformers encode (tau=1)"]).sum(axis=1)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )
    print(
        f"corpus: {len(texts)} texts, {real_tokens} real tokens (window {engine_off.window}), "
        f"from {source_text()[1]}; median of {args.repeats} interleaved runs"
    )
    print(f"{'method':38s} {'wall s':>7s} {'tokens/s':>9s} {'vs ST':>6s} {'CPU s':>7s} {'CPU vs ST':>9s}")
    for name in methods:
        print(
            f"{name:38s} {med[name]:7.2f} {real_tokens / med[name]:9.0f} {base / med[name]:5.2f}x "
            f"{cpu[name]:7.2f} {base_cpu / cpu[name]:8.2f}x"
        )
    spread = {name: (min(ts), max(ts)) for name, ts in times.items()}
    print("wall-time range per method: " + "; ".join(f"{n}: {a:.1f}-{b:.1f}s" for n, (a, b) in spread.items()))
    overhead = med["tempscale engine, default buckets"] / med["tempscale engine, tau=1"] - 1
    overhead_cpu = cpu["tempscale engine, default buckets"] / cpu["tempscale engine, tau=1"] - 1
    print(
        f"TempScale overhead (default buckets vs tau=1, same engine): wall {100 * overhead:+.1f}%, "
        f"CPU {100 * overhead_cpu:+.1f}%"
    )
    print(f"engine tau=1 vs sentence-transformers: min cosine {cos.min():.6f}, max cosine diff {1 - cos.min():.2e}")


if __name__ == "__main__":
    main()
