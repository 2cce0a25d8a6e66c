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

A pipeline that tokenises elsewhere (Ray CPU tasks, `distributed.embedding`) hands the engine `TokenizedTexts`
(`encode_tokens`): step 1 then only segments and routes. The modules beside this one hold the stages: `planning`
(the planned arrays), `batching` (running them on the model), `reports` (what a call did).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from tempscale_rag.batching import CPU_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS, gpu_batch_tokens, run_parts
from tempscale_rag.config import LongTextPolicy, TempScaleConfig
from tempscale_rag.memory import HeapTrimmer
from tempscale_rag.models import LoadedModel
from tempscale_rag.planning import Part, RouteTable, TokenizedTexts, check_tokens, padded_lengths
from tempscale_rag.reports import BucketReport, EncodeReport, build_report, log_truncation
from tempscale_rag.routing import LengthRouter
from tempscale_rag.tokenizing import TokenizerPool, TokenizerPoolError
from tempscale_rag.windows import cut_windows

__all__ = [
    "CPU_BATCH_TOKENS",
    "GPU_MAX_BATCH_TOKENS",
    "PART_TEXTS",
    "BucketReport",
    "EncodeReport",
    "TempScaleEncoder",
    "TokenizedTexts",
    "padded_length",
]

PART_TEXTS = 2_048
"""Inputs planned (tokenised and routed) together; on a GPU, parts are planned ahead in background threads."""

_PLAN_AHEAD = 4
"""Parts planned ahead of the GPU at most: bounds the host memory a large call holds in token ids."""

