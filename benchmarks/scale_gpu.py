"""Scale-out throughput: the engine on Ray with 1 and 2 GPUs vs the engine called directly on one GPU, in one run.

Corpus: the mixed-length chunks and queries of `encode_gpu.py` (QMSum when found, else generated transcript-like
text; 16-512 tokens), repeated up to `--texts` so that one pass takes seconds on a GPU and Ray's start-up does not
hide in it. Model: a random-weight BERT of the MiniLM-L6 or bge-base shape (as in `encode_gpu.py`), bf16.

Methods, on the same model folder and texts:

- `direct`: `TempScaleEncoder(model).encode(texts)` in this process on GPU 0, tokenising with one process per CPU of
  its share of the host (host CPUs / GPUs), which is what each Ray actor gets;
- `ray-1`, `ray-2`: `RayEmbedder(actors=N).encode(texts)`: the actor pool `tempscale-rag index --ray` embeds with,
  one actor per GPU, fed `--batch-rows` texts per call, tokenised in Ray CPU tasks that send the actors ids (with
  `--no-tokenize-in-tasks`: each actor an engine with its own tokenizer processes, one per CPU of its share);
- `ray-data-N`: `embed_dataset` over `ray.data.from_items(texts)` with N GPUs, consumed with `iter_batches` (Ray Data
  starts its actors on every execution, so this row includes loading the model);
- `direct-all-cpus` (optional): the engine directly with one tokenizer process per core of the whole host.

Warm numbers: actors started and every engine warmed by one pass over the whole corpus; medians of `--repeats`
interleaved runs (direct and ray-1 interleave; ray-2 runs once ray-1's pool is closed, since 1 + 2 actors need three
GPUs). Cold numbers: `ray.init`, then from creating the pool to the end of its first pass (actor processes, imports,
model load, CUDA context, tokenizer processes, first kernels).

    PYTHONPATH=. python benchmarks/scale_gpu.py --out /tmp/scale [--texts 200000] [--models minilm-l6]
    PYTHONPATH=. python benchmarks/scale_gpu.py --models bge-base --texts 100000 --out /tmp/scale-bge
    PYTHONPATH=. python benchmarks/scale_gpu.py --smoke --out /tmp/scale-smoke     # CPU check of every code path

MiniLM at 200,000 texts takes about 5 minutes on 2 H200 (a pass is ~9 s on one GPU); bge-base passes are ~3x longer,
hence fewer texts for it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encode_gpu  # the corpus and model builders of the encode benchmark

from tempscale_rag import TempScaleEncoder
from tempscale_rag.config import TempScaleConfig

log = encode_gpu.log


def corpus(args: argparse.Namespace) -> tuple[list[str], str]:
    from transformers import AutoTokenizer

    tokenizer_dir = encode_gpu.find_tokenizer(args.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    docs, queries, source = encode_gpu.load_source(encode_gpu.find_qmsum(args.qmsum), random.Random(args.seed))
    base, _lengths = encode_gpu.build_corpus(tokenizer, docs, queries, min(args.texts, 32000), args.seed)
    texts = [base[i % len(base)] for i in range(args.texts)]
    return texts, source


timed = encode_gpu.timed_call


def max_cos_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(1 - (a * b).sum(axis=1).min())


def run_model(shape: str, folder: Path, texts: list[str], args: argparse.Namespace, out: list[str]) -> dict[str, Any]:
    import ray

    from tempscale_rag.distributed import RayEmbedder, RaySettings, embed_dataset

    device = "cpu" if args.smoke else "cuda"
    gpus = 0 if args.smoke else torch.cuda.device_count()
    pools = [n for n in args.gpus if args.smoke or n <= gpus]
    host_cpus = os.cpu_count() or 1
    per_gpu = args.cpus_per_gpu or (1 if args.smoke else max(1, host_cpus // max(1, max(pools))))
    config = TempScaleConfig(
        model=str(folder), device=device, dtype="float32" if args.smoke else "bfloat16", tokenize_workers=per_gpu
    )
    direct = TempScaleEncoder(config=config)
    real_tokens = int(sum(min(n, direct.window) for n in direct.count_tokens(texts)))
    result: dict[str, Any] = {
        "model": shape,
        "texts": len(texts),
        "real_tokens": real_tokens,
        "cpus_per_gpu": per_gpu,
        "batch_rows": args.batch_rows,
        "methods": {},
    }
    log(f"{shape}: {len(texts)} texts, {real_tokens:,} real tokens; {per_gpu} tokenizer processes per GPU", out)
    calls: dict[str, Callable[[], Any]] = {"direct": lambda: direct.encode(texts)}
    if args.all_cpus and not args.smoke:
        wide = direct.with_config(tokenize_workers=min(host_cpus, 32))
        calls["direct-all-cpus"] = lambda: wide.encode(texts)
    _s, reference = timed(calls["direct"])  # warm-up pass, and the vectors every other method is checked against
    for name, call in calls.items():
        if name != "direct":
            call()

    def record(name: str, seconds: list[float], extra: dict[str, Any] | None = None) -> None:
        med = statistics.median(seconds)
        entry = {"seconds": med, "runs": seconds, "tokens_per_s": real_tokens / med, **(extra or {})}
        result["methods"][name] = entry
        log(f"  {shape} {name:16s} median {med:7.2f} s  {real_tokens / med:12,.0f} tok/s  runs {seconds}", out)

    times: dict[str, list[float]] = {name: [] for name in calls}
    for n in pools:
        name = f"ray-{n}"
        settings = RaySettings(
            actors=n,
            gpus_per_actor=0 if args.smoke else 1,
            cpus_per_actor=None if args.tokenize_in_tasks else per_gpu,
            batch_rows=args.batch_rows,
            in_flight=args.in_flight,
            tokenize_in_tasks=args.tokenize_in_tasks,
        )
        start = time.perf_counter()
        embedder = RayEmbedder(config, settings, reserve_cpus=False)
        started = time.perf_counter() - start
        first, vectors = timed(lambda embedder=embedder: embedder.encode(texts))
        cold = {"pool_start_s": started, "first_pass_s": first, "cold_s": started + first}
        diff = max_cos_diff(vectors, reference)
        log(
            f"  {shape} {name}: pool started in {started:.1f} s, first pass {first:.1f} s; max cos diff {diff:.2e}", out
        )
        runs: list[float] = []
        for r in range(args.repeats):
            if n == pools[0]:  # interleave with the direct engine while only this pool holds GPUs
                for m, call in calls.items():
                    seconds, _ = timed(call)
                    times[m].append(seconds)
                    log(f"  {shape} {m:16s} run {r + 1}: {seconds:7.2f} s  {real_tokens / seconds:12,.0f} tok/s", out)
            seconds, _ = timed(lambda embedder=embedder: embedder.encode(texts))
            runs.append(seconds)
            log(f"  {shape} {name:16s} run {r + 1}: {seconds:7.2f} s  {real_tokens / seconds:12,.0f} tok/s", out)
        embedder.close()
        record(name, runs, {**cold, "max_cos_diff": diff, "devices": embedder.devices})
        if args.ray_data:
            data_name = f"ray-data-{n}"
            data_runs = []
            # One CPU per GPU left to Ray Data's own scheduling, which holds back when every CPU is reserved.
            cpus = None if args.tokenize_in_tasks else max(1, per_gpu - 1)
            data_settings = settings.model_copy(update={"cpus_per_actor": cpus})
            for r in range(max(1, args.repeats - 1)):
                dataset = ray.data.from_items([{"text": t} for t in texts])
                seconds, _ = timed(
                    lambda dataset=dataset, settings=data_settings: sum(
                        len(b["vector"])
                        for b in embed_dataset(dataset, config=config, settings=settings).iter_batches(
                            batch_size=None, batch_format="numpy"
                        )
                    )
                )
                data_runs.append(seconds)
                log(f"  {shape} {data_name:16s} run {r + 1}: {seconds:7.2f} s (actors started in the run)", out)
            record(data_name, data_runs)
    for m in calls:
        record(m, times[m])
    ms = result["methods"]
    first_pool = f"ray-{pools[0]}"
    result["ratios"] = {
        f"ray-{n}_vs_{first_pool}": ms[f"ray-{n}"]["tokens_per_s"] / ms[first_pool]["tokens_per_s"] for n in pools
    }
    result["ratios"][f"{first_pool}_vs_direct"] = ms[first_pool]["tokens_per_s"] / ms["direct"]["tokens_per_s"]
    return result


def table(results: list[dict[str, Any]]) -> list[str]:
    header = f"{'method':18s} {'model':9s} {'tokens/s':>12s} {'vs ray-1':>8s} {'vs direct':>9s} {'cold s':>7s}"
    lines = [header, "-" * len(header)]
    for res in results:
        ms = res["methods"]
        base = ms.get("ray-1", {}).get("tokens_per_s")
        direct = ms["direct"]["tokens_per_s"]
        for name, m in ms.items():
            tps = m["tokens_per_s"]
            vs_one = f"{tps / base:7.2f}x" if base and name.startswith("ray-") else ""
            cold = f"{m['cold_s']:7.1f}" if "cold_s" in m else ""
            lines.append(f"{name:18s} {res['model']:9s} {tps:12,.0f} {vs_one:>8s} {tps / direct:8.1%} {cold:>7s}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--texts", type=int, default=200_000, help="corpus size (the encode_gpu corpus, repeated)")
    parser.add_argument("--models", default="minilm-l6", help=f"comma list of {sorted(encode_gpu.SHAPES)}")
    parser.add_argument("--gpus", default="1,2", help="pool sizes to run (GPUs; actors on CPU in --smoke)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=16_384, help="texts per actor call")
    parser.add_argument("--in-flight", type=int, default=2, help="calls queued per actor")
    parser.add_argument("--cpus-per-gpu", type=int, default=None, help="default: host CPUs / largest pool")
    parser.add_argument("--ray-data", action=argparse.BooleanOptionalAction, default=True, help="embed_dataset rows")
    parser.add_argument(
        "--tokenize-in-tasks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Ray: tokenise in CPU tasks and feed the actors ids (the default on GPUs); --no-tokenize-in-tasks: each "
        "actor tokenises with its own share of the CPUs, as before",
    )
    parser.add_argument("--all-cpus", action="store_true", help="also the direct engine with every host CPU")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--qmsum", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for scale_gpu.json and scale_gpu.log")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run: 48 texts, 1-2 CPU actors, 1 repeat")
    args = parser.parse_args()
    args.gpus = [int(n) for n in args.gpus.split(",")]
    if args.smoke:
        args.texts, args.repeats, args.batch_rows = min(args.texts, 48), 1, 16
    elif not torch.cuda.is_available():
        sys.exit("no CUDA GPU: run with --smoke for a CPU check")

    import ray

    out: list[str] = []
    texts, source = corpus(args)
    env = {
        "device": "cpu" if args.smoke else torch.cuda.get_device_name(),
        "gpus": 0 if args.smoke else torch.cuda.device_count(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    log(f"{env}; corpus {len(texts)} texts from {source}", out)
    start = time.perf_counter()
    ray.init(
        num_cpus=2 if args.smoke else os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    env["ray_init_s"] = time.perf_counter() - start
    log(f"ray.init: {env['ray_init_s']:.1f} s", out)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer_dir = encode_gpu.find_tokenizer(args.tokenizer)
            for shape in args.models.split(","):
                folder = encode_gpu.build_model_folder(shape, tokenizer_dir, Path(tmp))
                results.append(run_model(shape, folder, texts, args, out))
    finally:
        ray.shutdown()
    lines = table(results)
    log("", out)
    log(f"command: {env['command']}", out)
    log(
        "real tokens/s end to end (tokenisation and Ray transfers included), medians, warm; cold s = pool start + "
        "first pass",
        out,
    )
    for line in lines:
        log(line, out)
    for res in results:
        log(f"{res['model']}: " + ", ".join(f"{k} {v:.3f}" for k, v in res["ratios"].items()), out)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"env": env, "corpus": {"texts": len(texts), "source": source}, "results": results, "table": lines}
    (folder / "scale_gpu.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    (folder / "scale_gpu.log").write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"wrote {folder / 'scale_gpu.json'} and scale_gpu.log")


if __name__ == "__main__":
    main()
