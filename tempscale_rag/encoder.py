"""The one encoder every adapter calls: tokenise once, route by length, batch by tokens, encode at each tau.

Pipeline of `TempScaleEncoder.encode`:
1. tokenise every text once (prompt prepended, no truncation) to know its true length;
2. apply the long-text policy: keep the first window (`truncate`) or cut overlapping windows (`chunk_mean`);
3. route each segment to a temperature by the number of tokens the model sees;
4. group segments by (tau, padded shape) and form batches under a padded-token budget, so a text's vector does not
   depend on which other texts share the call (sentence-transformers#2312);
5. run the model at each group's tau, scatter results back to input order, mean-pool windows, L2-normalise.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
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

logger = logging.getLogger(__name__)

CPU_BATCH_TOKENS = 2_048
"""Default padded-token budget per forward pass on the CPU. Measured on 2 cores with MiniLM: 2048 beat 4096, 8192
and 16384 by 4% (mixed lengths) to 15% (512-token chunks); CPU attention materialises the score matrices, so
smaller batches stay in cache."""


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
class _Plan:
    """Tokenised, segmented and routed inputs of one call."""

    segments: list[list[int]]  # token ids with special tokens, <= window
    owner: np.ndarray  # input index of each segment
    taus: list[float]
    report: EncodeReport


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
        ids = self._tokenize(_check_texts(texts), query=query)
        return [len(x) + self._m.specials.count for x in ids]

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
        plan = self._plan(texts, query=query)
        segment_vectors = self._run(plan, show_progress=show_progress)
        vectors = self._pool(segment_vectors, plan.owner, len(texts))
        if self.config.normalize if normalize is None else normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        out = vectors.float().cpu().numpy()
        plan.report.seconds = time.perf_counter() - start
        _log_truncation(plan.report)
        return out, plan.report

    # -- stages -----------------------------------------------------------------------------------------------

    def _tokenize(self, texts: list[str], *, query: bool) -> list[list[int]]:
        prompt = self.config.query_prompt if query else self.config.document_prompt
        if prompt:
            texts = [prompt + t for t in texts]
        rust = self._m.rust_tokenizer
        if rust is not None:
            # The Rust tokenizer's batch call without offsets: the same ids as the transformers wrapper, ~40% less
            # time (measured on 7.3M tokens), and it runs in parallel over the CPU cores outside the GIL.
            return [encoding.ids for encoding in rust.encode_batch_fast(texts, add_special_tokens=False)]
        # verbose=False: we report truncation ourselves, once per call, instead of the tokenizer's per-text warning.
        encoded = self._m.tokenizer(
            texts, add_special_tokens=False, truncation=False, return_attention_mask=False, verbose=False
        )
        return list(encoded["input_ids"])

    def _plan(self, texts: list[str], *, query: bool) -> _Plan:
        specials = self._m.specials
        capacity = self.window - specials.count
        stride = max(1, capacity - min(self.config.chunk_overlap, capacity - 1))
        report = EncodeReport(inputs=len(texts), window=self.window, long_text=self.config.long_text)
        segments: list[list[int]] = []
        owners: list[int] = []
        taus: list[float] = []
        prefix, suffix = list(specials.prefix), list(specials.suffix)
        for index, (text, ids) in enumerate(zip(texts, self._tokenize(texts, query=query), strict=True)):
            if not text.strip():
                report.empty_inputs += 1
            if len(ids) <= capacity:
                pieces = [ids]
            elif self.config.long_text == "truncate":
                pieces = [ids[:capacity]]
            else:
                pieces = [ids[s : s + capacity] for s in range(0, len(ids) - capacity + stride, stride)]
            dropped = len(ids) - len(pieces[0]) if self.config.long_text == "truncate" else 0
            first_bucket = ""
            for piece in pieces:
                seg = prefix + piece + suffix
                route = self.router.route(len(seg), query=query)
                if not first_bucket:
                    first_bucket = route.bucket
                    report.input_tokens.append(len(seg))
                    report.input_buckets.append(route.bucket)
                segments.append(seg)
                owners.append(index)
                taus.append(route.tau)
                rep = report.buckets.setdefault(route.bucket, BucketReport(bucket=route.bucket))
                rep.segments += 1
                rep.tokens += len(seg)
                if route.tau not in rep.taus:
                    rep.taus.append(route.tau)
            rep = report.buckets[first_bucket]
            rep.inputs += 1
            if dropped:
                rep.truncated_inputs += 1
                rep.dropped_tokens += dropped
                report.truncated_inputs += 1
                report.dropped_tokens += dropped
        report.segments = len(segments)
        report.tokens = sum(len(s) for s in segments)
        report.buckets = dict(sorted(report.buckets.items(), key=lambda kv: int(kv[0].split("-")[0].rstrip("+"))))
        for rep in report.buckets.values():
            rep.taus.sort()
        return _Plan(segments, np.asarray(owners, dtype=np.int64), taus, report)

    def _batch_tokens(self) -> int:
        if self.config.max_batch_tokens is not None:
            return self.config.max_batch_tokens
        if self.device.type != "cuda":
            return CPU_BATCH_TOKENS
        return _gpu_batch_tokens(self.device, self.model)

    def _batches(self, plan: _Plan) -> Iterator[tuple[float, int, np.ndarray]]:
        """Yield (tau, padded length, segment indices) batches under the padded-token budget."""
        budget = self._batch_tokens()
        n = len(plan.segments)
        if not n:
            return
        padded = _padded_lengths(np.fromiter(map(len, plan.segments), dtype=np.int64, count=n), self.window)
        taus = np.asarray(plan.taus, dtype=np.float64)
        # Longest shapes first (the largest allocation happens at once, so an over-large budget fails fast), then by
        # tau; inside a group, input order. One stable sort instead of a Python loop over every segment.
        order = np.lexsort((taus, -padded))
        edges = np.flatnonzero((np.diff(padded[order]) != 0) | (np.diff(taus[order]) != 0)) + 1
        for members in np.split(order, edges):
            tau, length = float(taus[members[0]]), int(padded[members[0]])
            per_batch = max(1, budget // length)
            for s in range(0, len(members), per_batch):
                yield tau, length, members[s : s + per_batch]

    @torch.inference_mode()
    def _run(self, plan: _Plan, *, show_progress: bool) -> torch.Tensor:
        m = self._m
        batches = list(self._batches(plan))
        # Rows land in batch order in `staged`; one permutation at the end puts them in segment order, so no index
        # tensor is copied per batch.
        staged = torch.empty((len(plan.segments), m.dimension), dtype=torch.float32, device=m.device)
        start = 0
        with m.lock:
            try:
                for tau, length, members in tqdm(
                    batches, desc="Embedding", unit="batch", disable=not show_progress, leave=False
                ):
                    m.patch.set(tau)
                    features = self._features([plan.segments[i] for i in members], length, m.device.type == "cuda")
                    embeddings = m.st(features)["sentence_embedding"]
                    staged[start : start + len(members)] = embeddings
                    start += len(members)
            finally:
                m.patch.set(1.0)
        if not batches:
            return staged
        order = torch.from_numpy(np.concatenate([members for _tau, _length, members in batches]))
        return torch.empty_like(staged).index_copy_(0, order.to(m.device), staged)

    def _features(self, segments: list[list[int]], length: int, pin: bool) -> dict[str, torch.Tensor]:
        """Padded model inputs of one batch; only the token ids and lengths cross to the device.

        Token ids are written straight into (pinned, on GPU) host memory and copied without blocking; the attention
        mask and token type ids are built on the device.
        """
        device = self._m.device
        lengths = np.fromiter(map(len, segments), dtype=np.int64, count=len(segments))
        valid = np.arange(length) < lengths[:, None]
        ids = torch.empty((len(segments), length), dtype=torch.int64, pin_memory=pin)
        ids_np = ids.numpy()
        ids_np.fill(self._m.pad_id)
        ids_np[valid] = np.fromiter(itertools.chain.from_iterable(segments), dtype=np.int64, count=int(lengths.sum()))
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
            tensors["token_type_ids"] = torch.zeros((len(segments), length), dtype=torch.int64, device=device)
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
    return int(min(max(budget, 4096), 1 << 20))


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
