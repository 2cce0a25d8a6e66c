"""`RayIndexer`: `FolderIndexer` spread over a Ray cluster, building the same index.

The driver lists the files (`readers.find_files`) and reads the fingerprints already stored; Ray tasks read, fingerprint
and chunk groups of files with the same functions `FolderIndexer` uses (`read_bytes`, `fingerprint`, `extract_text`,
`WindowChunker`), skipping files whose fingerprint is stored; the chunks go to the `RayEmbedder` actor pool in
batches as they arrive; the driver is the one writer: once every chunk of a file has its vector, the file's chunks
replace its old ones (`replace_source`, atomic per file) and the store commits every `batch_chunks` chunks. A run
killed at any point leaves whole files only, and running it again redoes exactly the files not committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tempscale_rag.config import TempScaleConfig
from tempscale_rag.distributed.cluster import require_ray
from tempscale_rag.distributed.embedding import RayEmbedder
from tempscale_rag.ingest.indexer import DEFAULT_BATCH_CHUNKS, FolderIndexer, IndexSummary
from tempscale_rag.ingest.readers import DEFAULT_MAX_FILE_BYTES, DocumentError, extract_text, find_files, fingerprint
from tempscale_rag.ingest.readers import read_bytes as read_file_bytes
from tempscale_rag.stores import ChunkRecord, VectorStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkingSpec:
    """What a reading task needs to chunk as the single-process indexer does: the engine config and chunk sizes."""

    config: str
    chunk_tokens: int | None
    overlap_tokens: int
    max_file_bytes: int


@dataclass
class FileResult:
    """One file as read by a task: skipped (fingerprint already stored), failed (with the reason) or chunked."""

    source: str
    status: str  # "chunked", "skipped" or "failed"
    fingerprint: str = ""
    reason: str = ""
    chunks: list[str] = field(default_factory=list)


# One chunker per worker process and spec: Ray reuses worker processes, so the tokenizer is loaded once per worker.
_CHUNKERS: dict[ChunkingSpec, Any] = {}


def _chunker(spec: ChunkingSpec) -> Any:
    if spec not in _CHUNKERS:
        from tempscale_rag.encoder import TempScaleEncoder
        from tempscale_rag.ingest.chunking import WindowChunker

        # Chunking needs the tokenizer and window only: a CPU engine, whatever device the actors embed on.
        config = TempScaleConfig.model_validate_json(spec.config).model_copy(
            update={"device": "cpu", "tokenize_workers": 0}
        )
        _CHUNKERS[spec] = WindowChunker(TempScaleEncoder(config=config), spec.chunk_tokens, spec.overlap_tokens)
    return _CHUNKERS[spec]


def read_and_chunk(paths: list[str], known: dict[str, str], spec: ChunkingSpec) -> list[FileResult]:
    """Ray task: read, fingerprint and chunk files, skipping those whose fingerprint is in `known`.

    Args:
        paths: Files as listed by `find_files` (absolute).
        known: The stored fingerprints of these files (only theirs).
        spec: The engine config and chunk sizes.

    Returns:
        One result per file, in the order of `paths`.
    """
    results = []
    for source in paths:
        path = Path(source)
        try:
            data = read_file_bytes(path, spec.max_file_bytes)
            digest = fingerprint(data)
            if known.get(source) == digest:
                results.append(FileResult(source, "skipped", digest))
                continue
            chunks = _chunker(spec).split(extract_text(path, data))
        except DocumentError as exc:
            results.append(FileResult(source, "failed", reason=exc.reason))
            continue
        results.append(FileResult(source, "chunked", digest, chunks=[c.text for c in chunks]))
    return results


@dataclass
class _OpenFile:
    """A chunked file waiting for its vectors."""

    fingerprint: str
    texts: list[str]
    vectors: list[np.ndarray | None]
    tokens: list[int]
    buckets: list[str]
    missing: int


class RayIndexer(FolderIndexer):
    """Indexes files and folders into a store on a Ray cluster; the index is the one `FolderIndexer` builds.

    Args:
        embedder: The actor pool (its config is the engine config used for chunking too).
        store: An open, writable store whose manifest matches the embedder's model and config.
        chunk_tokens: Chunk size in model tokens; None fills the window.
        overlap_tokens: Tokens shared by consecutive chunks.
        max_file_bytes: Larger files are skipped and reported.
        batch_chunks: Chunks stored between two commits.
        show_progress: A progress bar on stderr.
        progress: Called as `progress(chunks_embedded, chunks_read)` after each embedded batch.
    """

    def __init__(
        self,
        embedder: RayEmbedder,
        store: VectorStore,
        *,
        chunk_tokens: int | None = None,
        overlap_tokens: int = 32,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        batch_chunks: int = DEFAULT_BATCH_CHUNKS,
        show_progress: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        # FolderIndexer's own engine and chunker live in the actors and tasks here; only the writer side is shared.
        if batch_chunks < 1:
            raise ValueError(f"batch_chunks must be >= 1, got {batch_chunks}")
        self.embedder = embedder
        self.store = store
        self.max_file_bytes = max_file_bytes
        self.batch_chunks = batch_chunks
        self.show_progress = show_progress
        self.progress = progress
        self.spec = ChunkingSpec(embedder.config.model_dump_json(), chunk_tokens, overlap_tokens, max_file_bytes)

    def run(self, paths: Sequence[str | Path], *, prune: bool = False) -> IndexSummary:
        """Index `paths` (files or folders, recursively); skip unchanged files; optionally prune removed ones.

        Returns:
            The summary, as `FolderIndexer.run` gives it.
        """
        start = time.perf_counter()
        summary = IndexSummary()
        files, problems = find_files(paths)
        for problem in problems:
            summary.files_failed.append({"path": str(problem.path), "reason": problem.reason})
        known = self.store.sources()
        order = {str(p): i for i, p in enumerate(files)}
        failed: dict[str, str] = {}
        open_files: dict[str, _OpenFile] = {}
        done: list[str] = []  # files whose every chunk has a vector, not written yet
        counts = {"read": 0, "embedded": 0, "staged": 0}
        bar = tqdm(total=len(files), desc="Indexing", unit="file", disable=not self.show_progress, leave=False)

        def on_read(result: FileResult) -> list[tuple[str, int]]:
            bar.update(1)
            if result.status == "skipped":
                summary.files_skipped += 1
            elif result.status == "failed":
                failed[result.source] = result.reason
                logger.warning("skipped %s: %s", result.source, result.reason)
            else:
                n = len(result.chunks)
                open_files[result.source] = _OpenFile(
                    result.fingerprint, result.chunks, [None] * n, [0] * n, [""] * n, n
                )
                counts["read"] += n
                if n == 0:
                    done.append(result.source)
                return [(result.source, i) for i in range(n)]
            return []

        try:
            batches = self._batches(files, known, on_read)
            for rows, vectors, report in self.embedder.imap_unordered(batches):
                summary.embedding.merge(report)
                summary.tokens += report.tokens
                for row, (source, position) in enumerate(rows):
                    state = open_files[source]
                    if state.vectors[position] is not None:
                        continue  # defensive: a chunk's vector arrives once per run
                    state.vectors[position] = vectors[row]
                    state.tokens[position] = report.input_tokens[row]
                    state.buckets[position] = report.input_buckets[row]
                    state.missing -= 1
                    if state.missing == 0:
                        done.append(source)
                        counts["staged"] += len(state.texts)
                counts["embedded"] += len(rows)
                if self.progress is not None:
                    self.progress(counts["embedded"], counts["read"])
                if counts["staged"] >= self.batch_chunks:
                    self._write(done, open_files, summary)
                    counts["staged"] = 0
                    bar.set_postfix(chunks=summary.chunks_added)
            self._write(done, open_files, summary)
            summary.files_failed += [
                {"path": source, "reason": failed[source]} for source in sorted(failed, key=order.__getitem__)
            ]
            if prune:
                summary.files_pruned = self._prune(known, files, paths)
                if summary.files_pruned:
                    self.store.commit()
        finally:
            bar.close()
        summary.chunks = self.store.count()
        summary.files = len(self.store.sources())
        summary.seconds = time.perf_counter() - start
        return summary

    def _batches(
        self, files: list[Path], known: dict[str, str], on_read: Callable[[FileResult], list[tuple[str, int]]]
    ) -> Iterator[tuple[list[tuple[str, int]], list[str]]]:
        """Read and chunk files in Ray tasks; yield `(rows, texts)` batches of `batch_rows` chunks as results arrive."""
        ray = require_ray()
        task = ray.remote(read_and_chunk).options(num_cpus=1, max_retries=3)
        spec_ref = ray.put(self.spec)
        step = self.embedder.settings.files_per_task
        groups = [[str(p) for p in files[i : i + step]] for i in range(0, len(files), step)]
        limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending: list[Any] = []
        next_group = 0
        rows: list[tuple[str, int]] = []
        texts: list[str] = []
        batch_rows = self.embedder.plan.batch_rows
        while next_group < len(groups) or pending:
            while next_group < len(groups) and len(pending) < limit:
                group = groups[next_group]
                pending.append(task.remote(group, {s: known[s] for s in group if s in known}, spec_ref))
                next_group += 1
            ready, pending = ray.wait(pending, num_returns=1)
            for result in ray.get(ready[0]):
                for row in on_read(result):
                    rows.append(row)
                    texts.append(result.chunks[row[1]])
                    if len(rows) == batch_rows:
                        yield rows, texts
                        rows, texts = [], []
        if rows:
            yield rows, texts

    def _write(self, done: list[str], open_files: dict[str, _OpenFile], summary: IndexSummary) -> None:
        """Store every finished file (each atomically), then commit."""
        if not done:
            return
        for source in done:
            state = open_files.pop(source)
            records = [
                ChunkRecord.create(
                    text=text,
                    vector=np.asarray(state.vectors[i]),
                    source=source,
                    position=i,
                    token_length=state.tokens[i],
                    bucket=state.buckets[i],
                )
                for i, text in enumerate(state.texts)
            ]
            self.store.replace_source(source, state.fingerprint, records)
            summary.files_indexed += 1
            summary.chunks_added += len(records)
        done.clear()
        self.store.commit()
