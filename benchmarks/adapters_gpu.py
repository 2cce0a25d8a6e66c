"""The framework adapters on a GPU: LlamaIndex and LangChain embedding the same corpus as the engine called directly.

Corpus and models as in `encode_gpu.py` (mixed-length chunks of 16-512 tokens, random-weight MiniLM-L6 / bge-base
shapes, bf16). All methods share one loaded engine, so only the adapters' own overhead differs:

- `direct`: `TempScaleEncoder.encode(texts)` (numpy out);
- `langchain`: `TempScaleEmbeddings.embed_documents(texts)` (the whole list in one engine call; lists of floats out);
- `llamaindex-batch-N`: `TempScaleEmbedding.get_text_embedding_batch(texts)` with `embed_batch_size=N`, which slices
  the texts into engine calls of N, as LlamaIndex's pipelines call it (`auto` is the adapter's default on this
  device: 256 on the CPU, 65536 on a GPU);
- `llamaindex-pipeline`: `IngestionPipeline(transformations=[embed_model]).run(nodes=...)` over `TextNode`s, at the
  adapter's default batch size (cache disabled: the embedding is what is measured).

With `--collector-on`, `langchain` and `llamaindex-pipeline` also run with the garbage collector left on while the
engine converts vectors to lists (the engine pauses it; this is the before of that change, side by side).

Target: every adapter >= 80% of `direct` (real tokens/s end to end, medians of interleaved repeats after a warm-up).

    PYTHONPATH=.:integrations/llama-index-embeddings-tempscale:integrations/langchain-tempscale \
        python benchmarks/adapters_gpu.py --out /tmp/adapters [--texts 64000] [--models minilm-l6,bge-base]
    ... python benchmarks/adapters_gpu.py --smoke --out /tmp/adapters-smoke      # CPU check of every code path
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import random
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encode_gpu  # the corpus and model builders of the encode benchmark

import tempscale_rag.encoder as encoder_module
from tempscale_rag import TempScaleEncoder

log = encode_gpu.log


timed = encode_gpu.timed_call


def collector_on(call: Callable[[], Any]) -> Callable[[], Any]:
    """`call` with the engine's garbage-collector pause replaced by nothing (the engine before it paused)."""

    def run() -> Any:
        paused = encoder_module._gc_paused
        setattr(encoder_module, "_gc_paused", contextlib.nullcontext)  # noqa: B010 - a private hook, patched on purpose
        try:
            return call()
        finally:
            setattr(encoder_module, "_gc_paused", paused)  # noqa: B010

    return run


