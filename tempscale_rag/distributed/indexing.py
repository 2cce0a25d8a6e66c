"""`RayIndexer`: `FolderIndexer` spread over a Ray cluster, building the same index.

A `FolderIndexer` runs the run in the driver with this module's cluster step as its `files_step`: discovery
(`find_files` with the same skip rules), the stored fingerprints, removals, pruning and the summary. Only the
reading-and-embedding step is spread out: Ray tasks call `read_file` (the function `FolderIndexer` reads,
fingerprints, extracts and chunks each file with) on groups of files, with the same chunker (`MultiSizeChunker` for
the chunking the index records, `WindowChunker` for a legacy index); the chunks go to the `RayEmbedder` actor pool in
batches as they arrive, embedded with the engine configuration the index records (its routing buckets included); the
driver is the one writer: it takes the read results in file order (`IndexRun.accept`: unchanged, failures, removals,
encodings), and once every chunk of a file has its vector it stores the file (`chunk_records`, atomic per file, with
each chunk's `chunk_tokens`; `IndexRun.store_file`), committing every `batch_chunks` chunks. A run killed at any
point leaves whole files only, and running it again redoes exactly the files not committed.

Limit: big files are not streamed here as `FolderIndexer` streams them (`read_file` without `stream_above`): a file is
read and chunked whole in one task, and the driver holds its vectors until it is stored whole, so memory grows with
the largest file. Very large files belong to the single-process indexer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from tempscale_rag.config import ChunkingConfig, TempScaleConfig, chunked_index_config
from tempscale_rag.distributed.cluster import require_ray
from tempscale_rag.distributed.embedding import RayEmbedder
from tempscale_rag.distributed.settings import RaySettings
from tempscale_rag.ingest.chunking import Chunk, MultiSizeChunker, WindowChunker
from tempscale_rag.ingest.indexer import (
    DEFAULT_BATCH_CHUNKS,
    FileJob,
    FileRead,
    FolderIndexer,
    IndexRun,
    IndexSummary,
    chunk_records,
    read_file,
)
from tempscale_rag.ingest.readers import DEFAULT_MAX_FILE_BYTES, source_name
from tempscale_rag.stores import ChunkRecord, VectorStore
from tempscale_rag.windows import TokenCounter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkingSpec:
    """What a reading task needs to chunk as the single-process indexer does (JSON strings, so it pickles small).

    Attributes:
        config: The engine configuration (`TempScaleConfig.model_dump_json()`): the tokenizer and window.
        chunking: The chunk sizes (`ChunkingConfig.model_dump_json()`); None: a legacy index, one window-filling
            size (`WindowChunker`).
        max_file_bytes: Larger files are rejected.
    """

    config: str
    chunking: str | None
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES


# One chunker per worker process and spec: Ray reuses worker processes, so the tokenizer is loaded once per worker.
_CHUNKERS: dict[ChunkingSpec, WindowChunker | MultiSizeChunker] = {}


def _chunker(spec: ChunkingSpec) -> WindowChunker | MultiSizeChunker:
    if spec not in _CHUNKERS:
        # Chunking needs the tokenizer and window only: no model is loaded.
        counter = TokenCounter.from_config(TempScaleConfig.model_validate_json(spec.config))
        _CHUNKERS[spec] = (
            WindowChunker(counter)
            if spec.chunking is None
            else MultiSizeChunker(counter, ChunkingConfig.model_validate_json(spec.chunking))
        )
    return _CHUNKERS[spec]


def read_files(paths: list[Path], stored: dict[str, str], spec: ChunkingSpec) -> list[FileRead]:
    """Ray task: `read_file` for each of `paths` with the spec's chunker.

    Args:
        paths: Files as listed by `find_files`.
        stored: The fingerprints the store holds for these files (by `source_name`).
        spec: The engine config, chunk sizes and size limit.

    Returns:
        One record per file, in the order of `paths`.
    """
    chunker = _chunker(spec)
    return [
        read_file(path, chunker, max_file_bytes=spec.max_file_bytes, stored=stored.get(source_name(path)))
        for path in paths
    ]


def _special_tokens(spec: ChunkingSpec) -> int:
    """Tokens the engine adds to every document (what `MultiSizeChunker` sizes its buckets with)."""
    from tempscale_rag.encoder import TempScaleEncoder

    config = TempScaleConfig.model_validate_json(spec.config).model_copy(
        update={"device": "cpu", "tokenize_workers": 0}
    )
    return TempScaleEncoder(config=config).count_tokens([""])[0]


def routing_config(config: TempScaleConfig, chunking: ChunkingConfig) -> TempScaleConfig:
    """`chunked_index_config` (a length bucket per chunk size, one query tau), with the tokenizer loaded in a Ray task.

    The same configuration `Index` gives a new chunked index, without loading the model in the driver. Ray must be
    connected.
    """
    ray = require_ray()
    spec = ChunkingSpec(config.model_dump_json(), chunking.model_dump_json())
    n_special = ray.get(ray.remote(_special_tokens).options(num_cpus=1).remote(spec))
    return chunked_index_config(config, chunking, int(n_special))


@dataclass
class _Pending:
    """A file's chunks on their way through the actors: vectors by position, filled as batches come back."""

    job: FileJob
    chunks: list[Chunk]
    vectors: list[npt.NDArray[np.float32] | None] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)
    missing: int = 0


