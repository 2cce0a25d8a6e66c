"""Token ids from worker processes, so that tokenisation keeps up with a GPU.

The Rust tokenizer's batch call runs on every core outside the GIL, but it scales poorly past a few threads, and its
ids then become Python ints under the GIL. Measured on an H100 host with 16 cores, BERT's WordPiece over 7.3M
tokens: one process reached 3.1M tokens/s with 16 threads; fifteen single-threaded processes reached 5.7M. A small
BERT encodes 9M tokens/s on that GPU. So on a GPU the engine sends each part's texts to `TokenizerPool` workers,
which send back flat int32 arrays, and the engine's own process never touches a token as a Python object.

Workers are plain subprocesses (`python -m tempscale_rag.tokenizing`) that speak a small binary protocol over their
stdin and stdout; each takes about 0.2 s to start and 40 MB of memory. multiprocessing is not used: a spawned child
re-imports the user's main script, which re-runs any unguarded top-level code (a whole indexing job) in every worker,
and a forked child inherits CUDA and thread state.

Protocol, little-endian:
- parent to worker, once: u64 n, then n bytes of tokenizer JSON;
- parent to worker, per request: u64 texts, u64 bytes, i64[texts] UTF-8 sizes, then the UTF-8 bytes;
- worker to parent, per request: u64 texts, u64 tokens, i64[texts] token counts, then i32[tokens] ids; on failure
  u64 `_FAILED`, u64 n, then n bytes of message.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tempscale_rag.planning import TokenizedTexts

_U64 = struct.Struct("<Q")
_FAILED = (1 << 64) - 1
_MIN_SLICE = 16
"""Fewest texts sent to one worker in one request: below that, a round trip costs more than it saves."""


class TokenizerPoolError(RuntimeError):
    """A tokenizer worker could not start, exited, or failed on a request."""


class TokenizerPool:
    """Worker processes that tokenise text with one Rust tokenizer, each single-threaded.

    Workers start on first use and stop when the pool is closed or garbage-collected, or when this process exits
    (a worker exits when its stdin closes). Each worker is driven by one thread of this process, which waits on the
    pipes with the GIL released.

    Args:
        tokenizer_json: The tokenizer, as `tokenizers.Tokenizer.to_str()` gives it (truncation and padding off).
        workers: Number of worker processes.
    """

    def __init__(self, tokenizer_json: str, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a tokenizer pool needs at least one worker, got {workers}")
        self.workers = workers
        self._json = tokenizer_json.encode("utf-8")
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="tempscale-tokenize")
        self._local = threading.local()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self._threads, self._procs)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenise texts (no special tokens) across the workers.

        Returns:
            The token count of each text (int64) and all token ids concatenated in input order (int32).

        Raises:
            TokenizerPoolError: If a worker cannot start, exits, or fails.
            UnicodeEncodeError: If a text cannot be encoded as UTF-8 (a lone surrogate).
        """
        slices = max(1, min(self.workers, len(texts) // _MIN_SLICE))
        bounds = np.linspace(0, len(texts), slices + 1).astype(np.int64).tolist()
        try:
            futures = [self._threads.submit(self._request, texts[a:b]) for a, b in itertools.pairwise(bounds)]
            results = [future.result() for future in futures]
        except (CancelledError, RuntimeError) as exc:  # closed, by another thread that saw a worker fail
            if isinstance(exc, TokenizerPoolError):
                raise
            raise TokenizerPoolError("the tokenizer pool was closed") from exc
        if len(results) == 1:
            return results[0]
        return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])

    def close(self) -> None:
        """Stop the workers; the pool cannot be used afterwards."""
        self._finalizer()

    def _request(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        proc = getattr(self._local, "proc", None)
        if proc is None:
            proc = self._local.proc = self._start()
        blobs = [text.encode("utf-8") for text in texts]
        sizes = np.fromiter(map(len, blobs), dtype="<i8", count=len(blobs))
        to_worker, from_worker = _pipes(proc)
        try:
            to_worker.write(_U64.pack(len(blobs)) + _U64.pack(int(sizes.sum())) + sizes.tobytes())
            to_worker.write(b"".join(blobs))
            to_worker.flush()
            n = _read_u64(from_worker)
            if n == _FAILED:
                message = _read_exact(from_worker, _read_u64(from_worker)).decode("utf-8", "replace")
                raise TokenizerPoolError(f"tokenizer worker {proc.pid} failed: {message}")
            counts = np.empty(n, dtype="<i8")
            ids = np.empty(_read_u64(from_worker), dtype="<i4")
            _read_into(from_worker, counts)
            _read_into(from_worker, ids)
        except (OSError, EOFError) as exc:
            raise TokenizerPoolError(f"tokenizer worker {proc.pid} stopped ({_exit_status(proc)}): {exc}") from exc
        return counts.astype(np.int64, copy=False), ids.astype(np.int32, copy=False)

    def _start(self) -> subprocess.Popen[bytes]:
        # The worker needs only numpy and tokenizers; one Rust thread each, as the parallelism is the processes.
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        # A checkout used through sys.path (not installed) must be importable by the child too.
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tempscale_rag.tokenizing"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise TokenizerPoolError(f"cannot start a tokenizer worker with {sys.executable!r}: {exc}") from exc
        with self._lock:
            self._procs.append(proc)
        try:
            to_worker = _pipes(proc)[0]
            to_worker.write(_U64.pack(len(self._json)) + self._json)
            to_worker.flush()
        except OSError as exc:
            raise TokenizerPoolError(f"tokenizer worker {proc.pid} stopped ({_exit_status(proc)}): {exc}") from exc
        return proc


class IdTokenizer:
    """A Rust tokenizer that returns flat id arrays, with a cheaper twin for ASCII texts where that gives the same ids.

    BERT's normaliser decomposes every text to NFD to strip accents, and looks for CJK characters to space them out;
    neither can change an ASCII text, and NFD is about a fifth of WordPiece's time on English text. So a tokenizer
    whose normaliser is `BertNormalizer` gets a twin without those two steps, used for the texts that are pure ASCII
    (`str.isascii` is a flag CPython keeps, so the test is free); other texts, and other tokenizers, use the original.

    Args:
        tokenizer_json: The tokenizer, as `tokenizers.Tokenizer.to_str()` gives it (truncation and padding off).
    """

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self.full = Tokenizer.from_str(tokenizer_json)
        self.ascii: Any = None
        spec = json.loads(tokenizer_json)
        normalizer = spec.get("normalizer") or {}
        if normalizer.get("type") == "BertNormalizer":
            spec["normalizer"] = {**normalizer, "strip_accents": False, "handle_chinese_chars": False}
            self.ascii = Tokenizer.from_str(json.dumps(spec))

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token counts (int64) and all ids concatenated (int32), in input order; no special tokens."""
        texts = list(texts)
        if self.ascii is None:
            return encode_ids(self.full, texts)
        plain = np.fromiter((t.isascii() for t in texts), dtype=bool, count=len(texts))
        if plain.all():
            return encode_ids(self.ascii, texts)
        if not plain.any():
            return encode_ids(self.full, texts)
        ids: list[Any] = [None] * len(texts)
        for tokenizer, rows in ((self.ascii, np.flatnonzero(plain)), (self.full, np.flatnonzero(~plain))):
            chosen = [texts[i] for i in rows.tolist()]
            encodings = tokenizer.encode_batch_fast(chosen, add_special_tokens=False)
            for i, encoding in zip(rows.tolist(), encodings, strict=True):
                ids[i] = encoding.ids
        counts = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return counts, np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(counts.sum()))


def encode_ids(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token counts (int64) and all ids concatenated (int32) of texts, by one Rust tokenizer, no special tokens.

    The Rust tokenizer's batch call without offsets: the same ids as the transformers wrapper, ~40% less time
    (measured on 7.3M tokens).
    """
    ids = [encoding.ids for encoding in tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]
    counts = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    return counts, np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(counts.sum()))