def run_model(shape: str, folder: Path, texts: list[str], args: argparse.Namespace, out: list[str]) -> dict[str, Any]:
    from langchain_tempscale import TempScaleEmbeddings
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.tempscale import TempScaleEmbedding

    device = "cpu" if args.smoke else "cuda"
    engine = TempScaleEncoder(str(folder), device=device, dtype="float32" if args.smoke else "bfloat16")
    real_tokens = int(sum(min(n, engine.window) for n in engine.count_tokens(texts)))
    langchain = TempScaleEmbeddings.from_encoder(engine)
    llama_default = TempScaleEmbedding.from_encoder(engine)
    calls: dict[str, Callable[[], Any]] = {
        "direct": lambda: engine.encode(texts),
        "langchain": lambda: langchain.embed_documents(texts),
    }
    sizes: list[int | str] = ["auto", *args.batch_sizes]
    for size in sizes:
        model = llama_default if size == "auto" else TempScaleEmbedding.from_encoder(engine, embed_batch_size=size)
        label = f"llamaindex-batch-{size if size != 'auto' else f'auto({llama_default.embed_batch_size})'}"
        calls[label] = functools.partial(model.get_text_embedding_batch, texts)
    nodes = [TextNode(text=t) for t in texts]
    pipeline = IngestionPipeline(transformations=[llama_default], disable_cache=True)
    # The same nodes every run (each run sets their embeddings again): building nodes is the splitter's work, not
    # the embedding's, so it stays outside the timed call.
    calls["llamaindex-pipeline"] = lambda: pipeline.run(nodes=nodes)
    if args.collector_on:
        calls["langchain (collector on)"] = collector_on(calls["langchain"])
        calls["llamaindex-pipeline (collector on)"] = collector_on(calls["llamaindex-pipeline"])
    result: dict[str, Any] = {
        "model": shape,
        "texts": len(texts),
        "real_tokens": real_tokens,
        "llamaindex_default_batch": llama_default.embed_batch_size,
        "methods": {},
    }
    log(
        f"{shape}: {len(texts)} texts, {real_tokens:,} real tokens; LlamaIndex default batch "
        f"{llama_default.embed_batch_size} on {engine.device}",
        out,
    )
    reference = None
    for name, call in calls.items():  # warm-up, and the same vectors from every method
        vectors = call()
        if name.startswith("llamaindex-pipeline"):
            vectors = [n.embedding for n in vectors]
        array = np.asarray(vectors, dtype=np.float32)
        if reference is None:
            reference = array
        diff = float(1 - (array * reference).sum(axis=1).min())
        if diff > 1e-3:
            raise SystemExit(f"{name} gives other vectors than the engine (max cosine difference {diff:.2e})")
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(args.repeats):
        for name, call in calls.items():
            seconds, _ = timed(call)
            times[name].append(seconds)
            log(f"  {shape} {name:34s} run {r + 1}: {seconds:7.2f} s  {real_tokens / seconds:12,.0f} tok/s", out)
    direct = statistics.median(times["direct"])
    for name, runs in times.items():
        med = statistics.median(runs)
        result["methods"][name] = {
            "seconds": med,
            "runs": runs,
            "tokens_per_s": real_tokens / med,
            "vs_direct": direct / med,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--texts", type=int, default=64_000)
    parser.add_argument("--models", default="minilm-l6,bge-base")
    parser.add_argument("--batch-sizes", default="256,2048,8192,32768", help="LlamaIndex embed_batch_size values")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--qmsum", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--collector-on", action="store_true", help="also run two adapters without the GC pause")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run: 40 texts, one model, 1 repeat")
    args = parser.parse_args()
    args.batch_sizes = [int(n) for n in args.batch_sizes.split(",")]
    if args.smoke:
        args.texts, args.repeats, args.models, args.batch_sizes = 40, 1, "minilm-l6", [16]
    elif not torch.cuda.is_available():
        sys.exit("no CUDA GPU: run with --smoke for a CPU check")
    from transformers import AutoTokenizer

    out: list[str] = []
    tokenizer_dir = encode_gpu.find_tokenizer(args.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    docs, queries, source = encode_gpu.load_source(encode_gpu.find_qmsum(args.qmsum), random.Random(args.seed))
    base, _ = encode_gpu.build_corpus(tokenizer, docs, queries, min(args.texts, 32000), args.seed)
    texts = [base[i % len(base)] for i in range(args.texts)]
    env = {
        "device": "cpu" if args.smoke else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "llama_index_core": __import__("llama_index.core").core.__version__,
        "langchain_core": __import__("langchain_core").__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    log(f"{env}; corpus {len(texts)} texts from {source}", out)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.models.split(","):
            folder = encode_gpu.build_model_folder(shape, tokenizer_dir, Path(tmp))
            results.append(run_model(shape, folder, texts, args, out))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    header = f"{'method':36s} {'model':9s} {'tokens/s':>12s} {'vs direct':>9s}"
    lines = [header, "-" * len(header)]
    for res in results:
        for name, m in res["methods"].items():
            lines.append(f"{name:36s} {res['model']:9s} {m['tokens_per_s']:12,.0f} {m['vs_direct']:8.1%}")
    log("", out)
    log(f"command: {env['command']}", out)
    log("real tokens/s end to end (tokenisation and conversion to Python floats included), medians", out)
    for line in lines:
        log(line, out)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"env": env, "results": results, "table": lines}
    (folder / "adapters_gpu.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    (folder / "adapters_gpu.log").write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"wrote {folder / 'adapters_gpu.json'}")


if __name__ == "__main__":
    main()
