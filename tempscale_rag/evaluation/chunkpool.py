"""Chunking many long documents in worker processes: the evaluator's sentence splitting on every core.

`MultiSizeChunker` splits with LlamaIndex's `SentenceSplitter`, whose sentence detection (NLTK punkt) is pure Python:
one core splits about 10k tokens per second per chunk size, so LongEmbed's passkey task (100 documents per length up
to 32k tokens, 6.5M tokens) takes minutes per size in one process. `ChunkPool` runs the same chunker in worker
processes, each on a slice of the documents, and returns exactly the chunks the in-process chunker returns.

Workers are plain subprocesses (`python -m tempscale_rag.evaluation.chunkpool`), as in `tempscale_rag.tokenizing` and
for the same reasons (no re-import of the user's script, no inherited CUDA or thread state). A worker rebuilds the
chunker's `TokenCounter` from its Rust tokenizer (as JSON), window and special-token count: the chunker needs no
model. Protocol: JSON lines; first `{"tokenizer", "window", "n_special", "size", "overlap"}`, then per request
a list of texts, answered by a list of chunk-text lists (or `{"error": message}`).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tempscale_rag.windows import TokenCounter

MIN_POOL_CHARACTERS = 2_000_000
"""Fewest characters worth the workers' start-up (a few seconds: each imports the package)."""


def default_workers() -> int:
    """One worker per core but one (at most 16); 0 (chunk in this process) on hosts under 4 cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores < 4 else min(16, cores - 1)


class ChunkPool:
    """Splits texts at one chunk size in worker processes, with the chunker `tempscale-rag index` uses.

    Args:
        counter: The model's tokenizer, window and special tokens; its tokenizer must be a fast (Rust) one.
        size: Chunk size in content tokens.
        overlap: Chunk overlap in tokens.
        workers: Worker processes (at least 1).

    Raises:
        ValueError: If `workers` < 1 or the tokenizer has no Rust backend to hand to the workers.
    """

    def __init__(self, counter: TokenCounter, size: int, overlap: int, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a chunk pool needs at least one worker, got {workers}")
        tokenizer_json = counter.tokenizer_json
        if tokenizer_json is None:
            raise ValueError("a chunk pool needs a fast (Rust) tokenizer to hand to its workers; chunk in this process")
        self._header = json.dumps(
            {
                "tokenizer": tokenizer_json,
                "window": counter.window,
                "n_special": counter.n_special,
                "size": size,
                "overlap": overlap,
            }
        )
        self.workers = workers

    def split(self, texts: Sequence[str]) -> list[list[str]]:
        """The chunk texts of every text, in order (what `MultiSizeChunker.split` gives, chunk by chunk).

        Raises:
            RuntimeError: If a worker cannot start or fails.
        """
        if not texts:
            return []
        n = min(self.workers, len(texts))
        # Contiguous slices of similar total length: documents of one part often grow or shrink together.
        total = sum(len(t) for t in texts)
        bounds = [0]
        running = 0
        for i, text in enumerate(texts):
            running += len(text)
            if len(bounds) < n and running >= total * len(bounds) / n:
                bounds.append(i + 1)
        bounds.append(len(texts))
        slices = [list(texts[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
        with ThreadPoolExecutor(len(slices)) as pool:
            results = list(pool.map(self._run, slices))
        return [chunks for part in results for chunks in part]

    def _run(self, texts: list[str]) -> list[list[str]]:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, "-m", "tempscale_rag.evaluation.chunkpool"]
        try:
            proc = subprocess.run(
                command,
                input=self._header + "\n" + json.dumps(texts) + "\n",
                capture_output=True,
                text=True,
                encoding="utf-8",
                env=env,
                check=False,
            )
        except OSError as exc:
            raise RuntimeError(f"cannot start a chunking worker: {exc}") from None
        lines = proc.stdout.splitlines()
        answer: Any = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
        if not isinstance(answer, list) or len(answer) != len(texts):
            reason = answer.get("error") if isinstance(answer, dict) else proc.stderr.strip().splitlines()[-1:]
            raise RuntimeError(f"a chunking worker failed (exit {proc.returncode}): {reason}")
        return answer


def _main() -> int:
    from tempscale_rag.config import ChunkingConfig
    from tempscale_rag.ingest.chunking import MultiSizeChunker

    header = json.loads(sys.stdin.readline())
    counter = TokenCounter.from_json(header["tokenizer"], header["window"], header["n_special"])
    chunker = MultiSizeChunker(counter, ChunkingConfig(sizes=(header["size"],), overlap_tokens=header["overlap"]))
    for line in sys.stdin:
        try:
            texts = json.loads(line)
            answer: Any = [[chunk.text for chunk in chunker.split(text)] for text in texts]
        except Exception as exc:  # reported to the parent, which raises it with this message
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