@functools.lru_cache(maxsize=4)
def _id_tokenizer(tokenizer_json: str) -> IdTokenizer:
    return IdTokenizer(tokenizer_json)


def tokenize_texts(tokenizer_json: str, texts: Sequence[str], prompt: str = "") -> TokenizedTexts:
    """Texts as the engine's `TokenizedTexts`, without a model: what a CPU stage of a pipeline runs (Ray tasks).

    The same ids as `TempScaleEncoder.tokenize(texts)` when `tokenizer_json` is the engine's
    `rust_tokenizer.to_str()` and `prompt` its document (or query) prompt. The tokenizer is built once per process.
    """
    from tempscale_rag.planning import TokenizedTexts  # here: a worker process needs only numpy and tokenizers

    texts = list(texts)
    counts, ids = _id_tokenizer(tokenizer_json).encode([prompt + t for t in texts] if prompt else texts)
    blank = np.fromiter((not t.strip() for t in texts), dtype=bool, count=len(texts))
    return TokenizedTexts(ids, counts, blank)


def _shutdown(threads: ThreadPoolExecutor, procs: list[subprocess.Popen[bytes]]) -> None:
    threads.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the worker's signal to exit
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    if proc.stdin is None or proc.stdout is None:  # not reached: `_start` asks for both pipes
        raise TokenizerPoolError("tokenizer worker started without pipes")
    return proc.stdin, proc.stdout


