"""GPU encode throughput: the engine vs `SentenceTransformer.encode`, eager TempScale and the dense ceiling, in one run.

Corpus: meeting transcripts (QMSum when a copy is found, else generated transcript-like text) chunked the way RAG
pipelines chunk them: whole speaker turns packed up to a chunk size of 128, 256, 384 or 512 tokens (one size per pass
over the documents, long turns split), plus short questions as queries. Token lengths spread over 16-512; every text
fits the 512-token window, so no method truncates.

Models: random-weight BERT encoders of two shapes, MiniLM-L6 (384 hidden, 6 layers) and bge-base (768 hidden, 12
layers), built in a temporary folder with the bundled all-MiniLM-L6-v2 tokenizer, wrapped as Transformer + mean
Pooling, run in bf16 and/or fp16. Methods, side by side on the same model and texts:

- `engine`: `TempScaleEncoder(model).encode(texts)` with the default length buckets (TempScale on);
- `engine tau=1`: the same engine at temperature 1 (TempScale off): the equal-outputs check against ST;
- `engine 1M`: the engine with 1M-token batches instead of its default cap (the cap's justification);
- `engine tokenize_workers=0`: the engine tokenising in its own process (threads) instead of worker processes;
- `engine ids`: `engine.encode_tokens(engine.tokenize(texts))` timed without the tokenising: the engine fed token ids
  by a stage elsewhere (a Ray CPU stage), its vectors checked equal to `engine`'s;
- `ST.encode`: `SentenceTransformer.encode(texts)` with its default batch size (32), and with 256;
- `eager TempScale`: the authors' approach: attention computed eagerly as an explicit softmax(QK^T/sqrt(d)/tau + mask)
  (transformers' eager attention with the scale divided by tau) at one global tau, run through `ST.encode`;
- `dense ceiling`: forward passes over full 512-token batches (no padding), the fastest the model can go.

The tokenising stage alone: the engine's worker processes tokenising the corpus in parts, with their CPU seconds per
million tokens (read from /proc) beside the parent's. To compare two versions of the engine on one machine, run the
script once with each on PYTHONPATH (methods a version lacks are skipped).

Real tokens count the tokens each text has (special tokens included), not padding. Times are wall clock end to end
(tokenisation included) after a warm-up; the table shows medians of interleaved repeats.

    PYTHONPATH=. python benchmarks/encode_gpu.py [--texts 32000] [--models minilm-l6,bge-base] [--dtypes bf16]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from tempscale_rag import TempScaleEncoder, patch_attention_temperature
from tempscale_rag.models import transformer_model

try:  # sentence-transformers >= 6
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
except ImportError:  # pragma: no cover - older layouts
    from sentence_transformers.models import Pooling, Transformer  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
SHAPES: dict[str, dict[str, Any]] = {
    "minilm-l6": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "bge-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CHUNK_SIZES = (128, 256, 384, 512)
EAGER_TAU = 0.8
ST_BATCH = 32
ENGINE_1M = 1 << 20
METHODS = ("ceiling", "engine", "engine_tau1", "engine_ids", "engine_1m", "engine_inproc", "st", "st_b256", "eager")
LABELS = {
    "ceiling": "dense ceiling (512-token batches)",
    "engine": "tempscale engine (buckets)",
    "engine_tau1": "tempscale engine (tau=1)",
    "engine_ids": "engine (buckets), given token ids",
    "engine_1m": "tempscale engine (buckets, 1M-token batches)",
    "engine_inproc": "engine (buckets), tokenize_workers=0",
    "st": f"ST.encode (batch {ST_BATCH}, tau=1)",
    "st_b256": "ST.encode (batch 256, tau=1)",
    "eager": f"eager TempScale via ST.encode (tau={EAGER_TAU})",
}


# -- corpus -----------------------------------------------------------------------------------------------------------


def find_tokenizer(arg: str | None) -> Path:
    candidates = [Path(arg)] if arg else [ROOT / ".carry" / "tok"]
    if not arg:
        try:
            from tempscale_rag.models import bundled_model_path

            candidates.append(Path(bundled_model_path()))
        except ValueError:
            pass
    for path in candidates:
        if (path / "vocab.txt").exists() or (path / "tokenizer.json").exists():
            return path
    sys.exit(f"no tokenizer found in {[str(c) for c in candidates]}: pass --tokenizer DIR (a BERT WordPiece tokenizer)")


def find_qmsum(arg: str | None) -> Path | None:
    candidates = (
        [Path(arg)]
        if arg
        else [
            ROOT / "shared" / "data" / "qmsum",
            ROOT.parent / "shared" / "data" / "qmsum",
            ROOT / ".carry" / "qmsum",
        ]
    )
    return next((p for p in candidates if (p / "corpus.jsonl").exists()), None)


def synthetic_source(rng: random.Random, n_docs: int = 200) -> tuple[list[str], list[str]]:
    """Transcript-like documents (speaker turns with disfluencies) and short questions, when no real text is at hand."""
    speakers = ["Project Manager", "Marketing", "User Interface", "Industrial Designer", "Grad A", "PhD B", "Professor"]
    topics = [
        "the remote control",
        "the budget",
        "the battery",
        "speech recognition",
        "the database",
        "the buttons",
        "the transcripts",
        "the evaluation",
        "the prototype",
        "the market research",
        "the microphones",
    ]
    prose = (
        "we should think about how the design would work and whether it is cheap enough for users who want "
        "something simple so maybe the rubber case or the kinetic battery is better than what we had last time "
        "but I do not know if the numbers from the lab are right yet because the recognition results changed "
        "after we retrained the models on the new data and the error rate went down a bit"
    )
    words = prose.split()
    fillers = ["um ,", "uh ,", "{vocalsound}", "{disfmarker}", "yeah .", "mm - hmm .", "so ,", "right ."]
    docs = []
    for _ in range(n_docs):
        turns = []
        for _ in range(rng.randint(300, 900)):
            n = int(rng.lognormvariate(2.3, 0.9)) + 1
            body = " ".join(rng.choice(words) if rng.random() > 0.12 else rng.choice(fillers) for _ in range(n))
            turns.append(f"{rng.choice(speakers)}: {body} about {rng.choice(topics)} .")
        docs.append("\n".join(turns))
    queries = [f"What did {rng.choice(speakers)} say about {rng.choice(topics)}?" for _ in range(1500)]
    return docs, queries


def load_source(qmsum: Path | None, rng: random.Random) -> tuple[list[str], list[str], str]:
    if qmsum is None:
        docs, queries = synthetic_source(rng)
        return docs, queries, "generated transcript-like text (no QMSum copy found)"
    docs = [json.loads(line)["text"] for line in (qmsum / "corpus.jsonl").open(encoding="utf-8")]
    queries = []
    for name in ("queries_questions.jsonl", "queries.jsonl"):
        if (qmsum / name).exists():
            queries += [json.loads(line)["text"] for line in (qmsum / name).open(encoding="utf-8")]
    return docs, queries, f"QMSum transcripts and queries ({qmsum})"


def build_corpus(
    tokenizer: Any, docs: list[str], queries: list[str], n_texts: int, seed: int
) -> tuple[list[str], np.ndarray]:
    """Chunk every document at each size in CHUNK_SIZES by packing whole turns, add queries; sample `n_texts`.

    Returns the texts and their token counts (special tokens included); texts over 512 tokens are left out.
    """
    rng = random.Random(seed)
    turns_per_doc = [[t for t in doc.split("\n") if t.strip()] for doc in docs]
    flat = [t for turns in turns_per_doc for t in turns]
    counts = [len(x) for x in tokenizer(flat, add_special_tokens=False, verbose=False)["input_ids"]]
    n_queries = min(len(queries) * 4, n_texts // 8)
    picked = [rng.choice(queries) for _ in range(n_queries)]
    for size in CHUNK_SIZES:
        cap = size - 2  # [CLS] and [SEP]
        chunks: list[str] = []
        k = 0
        for turns in turns_per_doc:
            current: list[str] = []
            n = 0
            for turn in turns:
                c = counts[k]
                k += 1
                if c > cap:  # one long turn: flush, then cut it into pieces of about 3/4 `cap` tokens by words
                    if current:
                        chunks.append("\n".join(current))
                    words = turn.split(" ")
                    per = max(1, int(len(words) * 0.75 * cap / c))
                    chunks += [" ".join(words[s : s + per]) for s in range(0, len(words), per)]
                    current, n = [], 0
                elif n + c > cap:
                    chunks.append("\n".join(current))
                    current, n = [turn], c
                else:
                    current.append(turn)
                    n += c
            if current:
                chunks.append("\n".join(current))
        chunks = [c for c in chunks if c.strip()]
        # The same number of chunks from each chunk size: a corpus of collections chunked at different sizes.
        picked += rng.sample(chunks, min(len(chunks), (n_texts - n_queries) // len(CHUNK_SIZES)))
    rng.shuffle(picked)
    lengths = np.array([len(x) + 2 for x in tokenizer(picked, add_special_tokens=False, verbose=False)["input_ids"]])
    keep = lengths <= 512
    return [t for t, ok in zip(picked, keep, strict=True) if ok], lengths[keep]


# -- models -----------------------------------------------------------------------------------------------------------


def build_model_folder(shape: str, tokenizer_dir: Path, root: Path) -> Path:
    """Save a random-weight BertModel of `shape` with the given tokenizer (seeded: same weights every run)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = root / shape
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = BertConfig(
        vocab_size=len(tokenizer), max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, **SHAPES[shape]
    )
    torch.manual_seed(1234)
    BertModel(config).save_pretrained(str(folder))  # with the (unused) pooler, so loading warns of nothing
    tokenizer.save_pretrained(str(folder))
    return folder