_FIRST_PART = 256
"""Texts in the first part planned ahead of a GPU; each next part doubles, up to `PART_TEXTS`. The GPU can start only
once a part is tokenised: on an H100 host (MiniLM, 7.3M tokens) the main thread waited 0.23 s for a first part of
2,048 texts, a sixth of the call, and 0.04 s for one of 1,024. Batches do not depend on where parts are cut."""


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
        _loaded: LoadedModel | None = None,
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
            _loaded = LoadedModel(source, self.config.device, self.config.dtype)
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
        self._route_tables: dict[bool, RouteTable] = {}
        # A long run's freed activations stay in the C heap unless handed back (`tempscale_rag.memory`).
        self._trimmer = HeapTrimmer()
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
        return self._encode(_check_texts(texts), query=query, normalize=normalize, show_progress=show_progress)

    def tokenize(self, texts: Sequence[str], *, query: bool = False) -> TokenizedTexts:
        """Token ids of texts as `encode` plans them (prompt prepended, no special tokens, no truncation).

        What `encode_tokens` takes; without a model, `tokenizing.tokenize_texts` gives the same ids.

        Args:
            texts: The texts (checked as `encode` checks them: TypeError, ValueError).
            query: Prepend `query_prompt` instead of `document_prompt`.
        """
        texts = _check_texts(texts)
        n_tokens, ids = self._tokenize(texts, query=query, pool=self._tokenizer_pool(-(-len(texts) // PART_TEXTS)))
        return TokenizedTexts(ids, n_tokens, blank_texts(texts))

    def encode_tokens(
        self,
        tokens: TokenizedTexts,
        *,
        query: bool = False,
        normalize: bool | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed texts given as token ids (from `tokenize` or a stage elsewhere); the report goes to `last_report`.

        The vectors equal those `encode` gives for the texts the ids came from (same segments, routes and batches).

        Args:
            tokens: Each text's ids without special tokens or truncation, its prompt included.
            query: Route as queries (`query_temperature`, if set); the query prompt must already be in the ids.
            normalize: L2-normalise the vectors; None uses `config.normalize`.
            show_progress: Show a progress bar over batches on stderr.

        Returns:
            A float32 array of shape `(len(tokens), dimension)`.

        Raises:
            TypeError: If `tokens` is not `TokenizedTexts`.
            ValueError: If an id is outside the model's vocabulary.
        """
        vectors, self.last_report = self.encode_tokens_with_report(
            tokens, query=query, normalize=normalize, show_progress=show_progress
        )
        return vectors

    def encode_tokens_with_report(
        self,
        tokens: TokenizedTexts,
        *,
        query: bool = False,
        normalize: bool | None = None,
        show_progress: bool = False,
    ) -> tuple[np.ndarray, EncodeReport]:
        """Like `encode_tokens`, but return this call's report instead of storing it."""
        tokens = check_tokens(tokens, self._m.vocab_size, self.model_name)
        return self._encode(tokens, query=query, normalize=normalize, show_progress=show_progress)

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
        return self._lists(_check_texts(texts), query=query, show_progress=show_progress)

    # -- stages -----------------------------------------------------------------------------------------------

    def _encode(
        self, source: list[str] | TokenizedTexts, *, query: bool, normalize: bool | None, show_progress: bool
    ) -> tuple[np.ndarray, EncodeReport]:
        start = time.perf_counter()
        if not len(source):
            return np.zeros((0, self.dimension), dtype=np.float32), EncodeReport(
                window=self.window, long_text=self.config.long_text
            )
        segment_vectors, parts = self._run(self._stream_plan(source, query=query), show_progress=show_progress)
        owner = np.concatenate([part.owner for part in parts])
        vectors = self._pool(segment_vectors, owner, len(source))
        if self.config.normalize if normalize is None else normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        out = vectors.float().cpu().numpy()
        report = self._report(parts, len(source), query=query, start=start)
        self._trimmer.account(report.tokens)
        return out, report

    def _lists(
        self, source: list[str] | TokenizedTexts, *, query: bool, show_progress: bool
    ) -> tuple[list[list[float]], EncodeReport]:
        start = time.perf_counter()
        if self.config.long_text != "truncate" or not len(source):
            vectors, report = self._encode(source, query=query, normalize=None, show_progress=show_progress)
            with _gc_paused():
                return vectors.tolist(), report
        out: list[list[float]] = [[] for _ in range(len(source))]

        def sink(inputs: np.ndarray, vectors: torch.Tensor) -> None:
            # One segment per input under `truncate`, numbered in input order: a segment number is its input's.
            with _gc_paused():
                for i, vector in zip(inputs.tolist(), vectors.tolist(), strict=True):
                    out[i] = vector

        _, parts = self._run(self._stream_plan(source, query=query), show_progress=show_progress, sink=sink)
        report = self._report(parts, len(source), query=query, start=start)
        self._trimmer.account(report.tokens)
        return out, report

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
            if self._m.id_tokenizer is not None:
                return self._m.id_tokenizer.encode(texts)
            # verbose=False: we report truncation ourselves, once per call, not the tokenizer's per-text warning.
            ids = self._m.tokenizer(
                texts, add_special_tokens=False, truncation=False, return_attention_mask=False, verbose=False
            )["input_ids"]
        except (TypeError, UnicodeEncodeError):
            _check_encodable(texts, offset)
            raise
        n_tokens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return n_tokens, np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(n_tokens.sum()))

    def _plan(self, source: list[str] | TokenizedTexts, *, query: bool) -> list[Part]:
        """Every part of a call, one after the other (for tests and the benchmark's stage timing)."""
        starts = range(0, len(source), PART_TEXTS)
        pool = self._tokenizer_pool(len(starts)) if isinstance(source, list) else None
        return [self._plan_part(source, s, query=query, pool=pool) for s in starts]

    def _stream_plan(self, source: list[str] | TokenizedTexts, *, query: bool) -> Iterator[Part]:
        """The parts of a call in order; on a GPU, planned up to `_PLAN_AHEAD` parts ahead in two threads.

        The threads hand each part's texts to the tokenizer processes (or, without them, to the Rust tokenizer,
        which runs on every core outside the GIL) and route the ids that come back. On the CPU the forward pass
        needs the cores itself, so parts are planned inline, just before they are run; so are token ids given by the
        caller, which only need segmenting and routing (numpy, a fraction of a millisecond per part).
        """
        starts = range(0, len(source), PART_TEXTS)
        if not self._plan_ahead() or len(starts) == 1 or isinstance(source, TokenizedTexts):
            for s in starts:
                yield self._plan_part(source, s, query=query)
            return
        texts = source
        tokenizers = self._tokenizer_pool(len(starts))
        pending: deque[Future[Part]] = deque()
        upcoming = iter(_ramped_spans(len(texts)))
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tempscale-plan") as planners:
            try:
                for a, b in upcoming:
                    pending.append(planners.submit(self._plan_part, texts, a, b, query=query, pool=tokenizers))
                    if len(pending) == _PLAN_AHEAD:
                        break
                while pending:
                    part = pending.popleft().result()
                    following = next(upcoming, None)
                    if following is not None:
                        a, b = following
                        pending.append(planners.submit(self._plan_part, texts, a, b, query=query, pool=tokenizers))
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

    def _plan_part(
        self,
        source: list[str] | TokenizedTexts,
        offset: int,
        stop: int | None = None,
        *,
        query: bool,
        pool: TokenizerPool | None = None,
    ) -> Part:
        """Tokenise (texts only), segment and route inputs `offset .. stop` (default `PART_TEXTS` of them)."""
        stop = offset + PART_TEXTS if stop is None else stop
        if isinstance(source, TokenizedTexts):
            given = source.slice(offset, stop)
            n_tokens, flat, empty = given.lengths, given.ids, given.empty_count()
        else:
            chunk = source[offset:stop]
            n_tokens, flat = self._tokenize(chunk, query=query, pool=pool, offset=offset)
            empty = int(blank_texts(chunk).sum())
        text_start = np.concatenate(([0], np.cumsum(n_tokens)[:-1])).astype(np.int64)
        config = self.config
        cut = cut_windows(n_tokens, self.window - self._m.specials.count, config.long_text, config.chunk_overlap)
        table = self._route_table(query)
        seen = cut.body + self._m.specials.count
        return Part(
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
            empty=empty,
        )

    def _route_table(self, query: bool) -> RouteTable:
        if query not in self._route_tables:
            self._route_tables[query] = RouteTable.build(self.router, self.window, query=query)
        return self._route_tables[query]

    def _report(self, parts: list[Part], n_inputs: int, *, query: bool, start: float) -> EncodeReport:
        """The call's routing and truncation report, from all its parts' arrays, timed from `start`; logs truncation."""
        report = build_report(
            parts,
            n_inputs,
            table=self._route_table(query),
            specials=self._m.specials.count,
            window=self.window,
            long_text=self.config.long_text,
        )
        report.seconds = time.perf_counter() - start
        log_truncation(report)
        return report

    def _batch_tokens(self) -> int:
        if self.config.max_batch_tokens is not None:
            return self.config.max_batch_tokens
        if self.device.type != "cuda":
            return CPU_BATCH_TOKENS
        return gpu_batch_tokens(self.device, self.model)

    def _run(self, parts: Iterator[Part], *, show_progress: bool, sink: Any = None) -> tuple[torch.Tensor, list[Part]]:
        """Run the parts' batches on the model (`batching.run_parts`); segment vectors in segment order, the parts."""
        return run_parts(
            self._m,
            parts,
            window=self.window,
            budget=self._batch_tokens(),
            normalize=self.config.normalize,
            show_progress=show_progress,
            sink=sink,
        )

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
    return int(padded_lengths(np.asarray([n]), window)[0])


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


def blank_texts(texts: Sequence[str]) -> np.ndarray:
    """Per text, True if it is empty or whitespace-only (counted in a report's `empty_inputs`)."""
    return np.fromiter((not text.strip() for text in texts), dtype=bool, count=len(texts))


def _ramped_spans(n: int) -> list[tuple[int, int]]:
    """Part bounds of a call of `n` texts planned ahead: `_FIRST_PART` texts, doubling up to `PART_TEXTS`."""
    spans: list[tuple[int, int]] = []
    start, size = 0, min(_FIRST_PART, PART_TEXTS)
    while start < n:
        spans.append((start, min(n, start + size)))
        start += size
        size = min(2 * size, PART_TEXTS)
    return spans
