"""Incremental, crash-safe indexing of files into a vector store.

Each file is one unit of work: its chunks replace the previous ones of the same source, together with the file's
content fingerprint, and the store commits after each batch of files. A file whose fingerprint is already in the
store was fully indexed before and is skipped, so after Ctrl-C or `kill -9` a re-run redoes exactly the files whose
batch was not committed and ends with the same chunks a clean run would have.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tempscale_rag.encoder import EncodeReport, TempScaleEncoder
from tempscale_rag.ingest.chunking import Chunk, MultiSizeChunker, WindowChunker
from tempscale_rag.ingest.readers import (
    DEFAULT_MAX_FILE_BYTES,
    DocumentError,
    extract_text,
    find_files,
    fingerprint,
    read_bytes,
)
from tempscale_rag.stores import ChunkRecord, VectorStore

logger = logging.getLogger(__name__)

DEFAULT_BATCH_CHUNKS = 256
"""Chunks embedded per engine call and committed together (bounded memory, bounded work lost on a crash)."""


@dataclass
class IndexSummary:
    """What an indexing run did (the CLI prints it, `--json` emits `to_dict()`)."""

    files_indexed: int = 0
    files_skipped: int = 0
    files_failed: list[dict[str, str]] = field(default_factory=list)
    files_pruned: int = 0
    chunks_added: int = 0
    chunks: int = 0
    files: int = 0
    tokens: int = 0
    seconds: float = 0.0
    embedding: EncodeReport = field(default_factory=EncodeReport)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        out = {k: v for k, v in self.__dict__.items() if k != "embedding"}
        out["truncation"] = {
            "truncated_chunks": self.embedding.truncated_inputs,
            "dropped_tokens": self.embedding.dropped_tokens,
            "buckets": {
                label: {"chunks": b.inputs, "tokens": b.tokens, "taus": b.taus,
                        "truncated_chunks": b.truncated_inputs, "dropped_tokens": b.dropped_tokens}
                for label, b in self.embedding.buckets.items()
            },
        }
        return out


@dataclass
class _PendingFile:
    source: str
    fingerprint: str
    chunks: list[Chunk]


class FolderIndexer:
    """Indexes files and folders into a store with the engine.

    Args:
        encoder: The engine that embeds the chunks (document mode).
        store: An open, writable store whose manifest matches the encoder.
        chunker: Splits documents to the window; None builds the default `WindowChunker`.
        max_file_bytes: Larger files are skipped and reported.
        batch_chunks: Chunks per engine call and per commit.
        show_progress: A progress bar on stderr.
    """

    def __init__(
        self,
        encoder: TempScaleEncoder,
        store: VectorStore,
        *,
        chunker: WindowChunker | MultiSizeChunker | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        batch_chunks: int = DEFAULT_BATCH_CHUNKS,
        show_progress: bool = True,
    ) -> None:
        if batch_chunks < 1:
            raise ValueError(f"batch_chunks must be >= 1, got {batch_chunks}")
        self.encoder = encoder
        self.store = store
        self.chunker: WindowChunker | MultiSizeChunker = chunker or WindowChunker(encoder)
        self.max_file_bytes = max_file_bytes
        self.batch_chunks = batch_chunks
        self.show_progress = show_progress

    def run(self, paths: Sequence[str | Path], *, prune: bool = False) -> IndexSummary:
        """Index `paths` (files or folders, recursively); skip unchanged files; optionally prune removed ones.

        Returns:
            The summary. Problem files are listed in `files_failed` and do not stop the run.
        """
        start = time.perf_counter()
        summary = IndexSummary()
        files, problems = find_files(paths)
        for problem in problems:
            summary.files_failed.append({"path": str(problem.path), "reason": problem.reason})
        known = self.store.sources()
        pending: list[_PendingFile] = []
        pending_chunks = 0
        bar = tqdm(total=len(files), desc="Indexing", unit="file", disable=not self.show_progress, leave=False)
        try:
            for path in files:
                source = str(path)
                try:
                    data = read_bytes(path, self.max_file_bytes)
                    digest = fingerprint(data)
                    if known.get(source) == digest:
                        summary.files_skipped += 1
                        continue
                    chunks = self.chunker.split(extract_text(path, data))
                except DocumentError as exc:
                    summary.files_failed.append({"path": source, "reason": exc.reason})
                    logger.warning("skipped %s", exc)
                    continue
                finally:
                    bar.update(1)
                pending.append(_PendingFile(source, digest, chunks))
                pending_chunks += len(chunks)
                if pending_chunks >= self.batch_chunks:
                    self._flush(pending, summary)
                    pending, pending_chunks = [], 0
                    bar.set_postfix(chunks=summary.chunks_added)
            self._flush(pending, summary)
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

    def _flush(self, pending: list[_PendingFile], summary: IndexSummary) -> None:
        if not pending:
            return
        texts = [c.text for f in pending for c in f.chunks]
        vectors = self.encoder.encode(texts, show_progress=False)
        report = self.encoder.last_report
        summary.embedding.merge(report)
        summary.tokens += report.tokens
        row = 0
        for file in pending:
            records = []
            for chunk in file.chunks:
                records.append(
                    ChunkRecord.create(
                        text=chunk.text,
                        vector=vectors[row],
                        source=file.source,
                        position=chunk.position,
                        token_length=report.input_tokens[row],
                        bucket=report.input_buckets[row],
                        # The chunk size each chunk was cut at: document ranking groups chunks by it.
                        metadata={"chunk_tokens": chunk.size} if chunk.size else None,
                    )
                )
                row += 1
            self.store.replace_source(file.source, file.fingerprint, records)
            summary.files_indexed += 1
            summary.chunks_added += len(records)
        # Commit per batch: a crash loses at most this batch, and the files in it are re-done on the next run.
        self.store.commit()

    def _prune(self, known: dict[str, str], found: Iterable[Path], roots: Sequence[str | Path]) -> int:
        present = {str(p) for p in found}
        resolved_roots = [Path(r).expanduser().resolve() for r in roots]
        pruned = 0
        for source in known:
            path = Path(source)
            under_root = any(path == r or r in path.parents for r in resolved_roots)
            if source not in present and (under_root or not path.exists()):
                self.store.delete_source(source)
                pruned += 1
        return pruned


def progress_printer(enabled: bool) -> Callable[[int, int], None] | None:
    """A `progress(done, total)` callback for long Qdrant uploads (a tqdm bar), or None when disabled."""
    if not enabled:
        return None
    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc="Uploading", unit="point", leave=False)
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar.pop("bar").close()

    return update