def _exit_status(proc: subprocess.Popen[bytes]) -> str:
    code = proc.poll()
    return "still running" if code is None else f"exit status {code}"


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError(f"pipe closed after {len(data)} of {n} bytes")
    return data


def _read_u64(stream: IO[bytes]) -> int:
    value: int = _U64.unpack(_read_exact(stream, 8))[0]
    return value


def _read_into(stream: IO[bytes], array: np.ndarray) -> None:
    view = memoryview(array.data).cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise EOFError(f"pipe closed after {got} of {len(view)} bytes")
        got += n


def _serve() -> None:
    """The worker: read the tokenizer, then answer requests until stdin closes."""
    # Ctrl-C reaches the whole process group; the parent decides what happens, and closes stdin to stop us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    inp = sys.stdin.buffer
    tokenizer: Any = None
    try:
        tokenizer = IdTokenizer(_read_exact(inp, _read_u64(inp)).decode("utf-8"))
    except EOFError:
        return
    except Exception as exc:  # reported to the parent on its first request
        failure: Exception | None = exc
    else:
        failure = None
    while True:
        header = inp.read(16)
        if len(header) < 16:
            return  # the parent closed stdin, or died
        n, size = _U64.unpack(header[:8])[0], _U64.unpack(header[8:])[0]
        sizes = np.frombuffer(_read_exact(inp, 8 * n), dtype="<i8")
        blob = _read_exact(inp, size)
        try:
            if failure is not None:
                raise failure
            ends = np.cumsum(sizes).tolist()
            texts = [blob[a:b].decode("utf-8") for a, b in zip([0, *ends][: len(ends)], ends, strict=True)]
            counts, flat = tokenizer.encode(texts)
            out.write(
                _U64.pack(n) + _U64.pack(len(flat)) + counts.astype("<i8").tobytes() + flat.astype("<i4").tobytes()
            )
        except Exception as exc:  # any failure goes back to the parent as a message
            message = f"{type(exc).__name__}: {exc}".encode()
            out.write(_U64.pack(_FAILED) + _U64.pack(len(message)) + message)
        out.flush()


if __name__ == "__main__":
    _serve()


def rust_tokenizer_copy(tokenizer: Any) -> Any:
    """A copy of the Rust tokenizer behind `tokenizer`, truncation and padding off; None for a slow tokenizer.

    Args:
        tokenizer: A `tokenizers.Tokenizer` or a fast transformers tokenizer.
    """
    from tokenizers import Tokenizer

    backend = (
        tokenizer
        if isinstance(tokenizer, Tokenizer)
        else getattr(tokenizer, "_tokenizer", None) or getattr(tokenizer, "backend_tokenizer", None)
    )
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy
