"""The one encoder every adapter calls: tokenise once, route by length, batch by tokens, encode at each tau.

Pipeline of `TempScaleEncoder.encode`, over parts of `PART_TEXTS` inputs:
1. plan a part: tokenise every text once (prompt prepended, no truncation) to know its true length; apply the
   long-text policy (keep the first window, `truncate`, or cut overlapping windows, `chunk_mean`); route each segment
   to a temperature by the number of tokens the model sees. Token ids stay in one flat numpy array per part;
2. add the part's segments to groups of equal (tau, padded shape) and run every batch a group can fill under the
   padded-token budget, so a text's vector does not depend on which other texts share the call
   (sentence-transformers#2312); the last, partial batch of each group runs once every part is in;
3. scatter results back to input order, mean-pool windows, L2-normalise.

On a GPU the parts are planned in background threads while the GPU runs the batches already full, and their texts
are tokenised by worker processes (`tokenizing.TokenizerPool`, one per CPU core), so tokenisation keeps up with the
GPU. Batches are the same either way: a group's segments in input order, cut every `budget // shape` segments.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from tempscale_rag.attention import AttentionTemperature, patch_attention_temperature
from tempscale_rag.config import LongTextPolicy, TempScaleConfig
from tempscale_rag.models import (
    SpecialTokens,
    canonical_model_name,
    full_window,
    load_sentence_transformer,
    resolve_device,
    resolve_dtype,
    special_tokens,
    transformer_model,
)
from tempscale_rag.routing import LengthRouter
from tempscale_rag.tokenizing import TokenizerPool, TokenizerPoolError
from tempscale_rag.windows import cut_windows

logger = logging.getLogger(__name__)

CPU_BATCH_TOKENS = 2_048
"""Default padded-token budget per forward pass on the CPU. Measured on 2 cores with MiniLM: 2048 beat 4096, 8192
and 16384 by 4% (mixed lengths) to 15% (512-token chunks); CPU attention materialises the score matrices, so
smaller batches stay in cache."""

GPU_MAX_BATCH_TOKENS = 1 << 17
"""Cap of the GPU's padded-token budget. Smaller batches fill sooner, so more of the GPU's work overlaps tokenisation
and less is left for the last, partial batches. Measured end to end in bf16 on 7.3M mixed-length tokens: on an H200,
256k-token batches beat 1M-token ones (MiniLM-L6 4.2M vs 3.8M tokens/s, bge-base 1.67M vs 1.55M); on an H100 with
tokenizer processes, 128k beat 256k (MiniLM 4.4M vs 4.3M, bge-base 1.73M vs 1.69M); 32k was slower."""

PART_TEXTS = 2_048
"""Inputs planned (tokenised and routed) together; on a GPU, parts are planned ahead in background threads."""

_PLAN_AHEAD = 4
"""Parts planned ahead of the GPU at most: bounds the host memory a large call holds in token ids."""


@dataclass
class BucketReport:
    """What happened to the inputs of one length bucket in one `encode` call."""

    bucket: str
    taus: list[float] = field(default_factory=list)
    inputs: int = 0
    segments: int = 0
    tokens: int = 0
    truncated_inputs: int = 0
    dropped_tokens: int = 0


@dataclass
class EncodeReport:
    """Truncation and routing report of the last `encode` call (`TempScaleEncoder.last_report`)."""

    inputs: int = 0
    segments: int = 0
    tokens: int = 0
    empty_inputs: int = 0
    truncated_inputs: int = 0
    dropped_tokens: int = 0
    window: int = 0
    long_text: str = "truncate"
    seconds: float = 0.0
    buckets: dict[str, BucketReport] = field(default_factory=dict)
    input_tokens: list[int] = field(default_factory=list, repr=False)
    """Per input: tokens the model saw for its first (or only) window."""
    input_buckets: list[str] = field(default_factory=list, repr=False)
    """Per input: the bucket label of its first (or only) window."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for `--json` output and index summaries (per-input lists left out)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("buckets", "input_tokens", "input_buckets")}
        out["buckets"] = {k: dict(v.__dict__) for k, v in self.buckets.items()}
        return out

    def merge(self, other: EncodeReport) -> None:
        """Add another call's counts into this one (used to total a multi-call job)."""
        for name in ("inputs", "segments", "tokens", "empty_inputs", "truncated_inputs", "dropped_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds
        self.window, self.long_text = other.window, other.long_text
        for label, rep in other.buckets.items():
            mine = self.buckets.setdefault(label, BucketReport(bucket=label))
            mine.taus = sorted(set(mine.taus) | set(rep.taus))
            for name in ("inputs", "segments", "tokens", "truncated_inputs", "dropped_tokens"):
                setattr(mine, name, getattr(mine, name) + getattr(rep, name))


@dataclass
class _Part:
    """Tokenised, segmented and routed inputs `offset .. offset + inputs` of one call, as flat arrays.

    A segment is one window of one input: `flat[start : start + body]` plus the model's special tokens.
    """

    offset: int  # index of the part's first input in the call
    first_segment: int  # index of the part's first segment in the call
    flat: np.ndarray  # int32 token ids of every input's text, concatenated (no special tokens)
    start: np.ndarray  # per segment: where its body starts in `flat`
    body: np.ndarray  # per segment: text tokens (the model sees `body + specials.count`)
    owner: np.ndarray  # per segment: input index in the call
    tau: np.ndarray  # per segment: attention temperature
    bucket: np.ndarray  # per segment: index of its bucket label in the route table
    first: np.ndarray  # per input: index of its first segment within the part
    dropped: np.ndarray  # per input: tokens cut off by `truncate`
    empty: int  # inputs that are empty or whitespace-only


@dataclass(frozen=True)
class _RouteTable:
    """`LengthRouter.route` for every length up to the window, as arrays: routing a part is one lookup."""

    tau: np.ndarray
    bucket: np.ndarray
    labels: list[str]


class _Group:
    """Segments waiting for a batch: one (tau, padded shape), in input order, as (part, local indices) runs."""

    def __init__(self, per_batch: int) -> None:
        self.per_batch = per_batch
        self.size = 0
        self._runs: deque[tuple[_Part, np.ndarray]] = deque()

    def add(self, part: _Part, local: np.ndarray) -> None:
        self._runs.append((part, local))
        self.size += len(local)

    def take(self, n: int) -> list[tuple[_Part, np.ndarray]]:
        """The next `n` segments (or all that wait, if fewer)."""
        out: list[tuple[_Part, np.ndarray]] = []
        while n and self._runs:
            part, local = self._runs.popleft()
            if len(local) > n:
                self._runs.appendleft((part, local[n:]))
                local = local[:n]
            out.append((part, local))
            n -= len(local)
            self.size -= len(local)
        return out


class _LoadedModel:
    """A loaded SentenceTransformer plus its TempScale patch; shared by encoders that differ only in routing."""

    def __init__(self, model: str | SentenceTransformer, device: str | None, dtype: str) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if isinstance(model, SentenceTransformer):
            self.st = model.to(self.device)
            self.name = canonical_model_name(str(transformer_model(model).name_or_path))
        else:
            self.st = load_sentence_transformer(model, self.device, self.dtype)
            self.name = canonical_model_name(model)
        self.st.eval()
        self.transformer = transformer_model(self.st)
        self.patch: AttentionTemperature = patch_attention_temperature(self.transformer, 1.0)
        self.tokenizer = self.st.tokenizer
        self.specials: SpecialTokens = special_tokens(self.tokenizer)
        self.window = full_window(self.st)
        get_dim = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
        self.dimension = int(get_dim() or 0)
        self.needs_token_type_ids = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.rust_tokenizer = _rust_tokenizer(self.tokenizer)
        # One forward at a time: the temperature is model state, and async adapters call from worker threads.
        self.lock = threading.Lock()
        self._tokenizer_pool: TokenizerPool | None = None
        self._tokenizer_pool_failed = False

    def tokenizer_pool(self, workers: int) -> TokenizerPool | None:
        """The worker processes that tokenise for this model (started on first use), or None to tokenise here."""
        if workers < 1 or self.rust_tokenizer is None or self._tokenizer_pool_failed:
            return None
        if self._tokenizer_pool is not None and self._tokenizer_pool.workers != workers:
            self._tokenizer_pool.close()
            self._tokenizer_pool = None
        if self._tokenizer_pool is None:
            self._tokenizer_pool = TokenizerPool(self.rust_tokenizer.to_str(), workers)
        return self._tokenizer_pool

    def drop_tokenizer_pool(self, error: TokenizerPoolError) -> None:
        """Stop using worker processes for good (they failed): the same ids come from this process, slower."""
        if self._tokenizer_pool_failed:
            return
        self._tokenizer_pool_failed = True
        logger.warning("tokenising in this process from now on, as a tokenizer worker failed: %s", error)
        if self._tokenizer_pool is not None:
            self._tokenizer_pool.close()
            self._tokenizer_pool = None


class TempScaleEncoder:
    """Embeds texts with length-routed attention temperature (TempScale) on a sentence-transformers model.

    Args:
        model: A sentence-transformers model name or path, an already loaded `SentenceTransformer`, or None for the
            bundled all-MiniLM-L6-v2.
        temperature: One global tau for every input (the paper's setting); overrides `buckets`.
        buckets: Token-length buckets with a tau each (list of `Bucket`, dicts, or the string form
            `"0-128:1.0,128-256:0.9,256-:0.8"`); None keeps the default buckets.
        long_text: `"truncate"` (default) or `"chunk_mean"` for texts longer than the model window.
        max_seq_length: Model window in tokens; None uses the model's full position window (512 for MiniLM, where
            sentence-transformers would cap it at 256).
        device: torch device; None picks CUDA when available.
        config: A complete `TempScaleConfig`; the keyword arguments above and `**options` override its fields.
        **options: Any other `TempScaleConfig` field (`schedule`, `query_temperature`, `max_batch_tokens`,
            `query_prompt`, `document_prompt`, `chunk_overlap`, `dtype`, `normalize`).

    Raises:
        ValueError: For an invalid configuration (tau <= 0 or NaN, overlapping buckets, unknown option) or a model
            that cannot be loaded.
        UnsupportedArchitectureError: For a model whose attention TempScale cannot patch.
    """

    def __init__(
        self,
        model: str | SentenceTransformer | None = None,
        *,
        temperature: float | None = None,
        buckets: Any = None,
        long_text: LongTextPolicy | None = None,
        max_seq_length: int | None = None,
        device: str | None = None,
        config: TempScaleConfig | None = None,
        _loaded: _LoadedModel | None = None,
        **options: Any,
    ) -> None:
        fields: dict[str, Any] = dict(config.model_dump() if config is not None else {})
        explicit = {
            "temperature": temperature,
            "buckets": buckets,
            "long_text": long_text,
            "max_seq_length": max_seq_length,
            "device": device,
        }
        fields.update({k: v for k, v in explicit.items() if v is not None})
        fields.update(options)
        if isinstance(model, str):
            fields["model"] = model
        try:
            self.config = TempScaleConfig(**fields)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ValueError(f"invalid tempscale-rag configuration: {exc}") from None
        if _loaded is None:
            source: str | SentenceTransformer = model if isinstance(model, SentenceTransformer) else self.config.model
            _loaded = _LoadedModel(source, self.config.device, self.config.dtype)
        self._m = _loaded
        if isinstance(model, SentenceTransformer):
            # The config must name the model actually in use (manifests and with_config() rely on it).
            self.config = self.config.model_copy(update={"model": self._m.name})
        window = self.config.max_seq_length or self._m.window
        if window > self._m.window:
            raise ValueError(
                f"max_seq_length={window} exceeds the model's {self._m.window} positions; use at most {self._m.window}"
            )
        if window <= self._m.specials.count:
            raise ValueError(f"max_seq_length={window} leaves no room for text after the special tokens")
        self.window = window
        self.router = LengthRouter(self.config)
        self._route_tables: dict[bool, _RouteTable] = {}
        self.last_report = EncodeReport(window=window, long_text=self.config.long_text)

    # -- public API -------------------------------------------------------------------------------------------

    @property
    def model(self) -> SentenceTransformer:
        """The underlying (patched) SentenceTransformer."""
        return self._m.st

    @property
    def model_name(self) -> str:
        """Canonical model name, as recorded in index manifests."""
        return self._m.name

    @property
    def rust_tokenizer(self) -> Any:
        """The fast tokenizer's Rust backend (truncation and padding off), or None for a slow tokenizer."""
        return self._m.rust_tokenizer

    @property
    def dimension(self) -> int:
        """Embedding dimension."""
        return self._m.dimension

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return self._m.device

    def with_config(self, **changes: Any) -> TempScaleEncoder:
        """A new encoder with some config fields changed, sharing this one's loaded model when it can.

        Only routing and window fields can share the model; a different `model`, `device` or `dtype` loads anew.
        """
        config = self.config.model_dump()
        config.update(changes)
        same_model = all(config[k] == getattr(self.config, k) for k in ("model", "device", "dtype"))
        return TempScaleEncoder(config=TempScaleConfig(**config), _loaded=self._m if same_model else None)

    def count_tokens(self, texts: Sequence[str], *, query: bool = False) -> list[int]:
        """Tokens of each text with its prompt and special tokens, before any truncation."""
        n_tokens, _ids = self._tokenize(_check_texts(texts), query=query)
        return (n_tokens + self._m.specials.count).tolist()

    def encode(
        self,
        texts: Sequence[str],
        *,
        query: bool = False,
        normalize: bool | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed texts; rows follow the input order. The call's report is then in `last_report`.

        Args:
            texts: The texts. Empty and whitespace-only strings are encoded as the model encodes an empty text (only
                its special tokens), as sentence-transformers does, and counted in `last_report.empty_inputs`.
            query: Encode as queries: `query_prompt` is prepended and `query_temperature`, if set, applies.
            normalize: L2-normalise the vectors; None uses `config.normalize`.
            show_progress: Show a progress bar over batches on stderr.

        Returns:
            A float32 array of shape `(len(texts), dimension)`.

        Raises:
            TypeError: If `texts` is a single string, or an item is not a string (the message names its position).
            ValueError: If a text is not valid Unicode (a lone surrogate; the message names its position).
        """
        vectors, self.last_report = self.encode_with_report(
            texts, query=query, normalize=normalize, show_progress=show_progress
        )
        return vectors

    def encode_with_report(
        self,
        texts: Sequence[str],
        *,
        query: bool = False,
        normalize: bool | None = None,
        show_progress: bool = False,
    ) -> tuple[np.ndarray, EncodeReport]:
        """Like `encode`, but return this call's report instead of storing it (safe when threads share the engine).

        Returns:
            The vectors and the routing/truncation report of this call.
        """
        start = time.perf_counter()
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), EncodeReport(
                window=self.window, long_text=self.config.long_text
            )
        segment_vectors, parts = self._run(self._stream_plan(texts, query=query), show_progress=show_progress)
        owner = np.concatenate([part.owner for part in parts])
        vectors = self._pool(segment_vectors, owner, len(texts))
        if self.config.normalize if normalize is None else normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        out = vectors.float().cpu().numpy()
        report = self._report(parts, len(texts), query=query, start=start)
        return out, report

    def encode_lists(
        self, texts: Sequence[str], *, query: bool = False, show_progress: bool = False
    ) -> tuple[list[list[float]], EncodeReport]:
        """Like `encode_with_report`, with the vectors as lists of Python floats (what LangChain and LlamaIndex take).

        Turning a vector into Python floats costs the CPU about a quarter of the time an H200 takes to embed a MiniLM
        chunk, and nothing else can run in the meantime (it holds the GIL). Done after the call, it held the framework
        adapters to 76% of the engine's speed; here each batch is converted while the GPU computes the next one, with
        the garbage collector paused (LangChain 89% on an H200 with MiniLM, 78% with the collector on: the engine's
        own feeding threads need the GIL too; 97% with a base-size model).
        Under `long_text="chunk_mean"` a text's windows are pooled after the last batch, so the call converts at the
        end instead.

        Args:
            texts: As for `encode`.
            query: Encode as queries.
            show_progress: Show a progress bar over batches on stderr.

        Returns:
            One list of `dimension` floats per text, in input order (normalised as `config.normalize` says), and the
            call's routing/truncation report.
        """
        start = time.perf_counter()
        texts = _check_texts(texts)
        if self.config.long_text != "truncate" or not texts:
            vectors, report = self.encode_with_report(texts, query=query, show_progress=show_progress)
            with _gc_paused():
                return vectors.tolist(), report
        out: list[list[float]] = [[] for _ in texts]

        def sink(inputs: np.ndarray, vectors: torch.Tensor) -> None:
            # One segment per input under `truncate`, numbered in input order: a segment number is its input's.
            with _gc_paused():
                for i, vector in zip(inputs.tolist(), vectors.tolist(), strict=True):
                    out[i] = vector

        _, parts = self._run(self._stream_plan(texts, query=query), show_progress=show_progress, sink=sink)
        report = self._report(parts, len(texts), query=query, start=start)
        return out, report

    # -- stages -----------------------------------------------------------------------------------------------

    def _tokenize(
        self, texts: list[str], *, query: bool, pool: TokenizerPool | None = None, offset: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each text's token count (int64) and all ids concatenated (int32); no special tokens, no truncation.

        `offset` is the position of `texts[0]` in the caller's list, for error messages.
        """
        prompt = self.config.query_prompt if query else self.config.document_prompt
        if prompt:
            texts = [prompt + t for t in texts]
        try:
            if pool is not None:
                try:
                    return pool.tokenize(texts)
                except TokenizerPoolError as exc:
                    self._m.drop_tokenizer_pool(exc)
            rust = self._m.rust_tokenizer
            if rust is not None:
                # The Rust tokenizer's batch call without offsets: the same ids as the transformers wrapper, ~40%
                # less time (measured on 7.3M tokens), and it runs in parallel over the CPU cores outside the GIL.
                ids = [encoding.ids for encoding in rust.encode_batch_fast(texts, add_special_tokens=False)]
            else:
                # verbose=False: we report truncation ourselves, once per call, not the tokenizer's per-text warning.
                ids = self._m.tokenizer(
                    texts, add_special_tokens=False, truncation=False, return_attention_mask=False, verbose=False
                )["input_ids"]
        except (TypeError, UnicodeEncodeError):
            _check_encodable(texts, offset)
            raise
        n_tokens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return n_tokens, np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(n_tokens.sum()))

    def _plan(self, texts: list[str], *, query: bool) -> list[_Part]:
        """Every part of a call, one after the other (for tests and the benchmark's stage timing)."""
        starts = range(0, len(texts), PART_TEXTS)
        pool = self._tokenizer_pool(len(starts))
        return [self._plan_part(texts, s, query=query, pool=pool) for s in starts]

    def _stream_plan(self, texts: list[str], *, query: bool) -> Iterator[_Part]:
        """The parts of a call in order; on a GPU, planned up to `_PLAN_AHEAD` parts ahead in two threads.

        The threads hand each part's texts to the tokenizer processes (or, without them, to the Rust tokenizer,
        which runs on every core outside the GIL) and route the ids that come back. On the CPU the forward pass
        needs the cores itself, so parts are planned inline, just before they are run.
        """
        starts = range(0, len(texts), PART_TEXTS)
        if not self._plan_ahead() or len(starts) == 1:
            for s in starts:
                yield self._plan_part(texts, s, query=query)
            return
        tokenizers = self._tokenizer_pool(len(starts))
        pending: deque[Future[_Part]] = deque()
        upcoming = iter(starts)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tempscale-plan") as planners:
            try:
                for s in upcoming:
                    pending.append(planners.submit(self._plan_part, texts, s, query=query, pool=tokenizers))
                    if len(pending) == _PLAN_AHEAD:
                        break
                while pending:
                    part = pending.popleft().result()
                    following = next(upcoming, None)
                    if following is not None:
                        pending.append(planners.submit(self._plan_part, texts, following, query=query, pool=tokenizers))
                    yield part
            finally:  # the consumer failed or stopped early: planning the rest would be wasted
                for future in pending:
                    future.cancel()

    def _plan_ahead(self) -> bool:
        return self.device.type == "cuda"

    def _tokenizer_pool(self, parts: int) -> TokenizerPool | None:
        """Worker processes for a call of `parts` parts: on a GPU, for calls of more than one part."""
        if not self._plan_ahead() or parts < 2:
            return None
        workers = self.config.tokenize_workers
        return self._m.tokenizer_pool(_default_tokenize_workers() if workers is None else workers)

    def _plan_part(self, texts: list[str], offset: int, *, query: bool, pool: TokenizerPool | None = None) -> _Part:
        """Tokenise, segment and route inputs `offset .. offset + PART_TEXTS` (vectorised over segments)."""
        chunk = texts[offset : offset + PART_TEXTS]
        n_tokens, flat = self._tokenize(chunk, query=query, pool=pool, offset=offset)
        text_start = np.concatenate(([0], np.cumsum(n_tokens)[:-1])).astype(np.int64)
        config = self.config
        cut = cut_windows(n_tokens, self.window - self._m.specials.count, config.long_text, config.chunk_overlap)
        table = self._route_table(query)
        seen = cut.body + self._m.specials.count
        return _Part(
            offset=offset,
            first_segment=0,  # set by `_run`, which numbers segments as parts arrive
            flat=flat,
            start=text_start[cut.owner] + cut.skip,
            body=cut.body,
            owner=cut.owner + offset,
            tau=table.tau[seen],
            bucket=table.bucket[seen],
            first=cut.first,
            dropped=cut.dropped,
            empty=sum(1 for text in chunk if not text.strip()),
        )

    def _route_table(self, query: bool) -> _RouteTable:
        cached = self._route_tables.get(query)
        if cached is None:
            routes = [self.router.route(n, query=query) for n in range(self.window + 1)]
            labels = list(dict.fromkeys(r.bucket for r in routes))
            cached = _RouteTable(
                tau=np.array([r.tau for r in routes], dtype=np.float64),
                bucket=np.array([labels.index(r.bucket) for r in routes], dtype=np.int64),
                labels=labels,
            )
            self._route_tables[query] = cached
        return cached

    def _report(self, parts: list[_Part], n_inputs: int, *, query: bool, start: float) -> EncodeReport:
        """The call's routing and truncation report, from all its parts' arrays, timed from `start`; logs truncation."""
        report = self._count(parts, n_inputs, query=query)
        report.seconds = time.perf_counter() - start
        _log_truncation(report)
        return report

    def _count(self, parts: list[_Part], n_inputs: int, *, query: bool) -> EncodeReport:
        table = self._route_table(query)
        specials = self._m.specials.count
        report = EncodeReport(inputs=n_inputs, window=self.window, long_text=self.config.long_text)
        if not parts:
            return report
        body = np.concatenate([p.body for p in parts])
        tau = np.concatenate([p.tau for p in parts])
        bucket = np.concatenate([p.bucket for p in parts])
        first = np.concatenate([p.first + p.first_segment for p in parts])
        dropped = np.concatenate([p.dropped for p in parts])
        seen = body + specials
        report.empty_inputs = sum(p.empty for p in parts)
        report.segments = len(body)
        report.tokens = int(seen.sum())
        report.truncated_inputs = int((dropped > 0).sum())
        report.dropped_tokens = int(dropped.sum())
        first_bucket = bucket[first]
        report.input_tokens = seen[first].tolist()
        report.input_buckets = [table.labels[b] for b in first_bucket.tolist()]
        for b in sorted(set(bucket.tolist()) | set(first_bucket.tolist())):
            label = table.labels[b]
            mine, firsts = bucket == b, first_bucket == b
            report.buckets[label] = BucketReport(
                bucket=label,
                taus=sorted(set(tau[mine].tolist())),
                inputs=int(firsts.sum()),
                segments=int(mine.sum()),
                tokens=int(seen[mine].sum()),
                truncated_inputs=int((dropped[firsts] > 0).sum()),
                dropped_tokens=int(dropped[firsts].sum()),
            )
        report.buckets = dict(sorted(report.buckets.items(), key=lambda kv: int(kv[0].split("-")[0].rstrip("+"))))
        return report

    def _batch_tokens(self) -> int:
        if self.config.max_batch_tokens is not None:
            return self.config.max_batch_tokens
        if self.device.type != "cuda":
            return CPU_BATCH_TOKENS
        return _gpu_batch_tokens(self.device, self.model)

    @torch.inference_mode()
    def _run(
        self,
        parts: Iterable[_Part],
        *,
        show_progress: bool,
        sink: Callable[[np.ndarray, torch.Tensor], None] | None = None,
    ) -> tuple[torch.Tensor, list[_Part]]:
        """Run every batch as soon as its group fills it; return segment vectors in segment order and the parts.

        With a `sink`, each batch's vectors (normalised as `config.normalize` says) are instead handed to it on the
        host with their segment numbers, one batch behind the GPU so that the sink's work overlaps the next batch,
        and the returned tensor is empty.
        """
        m = self._m
        budget = self._batch_tokens()
        groups: dict[tuple[float, int], _Group] = {}
        done: list[_Part] = []
        rows: list[torch.Tensor] = []  # each batch's vectors, in the order batches ran
        order: list[np.ndarray] = []  # each batch's segment numbers
        handed: deque[tuple[np.ndarray, torch.Tensor]] = deque()  # with a sink: batches not yet handed to it
        progress = tqdm(desc="Embedding", unit="batch", disable=not show_progress, leave=False)

        cuda = m.device.type == "cuda"
        previous: list[torch.cuda.Event] = []

        def run_batch(tau: float, length: int, members: list[tuple[_Part, np.ndarray]]) -> None:
            features = self._features(members, length, cuda)
            if previous:
                # transformers checks each batch's padding mask on the host (`mask.all()`), a device sync that
                # holds the GIL and so stalls the threads planning the next parts. Waiting for the previous batch
                # here first releases the GIL while the GPU works, and leaves that check nothing to wait for.
                previous.pop().synchronize()
            m.patch.set(tau)
            vectors = m.st(features)["sentence_embedding"].float()
            segments = np.concatenate([part.first_segment + local for part, local in members])
            if sink is None:
                rows.append(vectors)
                order.append(segments)
            else:
                if self.config.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                # Copied to pinned host memory behind the batch on the GPU's queue: done when its event is.
                handed.append((segments, vectors.to("cpu", non_blocking=cuda)))
            if cuda:
                previous.append(torch.cuda.Event())
                previous[0].record()
            if sink is not None and len(handed) > 1:
                # The previous batch's event was waited for above; the GPU is now busy with this one.
                sink(*handed.popleft())
            progress.update()

        with m.lock:
            try:
                segments = 0
                for part in parts:
                    part.first_segment = segments
                    segments += len(part.body)
                    done.append(part)
                    padded = _padded_lengths(part.body + m.specials.count, self.window)
                    keys = np.lexsort((part.tau, -padded))  # longest shapes first, input order inside a group
                    edges = np.flatnonzero((np.diff(padded[keys]) != 0) | (np.diff(part.tau[keys]) != 0)) + 1
                    for local in np.split(keys, edges):
                        key = (float(part.tau[local[0]]), int(padded[local[0]]))
                        group = groups.setdefault(key, _Group(per_batch=max(1, budget // key[1])))
                        group.add(part, np.sort(local))
                        while group.size >= group.per_batch:
                            run_batch(*key, group.take(group.per_batch))
                for key, group in sorted(groups.items(), key=lambda kv: -kv[0][1]):
                    while group.size:
                        run_batch(*key, group.take(group.per_batch))
                if previous:
                    previous.pop().synchronize()
                while sink is not None and handed:
                    sink(*handed.popleft())
            finally:
                m.patch.set(1.0)
                progress.close()
        if not rows:
            return torch.empty((0, m.dimension), dtype=torch.float32, device=m.device), done
        staged = torch.cat(rows)
        index = torch.from_numpy(np.concatenate(order)).to(m.device)
        return torch.empty_like(staged).index_copy_(0, index, staged), done

    def _features(self, members: list[tuple[_Part, np.ndarray]], length: int, pin: bool) -> dict[str, torch.Tensor]:
        """Padded model inputs of one batch; only the token ids and lengths cross to the device.

        Token ids are gathered from the parts' flat arrays straight into (pinned, on GPU) host memory and copied
        without blocking; the attention mask and token type ids are built on the device.
        """
        device = self._m.device
        specials = self._m.specials
        prefix, suffix = len(specials.prefix), len(specials.suffix)
        n_rows = sum(len(local) for _part, local in members)
        ids = torch.empty((n_rows, length), dtype=torch.int64, pin_memory=pin)
        out = ids.numpy()
        out.fill(self._m.pad_id)
        out[:, :prefix] = specials.prefix
        lengths = np.empty(n_rows, dtype=np.int64)
        row = 0
        for part, local in members:
            body = part.body[local]
            rows = np.arange(row, row + len(local))
            width = int(body.max())
            if width:
                columns = np.arange(width)
                gather = np.minimum(part.start[local][:, None] + columns, len(part.flat) - 1)
                np.copyto(
                    out[row : row + len(local), prefix : prefix + width],
                    part.flat[gather],
                    where=columns < body[:, None],
                )
            for j, token in enumerate(specials.suffix):
                out[rows, prefix + body + j] = token
            lengths[row : row + len(local)] = body + prefix + suffix
            row += len(local)
        lengths_t = torch.from_numpy(lengths)
        if pin:
            lengths_t = lengths_t.pin_memory()
        lengths_d = lengths_t.to(device, non_blocking=pin)
        positions = torch.arange(length, device=device)
        tensors = {
            "input_ids": ids.to(device, non_blocking=pin),
            "attention_mask": (positions < lengths_d[:, None]).to(torch.int64),
        }
        if self._m.needs_token_type_ids:
            tensors["token_type_ids"] = torch.zeros((n_rows, length), dtype=torch.int64, device=device)
        return tensors

    def _pool(self, segment_vectors: torch.Tensor, owner: np.ndarray, n_inputs: int) -> torch.Tensor:
        if len(owner) == n_inputs:  # one segment per input, already in input order
            return segment_vectors
        # chunk_mean: average each input's unit-normalised windows (LongEmbed's chunk-and-pool baseline).
        windows = torch.nn.functional.normalize(segment_vectors, p=2, dim=1)
        index = torch.from_numpy(owner).to(windows.device)
        sums = torch.zeros((n_inputs, windows.shape[1]), dtype=windows.dtype, device=windows.device)
        sums.index_add_(0, index, windows)
        counts = torch.bincount(index, minlength=n_inputs).clamp(min=1).unsqueeze(1).to(windows.dtype)
        return sums / counts


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while vectors become Python lists.

    Every row `tolist` makes is a new container, so converting a batch sets off collections that walk every tracked
    object in the process (a LlamaIndex pipeline's nodes among them) and find nothing: lists of floats hold no
    cycles. Measured on 32,000 x 384 floats beside 32,000 `TextNode`s: 0.45 s with the collector on, 0.27 s paused.
    The collector is switched back on only if it was on, so a caller that turned it off keeps it off.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def padded_length(n: int, window: int) -> int:
    """Round a length up to a small fixed set of shapes: multiples of 8 to 64, of 16 to 128, then of 32.

    Fixed shapes let batches be formed from inputs of equal padded length only, so the padding a text gets (and thus
    its vector, to the last bit on a given machine) does not depend on which other texts share the call.
    """
    return int(_padded_lengths(np.asarray([n]), window)[0])


def _rust_tokenizer(tokenizer: Any) -> Any:
    """A copy of a fast tokenizer's Rust backend with truncation and padding off, or None for slow tokenizers."""
    backend = getattr(tokenizer, "_tokenizer", None) or getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _padded_lengths(lengths: np.ndarray, window: int) -> np.ndarray:
    """`padded_length` of every element of an integer array."""
    step = np.where(lengths <= 64, 8, np.where(lengths <= 128, 16, 32))
    return np.minimum(-(-lengths // step) * step, np.maximum(window, lengths))


def _gpu_batch_tokens(device: torch.device, st: SentenceTransformer) -> int:
    """A padded-token budget that fits comfortably in the free memory of the GPU."""
    free, _total = torch.cuda.mem_get_info(device)
    # Blocks torch's caching allocator holds but no tensor uses are free to us too; counting them keeps the budget
    # (and so the batches) the same from one call to the next instead of shrinking after a large call.
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    hidden = int(getattr(transformer_model(st).config, "hidden_size", 768))
    intermediate = int(getattr(transformer_model(st).config, "intermediate_size", 4 * hidden))
    # Peak activation per token in one layer is dominated by the FFN intermediate and a few hidden-size buffers;
    # with fused attention no L x L matrix is stored. 2 bytes (half precision) x generous factor of 4. Measured on
    # an H200 (bf16, 1M-token batches): 17 KB per token for bge-base against the 74 KB assumed here.
    bytes_per_token = (intermediate + 8 * hidden) * 2 * 4
    budget = int(free * 0.5 // bytes_per_token)
    return int(min(max(budget, 4096), GPU_MAX_BATCH_TOKENS))


def _default_tokenize_workers() -> int:
    """Tokenizer processes for a GPU call: one per CPU core this process may use (at most 32).

    Tokenisation is the critical path of a small model on a GPU, and the thread that drives the GPU mostly waits.
    Measured on an H100 host with 16 cores (MiniLM-L6, 7.3M tokens): 14 workers 1.82 s per call, 15 workers 1.68-1.72
    s, 16 workers 1.63 s. On hosts under 6 cores, threads of this process tokenise as fast.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 32) if cores >= 6 else 0


def _check_encodable(texts: Sequence[str], offset: int) -> None:
    """Name the first text a tokenizer cannot take because it is not valid Unicode (a lone surrogate)."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"text at position {offset + i} is not valid Unicode ({exc.reason}); decode files with "
                "errors='replace', or remove the stray surrogate"
            ) from None


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of strings; wrap a single text as [text]")
    if texts is None:
        raise TypeError("encode() takes a list of strings, got None")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"text at position {i} is {type(t).__name__}, not str; every input must be a string")
    return out


def _log_truncation(report: EncodeReport) -> None:
    if not report.truncated_inputs:
        return
    per_bucket = ", ".join(
        f"{b.bucket}: {b.truncated_inputs} inputs/{b.dropped_tokens} tokens"
        for b in report.buckets.values()
        if b.truncated_inputs
    )
    logger.warning(
        "%d of %d inputs exceeded the %d-token window; %d tokens were dropped (%s). "
        "Use long_text='chunk_mean' to embed the whole text, or chunk it before embedding.",
        report.truncated_inputs,
        report.inputs,
        report.window,
        report.dropped_tokens,
        per_bucket,
    )