class RayIndexer:
    """Indexes files and folders into a store on a Ray cluster: the index and summary `FolderIndexer` would give.

    Composed, not derived: a `FolderIndexer` runs the run (discovery, fingerprints, problems, removals, pruning, the
    summary) with this class's cluster step as its `files_step`; the step records every file through the run's
    `IndexRun` and stores it with `chunk_records`, as the local step does.

    Args:
        embedder: The actor pool; its config is the index's engine config (with the routing buckets already derived
            from the chunk sizes, see `routing_config`).
        store: An open, writable store whose manifest matches the embedder's model and config.
        chunking: The chunk sizes and temperatures, as `MultiSizeChunker` takes them; None: one window-filling size
            (`WindowChunker`, a legacy index), as `FolderIndexer` without a chunker.
        max_file_bytes: Larger files are rejected and reported.
        batch_chunks: Chunks stored between two commits.
        show_progress: A progress bar on stderr.
        include_hidden: Also index hidden files and folders (and `__pycache__`, `node_modules`).
        index_dir: The index's own folder: never walked (batches an interrupted single-process run staged there are
            discarded once their file is indexed here).
        exclude: More folders never to walk.
        progress: Called as `progress(chunks_embedded, chunks_read)` after each embedded batch.
    """

    def __init__(
        self,
        embedder: RayEmbedder,
        store: VectorStore,
        *,
        chunking: ChunkingConfig | None = None,
        max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
        batch_chunks: int = DEFAULT_BATCH_CHUNKS,
        show_progress: bool = True,
        include_hidden: bool = False,
        index_dir: str | os.PathLike[str] | None = None,
        exclude: Sequence[str | os.PathLike[str]] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.chunking = chunking
        self.batch_chunks = batch_chunks
        self.show_progress = show_progress
        self.progress = progress
        self._runner = FolderIndexer(
            None,
            store,
            max_file_bytes=max_file_bytes,
            batch_chunks=batch_chunks,
            show_progress=show_progress,
            include_hidden=include_hidden,
            index_dir=index_dir,
            exclude=exclude,
            files_step=self._index_files,
        )
        self._writers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[VectorStore] = []
        self.spec = ChunkingSpec(
            embedder.config.model_dump_json(), chunking.model_dump_json() if chunking else None, max_file_bytes
        )

    def run(self, paths: Sequence[str | Path], *, prune: bool = False) -> IndexSummary:
        """Index `paths` as `FolderIndexer.run` does (same summary), reading and embedding on the cluster."""
        return self._runner.run(paths, prune=prune)

    def _index_files(self, files: list[Path], run: IndexRun) -> None:
        known, summary = run.known, run.summary
        pending: dict[str, _Pending] = {}
        finished: list[_Pending] = []  # every chunk has its vector; stored at the next commit
        counts = {"read": 0, "embedded": 0, "staged": 0}
        bar = tqdm(total=len(files), desc="Indexing", unit="file", disable=not self.show_progress, leave=False)

        def on_read(read: FileRead) -> list[tuple[str, int]]:
            bar.update(1)
            job = run.accept(read)
            if job is None or job.chunks is None:
                return []
            state = _Pending(job, job.chunks, [None] * job.n_chunks, [0] * job.n_chunks, [""] * job.n_chunks)
            state.missing = job.n_chunks
            counts["read"] += job.n_chunks
            if job.n_chunks == 0:
                finished.append(state)
                return []
            pending[job.source] = state
            return [(job.source, i) for i in range(job.n_chunks)]

        try:
            for rows, vectors, report in self.embedder.imap_unordered(self._batches(files, known, on_read)):
                summary.embedding.merge(report)
                summary.tokens += report.tokens
                for row, (source, position) in enumerate(rows):
                    state = pending[source]
                    state.vectors[position] = np.asarray(vectors[row], dtype=np.float32)
                    state.tokens[position] = int(report.input_tokens[row])
                    state.buckets[position] = str(report.input_buckets[row])
                    state.missing -= 1
                    if state.missing == 0:
                        finished.append(pending.pop(source))
                        counts["staged"] += len(state.chunks)
                counts["embedded"] += len(rows)
                if self.progress is not None:
                    self.progress(counts["embedded"], counts["read"])
                if counts["staged"] >= self.batch_chunks:
                    self._store(finished, run)
                    counts["staged"] = 0
                    bar.set_postfix(chunks=summary.chunks_added)
            self._store(finished, run)
        finally:
            bar.close()
            self._close_writers()

    def _batches(
        self, files: list[Path], known: dict[str, str], on_read: Callable[[FileRead], list[tuple[str, int]]]
    ) -> Iterator[tuple[list[tuple[str, int]], list[str]]]:
        """Read files in Ray tasks; yield `(rows, texts)` batches of `batch_rows` chunks as results arrive.

        Results are handed to `on_read` in file order (a group that finishes early waits for the ones before it), so
        failures, removals and encodings are recorded in the order `FolderIndexer` records them.
        """
        ray = require_ray()
        task = ray.remote(read_files).options(num_cpus=1, max_retries=3)
        spec_ref = ray.put(self.spec)
        step = self.embedder.settings.files_per_task
        groups = [files[i : i + step] for i in range(0, len(files), step)]
        limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        in_flight: dict[Any, int] = {}
        arrived: dict[int, list[FileRead]] = {}
        next_group = next_result = 0
        rows: list[tuple[str, int]] = []
        texts: list[str] = []
        batch_rows = self.embedder.plan.batch_rows
        while next_result < len(groups):
            while next_group < len(groups) and len(in_flight) < limit:
                group = groups[next_group]
                stored = {s: known[s] for s in map(source_name, group) if s in known}
                in_flight[task.remote(group, stored, spec_ref)] = next_group
                next_group += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            arrived[in_flight.pop(ready[0])] = ray.get(ready[0])
            while next_result in arrived:
                for read in arrived.pop(next_result):
                    for row in on_read(read):
                        rows.append(row)
                        texts.append(read.chunks[row[1]].text if read.chunks else "")
                        if len(rows) == batch_rows:
                            yield rows, texts
                            rows, texts = [], []
                next_result += 1
        if rows:
            yield rows, texts

    def _store(self, finished: list[_Pending], run: IndexRun) -> None:
        """Store every finished file (each atomically, as `FolderIndexer` does), then commit.

        On a Qdrant server the files go through `RaySettings.writers` concurrent writers (threads of the driver, each
        with its own connection; the vectors are already here, so nothing crosses the cluster again); each file is
        written whole by one writer with `replace_source`, so its old chunks stay searchable until its new ones and
        its fingerprint are in. FAISS (one SQLite writer) and Qdrant's local mode (one client per folder) are
        written file after file by this process.
        """
        if not finished:
            return
        jobs = []
        for state in finished:
            job = state.job
            job.vectors = [v for v in state.vectors if v is not None]
            job.tokens, job.buckets = state.tokens, state.buckets
            jobs.append((job, chunk_records(job.source, state.chunks, job.vectors, job.tokens, job.buckets)))
        finished.clear()
        writers = self._writer_pool(len(jobs))
        if writers is None:
            for job, records in jobs:
                self.store.replace_source(job.source, job.fingerprint, records)
                run.store_file(job, records)
        else:
            futures = [writers.submit(self._write, job.source, job.fingerprint, records) for job, records in jobs]
            wait(futures)  # every write has ended before an error propagates: none runs on behind the caller
            for future in futures:
                future.result()
            for job, records in jobs:
                run.store_file(job, records)
        self.store.commit()

    def _writer_pool(self, files: int) -> ThreadPoolExecutor | None:
        """The concurrent writers' threads (started on first use), or None where the store has one writer."""
        count = min(self.embedder.settings.writers, files)
        if count < 2 or not self.store.concurrent_writers:
            return None
        if self._writers is None:
            self._writers = ThreadPoolExecutor(self.embedder.settings.writers, thread_name_prefix="tempscale-writer")
        return self._writers

    def _write(self, source: str, fingerprint: str, records: list[ChunkRecord]) -> None:
        """One file through this thread's own writer (a connection of its own, opened on first use)."""
        writer = getattr(self._local, "writer", None)
        if writer is None:
            writer = self._local.writer = self.store.writer()
            with self._lock:
                self._connections.append(writer)
        writer.replace_source(source, fingerprint, records)

    def _close_writers(self) -> None:
        if self._writers is not None:
            self._writers.shutdown(wait=True)
            self._writers = None
        for writer in self._connections:
            writer.close()
        self._connections.clear()
        self._local = threading.local()


def index_on_ray(
    paths: Sequence[str | Path],
    settings: RaySettings,
    options: dict[str, Any],
    planned: tuple[TempScaleConfig, ChunkingConfig | None, bool],
    store_for: Callable[[str, int, TempScaleConfig], VectorStore],
    *,
    prune: bool,
) -> IndexSummary:
    """`Index.index_folder` on a Ray cluster: the model is loaded in the actors, never in this process.

    Args:
        paths: Files and folders to index.
        settings: The cluster and its actors.
        options: `RayIndexer` options (`show_progress`, sizes, ...).
        planned: The index's (config, chunking, whether each chunk size gets its own bucket: a new index's plan).
        store_for: Called with the actors' model name, dimension and config; returns the writable store (made for
            a new index, checked against an existing one).
        prune: Remove indexed files that no longer exist.
    """
    from tempscale_rag.distributed.cluster import connect

    config, chunking, size_buckets = planned
    if chunking is not None and size_buckets:
        config = routing_config(config, chunking)
    started = connect(settings)
    try:
        with RayEmbedder(config, settings) as embedder:
            store = store_for(embedder.model_name, embedder.dimension, embedder.config)
            indexer = RayIndexer(embedder, store, chunking=chunking, **options)
            return indexer.run(list(paths), prune=prune)
    finally:
        if started:
            require_ray().shutdown()