def load_st(folder: Path, dtype: torch.dtype, attn: str, device: str) -> SentenceTransformer:
    kwargs = {"attn_implementation": attn}
    try:
        transformer = Transformer(str(folder), model_kwargs=kwargs)
    except TypeError:  # pragma: no cover - sentence-transformers < 6
        transformer = Transformer(str(folder), model_args=kwargs)
    dim_fn = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    st = SentenceTransformer(modules=[transformer, Pooling(dim_fn(), "mean")], device=device)
    st.max_seq_length = 512
    st.to(dtype)
    st.eval()
    return st


# -- measuring --------------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any, float]:
    """Seconds, output, peak GPU memory in GB (allocated by torch) of one call."""
    gc.collect()  # every method starts from the same collector state
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else float("nan")
    return seconds, out, peak


def log(line: str, sink: list[str]) -> None:
    """Print a line now and keep it for the log file."""
    print(line, flush=True)
    sink.append(line)


def timed_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one call (after a garbage collection, GPU work included) and its result."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


@torch.inference_mode()
def dense_ceiling(st: SentenceTransformer, device: str, vocab: int, batches: tuple[int, ...]) -> dict[str, Any]:
    """Best tokens/s of the model's forward pass over full 512-token batches (no padding: SDPA's flash kernel)."""
    results = {}
    for b in batches:
        gen = torch.Generator(device="cpu").manual_seed(b)
        ids = torch.randint(1000, vocab, (b, 512), generator=gen).to(device)
        feats = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            st(feats)
        times = []
        for _ in range(10 if device.startswith("cuda") else 2):
            if device.startswith("cuda"):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                st(feats)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                st(feats)
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else float("nan")
        results[b] = {
            "seconds": statistics.median(times),
            "tokens_per_s": b * 512 / statistics.median(times),
            "peak_gb": peak,
        }
    best = max(results.values(), key=lambda r: r["tokens_per_s"])
    return {"by_batch": results, **best}


def batch_stats(parts: list[Any], engine: TempScaleEncoder, budget: int) -> dict[str, int]:
    """Batches, distinct padded shapes and padded tokens of one engine call (its groups cut at the budget)."""
    try:
        from tempscale_rag.planning import padded_lengths as _padded_lengths
    except ImportError:  # an engine before the planning module (comparing versions)
        from tempscale_rag.encoder import _padded_lengths  # type: ignore[attr-defined,no-redef]

    seen = np.concatenate([p.body for p in parts]) + engine.count_tokens([""])[0]
    taus = np.concatenate([p.tau for p in parts])
    padded = _padded_lengths(seen, engine.window)
    keys, counts = np.unique(np.stack([padded, np.round(taus * 1e6)]), axis=1, return_counts=True)
    per_batch = np.maximum(1, budget // keys[0])
    return {
        "batches": int((-(-counts // per_batch)).sum()),
        "shapes": len(set(keys[0].tolist())),
        "padded_tokens": int(padded.sum()),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tokenize_stage(engine: TempScaleEncoder, texts: list[str], real_tokens: int) -> dict[str, Any]:
    """The tokenising stage alone, as the engine runs it on a GPU: its worker processes, parts of 2,048 texts, two
    parts in flight. Wall seconds and CPU seconds per million tokens of the workers and of this process."""
    from concurrent.futures import ThreadPoolExecutor

    pool = engine._tokenizer_pool(2)
    if pool is None:
        return {}
    pool.tokenize(texts[: 64 * pool.workers])  # start every worker
    parts = [texts[s : s + 2048] for s in range(0, len(texts), 2048)]
    best: dict[str, Any] = {}
    for _ in range(3):
        workers0 = sum(_cpu_seconds(p.pid) for p in pool._procs)
        parent0, start = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(2) as planners:
            tokens = sum(len(ids) for _counts, ids in planners.map(pool.tokenize, parts))
        seconds = time.perf_counter() - start
        workers = sum(_cpu_seconds(p.pid) for p in pool._procs) - workers0
        parent = time.process_time() - parent0
        if not best or seconds < best["seconds"]:
            best = {
                "seconds": seconds,
                "tokens": tokens,
                "tokens_per_s": tokens / seconds,
                "workers": pool.workers,
                "worker_cpu_s_per_mtok": workers / tokens * 1e6,
                "parent_cpu_s_per_mtok": parent / tokens * 1e6,
            }
    print(
        f"  tokenising stage: {best['seconds']:.2f} s, {best['tokens_per_s'] / 1e6:.2f}M tok/s with {pool.workers} "
        f"processes; CPU s per M tokens: workers {best['worker_cpu_s_per_mtok']:.3f}, parent "
        f"{best['parent_cpu_s_per_mtok']:.3f}",
        flush=True,
    )
    return best


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def run_model(shape: str, dtype_name: str, folder: Path, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = args.device, DTYPES[dtype_name]
    methods = [m for m in METHODS if m in args.methods]
    st = load_st(folder, dtype, "sdpa", device)
    engine_tau1 = TempScaleEncoder(st, temperature=1.0, device=device)
    engine = engine_tau1.with_config(temperature=None)  # default buckets, same loaded (patched) model
    engine_1m = engine.with_config(max_batch_tokens=ENGINE_1M)
    engine_inproc = engine.with_config(tokenize_workers=0)
    window = engine_tau1.window
    real_tokens = int(sum(min(n, window) for n in engine_tau1.count_tokens(texts)))
    budget = engine_tau1._batch_tokens()
    st_eager = None
    if "eager" in methods:
        st_eager = load_st(folder, dtype, "eager", device)
        patch_attention_temperature(transformer_model(st_eager), EAGER_TAU)

    def st_encode(model: SentenceTransformer, batch: int) -> Callable[[], np.ndarray]:
        return lambda: model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)

    calls: dict[str, Callable[[], np.ndarray]] = {
        "engine": lambda: engine.encode(texts),
        **(
            {"engine_ids": partial(engine.encode_tokens, engine.tokenize(texts))} if hasattr(engine, "tokenize") else {}
        ),
        "engine_tau1": lambda: engine_tau1.encode(texts),
        "engine_1m": lambda: engine_1m.encode(texts),
        "engine_inproc": lambda: engine_inproc.encode(texts),
        "st": st_encode(st, ST_BATCH),
        "st_b256": st_encode(st, 256),
    }
    if st_eager is not None:
        calls["eager"] = st_encode(st_eager, ST_BATCH)
    timed_methods = [m for m in methods if m in calls]

    result: dict[str, Any] = {
        "model": shape,
        "dtype": dtype_name,
        "texts": len(texts),
        "real_tokens": real_tokens,
        "engine_budget_tokens": budget,
        "tokenize_workers": pool.workers if (pool := engine._tokenizer_pool(2)) is not None else 0,
        "methods": {},
    }
    if "ceiling" in methods:
        result["methods"]["ceiling"] = dense_ceiling(st, device, len(st.tokenizer), tuple(args.ceiling_batches))
    if "engine" in methods:
        result["tokenize_stage"] = tokenize_stage(engine, texts, real_tokens)
    # Warm-up: each engine variant once on the whole corpus (every shape, full-size batches: kernel selection, caching
    # allocator and pinned-memory growth), the ST-driven baselines on a subset.
    for m in timed_methods:
        if m.startswith("engine"):
            calls[m]()
        else:
            model = st_eager if m == "eager" else st
            assert model is not None
            model.encode(texts[:1000], batch_size=256 if m == "st_b256" else ST_BATCH, convert_to_numpy=True)
    times: dict[str, list[float]] = {m: [] for m in timed_methods}
    peaks: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for r in range(max(args.repeats, args.baseline_repeats)):
        for m in timed_methods:
            if r >= (args.repeats if m.startswith("engine") else args.baseline_repeats):
                continue
            seconds, outputs[m], peak = timed(calls[m], device)
            times[m].append(seconds)
            peaks[m] = max(peaks.get(m, 0.0), peak)
            print(
                f"  {shape} {dtype_name} {m:12s} run {r + 1}: {seconds:7.2f} s  {real_tokens / seconds:11,.0f} tok/s",
                flush=True,
            )
    # Engine stages of one call, each variant, run one after the other instead of overlapped: tokenise + route every
    # part (plan) and forward passes + scatter (run), interleaved medians. The run stage is where TempScale could cost
    # anything; end to end adds CPU noise.
    stages: dict[str, Any] = {}
    if "engine" in times and "engine_tau1" in times:
        variants = {"engine": engine, "engine_tau1": engine_tau1}
        plan_s: dict[str, list[float]] = {v: [] for v in variants}
        run_s: dict[str, list[float]] = {v: [] for v in variants}
        plans: dict[str, Any] = {}
        for _ in range(args.repeats):
            for v, enc in variants.items():
                seconds, plans[v], _peak = timed(partial(enc._plan, texts, query=False), device)
                plan_s[v].append(seconds)
                seconds, _out, _peak = timed(partial(enc._run, iter(plans[v]), show_progress=False), device)
                run_s[v].append(seconds)
        stages = {
            "plan_s": {v: statistics.median(t) for v, t in plan_s.items()},
            "run_s": {v: statistics.median(t) for v, t in run_s.items()},
            "runs": {"plan": plan_s, "run": run_s},
            **batch_stats(plans["engine"], engine, budget),
        }
    result["engine_stages"] = stages
    for m in timed_methods:
        med = statistics.median(times[m])
        result["methods"][m] = {
            "seconds": med,
            "runs": times[m],
            "tokens_per_s": real_tokens / med,
            "peak_gb": peaks[m],
        }
    # Equal outputs: engine at tau=1 vs ST.encode on the same model and dtype; eager TempScale vs engine at its tau.
    if "engine_tau1" in outputs and "st" in outputs:
        result["methods"]["engine_tau1"]["cos_ref"] = "ST.encode"
        result["methods"]["engine_tau1"]["max_cos_diff"] = 1 - min_cosine(outputs["engine_tau1"], outputs["st"])
    for variant in ("engine_1m", "engine_inproc", "engine_ids"):
        if variant in outputs and "engine" in outputs:
            result["methods"][variant]["cos_ref"] = "engine"
            result["methods"][variant]["max_cos_diff"] = 1 - min_cosine(outputs[variant], outputs["engine"])
    if "st_b256" in outputs and "st" in outputs:
        result["methods"]["st_b256"]["cos_ref"] = "ST.encode"
        result["methods"]["st_b256"]["max_cos_diff"] = 1 - min_cosine(outputs["st_b256"], outputs["st"])
    if "eager" in outputs:
        fixed = engine_tau1.with_config(temperature=EAGER_TAU).encode(texts)
        result["methods"]["eager"]["cos_ref"] = f"engine tau={EAGER_TAU}"
        result["methods"]["eager"]["max_cos_diff"] = 1 - min_cosine(outputs["eager"], fixed)
    return result


# -- report -----------------------------------------------------------------------------------------------------------


def print_table(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    header = (
        f"{'method':44s} {'model':9s} {'dtype':5s} {'real tok/s':>11s} {'vs ST':>6s} {'vs eager':>8s} "
        f"{'% ceil':>6s} {'peak GB':>7s} {'max cos diff':>12s}  ref"
    )
    lines += [header, "-" * len(header)]
    for res in results:
        ms = res["methods"]
        st_tps = ms.get("st", {}).get("tokens_per_s")
        eager_tps = ms.get("eager", {}).get("tokens_per_s")
        ceil_tps = ms.get("ceiling", {}).get("tokens_per_s")
        for m in METHODS:
            if m not in ms:
                continue
            r = ms[m]
            tps = r["tokens_per_s"]
            vs_st = f"{tps / st_tps:5.2f}x" if st_tps and m != "ceiling" else ""
            vs_eager = f"{tps / eager_tps:7.2f}x" if eager_tps and m != "ceiling" else ""
            share = f"{100 * tps / ceil_tps:5.0f}%" if ceil_tps else ""
            cos = f"{r['max_cos_diff']:12.2e}" if "max_cos_diff" in r else ""
            lines.append(
                f"{LABELS[m]:44s} {res['model']:9s} {res['dtype']:5s} {tps:11,.0f} {vs_st:>6s} "
                f"{vs_eager:>8s} {share:>6s} {r['peak_gb']:7.2f} {cos:>12s}  {r.get('cos_ref', '')}"
            )
        stages = res.get("engine_stages", {})
        if "engine" in ms and "engine_tau1" in ms and stages:
            overhead = ms["engine_tau1"]["tokens_per_s"] / ms["engine"]["tokens_per_s"] - 1
            run_overhead = stages["run_s"]["engine"] / stages["run_s"]["engine_tau1"] - 1
            plan, run = stages["plan_s"]["engine"], stages["run_s"]["engine"]
            padding = stages["padded_tokens"] / res["real_tokens"] - 1
            lines.append(
                f"  -> {res['model']} {res['dtype']}: {res['texts']} texts, {res['real_tokens']:,} real tokens "
                f"(+{100 * padding:.1f}% padding in {stages['shapes']} shapes, {stages['batches']} batches of <= "
                f"{res['engine_budget_tokens']:,} padded tokens, {res['tokenize_workers']} tokenizer processes); "
                f"TempScale overhead {100 * overhead:+.1f}% end to "
                f"end, {100 * run_overhead:+.1f}% in the forward stage; one engine call = plan (tokenise + route, "
                f"CPU) {plan:.2f} s + run (model) {run:.2f} s = {res['real_tokens'] / run / 1e6:.2f}M real tok/s in "
                f"the run stage ({100 * res['real_tokens'] / run / ceil_tps:.0f}% of the ceiling)"
                if ceil_tps
                else ""
            )
        tok = res.get("tokenize_stage")
        if tok:
            lines.append(
                f"  -> {res['model']} tokenising stage alone: {tok['tokens_per_s'] / 1e6:.2f}M tok/s with "
                f"{tok['workers']} processes; CPU s per M tokens: workers {tok['worker_cpu_s_per_mtok']:.3f}, "
                f"engine process {tok['parent_cpu_s_per_mtok']:.3f}"
            )
    print("\n".join(lines))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--texts", type=int, default=32000, help="corpus size (chunks + queries)")
    parser.add_argument("--models", default="minilm-l6,bge-base", help=f"comma list of {sorted(SHAPES)}")
    parser.add_argument("--dtypes", default="bf16", help="comma list of bf16, fp16 (fp32 for CPU smoke tests)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {METHODS}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each engine variant (median)")
    parser.add_argument("--baseline-repeats", type=int, default=2, help="timed runs of each ST/eager baseline")
    parser.add_argument("--ceiling-batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--tokenizer", default=None, help="BERT tokenizer folder (default: .carry/tok or bundled)")
    parser.add_argument("--qmsum", default=None, help="QMSum folder with corpus.jsonl (default: searched)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "results"), help="folder for the JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=None,
        help="cap torch's GPU memory at this many GB (e.g. 80 to check an 80 GB card's fit on a larger GPU)",
    )
    args = parser.parse_args()
    args.methods = args.methods.split(",")

    from transformers import AutoTokenizer

    if args.memory_limit_gb and args.device.startswith("cuda"):
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_limit_gb * 1e9 / total))
    tokenizer_dir = find_tokenizer(args.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    docs, queries, source = load_source(find_qmsum(args.qmsum), random.Random(args.seed))
    t0 = time.perf_counter()
    texts, lengths = build_corpus(tokenizer, docs, queries, args.texts, args.seed)
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    env = {
        "device": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "transformers": __import__("transformers").__version__,
        "sentence_transformers": __import__("sentence_transformers").__version__,
        "cpus": os.cpu_count(),
        "memory_limit_gb": args.memory_limit_gb,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(
        f"{gpu}; torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, "
        f"sentence-transformers {env['sentence_transformers']}, {env['cpus']} CPUs"
        + (f"; torch GPU memory capped at {args.memory_limit_gb:g} GB" if args.memory_limit_gb else "")
    )
    print(
        f"corpus: {len(texts)} texts from {source}, built in {time.perf_counter() - t0:.1f} s; tokens per text "
        f"p5/p50/p95/max {np.percentile(lengths, 5):.0f}/{np.percentile(lengths, 50):.0f}/"
        f"{np.percentile(lengths, 95):.0f}/{lengths.max()}, mean {lengths.mean():.0f}",
        flush=True,
    )

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.models.split(","):
            folder = build_model_folder(shape, tokenizer_dir, Path(tmp))
            for dtype_name in args.dtypes.split(","):
                results.append(run_model(shape, dtype_name, folder, texts, args))
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()  # the models of the last run are gone: start the next from a clean cache
    print()
    print(f"command: {env['command']}")
    print(
        f"device: {gpu}; {len(texts)} texts; real tokens/s end to end (tokenisation included), medians; "
        f"% ceil = share of the dense-ceiling tokens/s; peak GB = torch max_memory_allocated"
    )
    lines = print_table(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "env": env,
        "corpus": {"texts": len(texts), "source": source, "mean_tokens": float(lengths.mean())},
        "results": results,
        "table": lines,
    }
    (out / "encode_gpu.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    print(f"wrote {out / 'encode_gpu.json'}")


if __name__ == "__main__":
    main()
