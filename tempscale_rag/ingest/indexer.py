"""Incremental, crash-safe indexing of files into a vector store.

A run has two phases. *Reading* finds the files (`find_files`), reads each one, skips those whose content fingerprint
is already stored, and splits the others into chunks, so the number of chunks to embed is known before embedding
starts. *Embedding* embeds the chunks in batches of `batch_chunks`, across file boundaries and inside big files; the
progress bar counts chunks (with the tokens embedded so far), so its ETA follows the real work.

Each file is replaced atomically: its new chunks and its fingerprint are written in one store transaction
(`replace_source`) once all of its chunks are embedded, so the file's old chunks stay searchable until then and a
mix of old and new chunks is never stored. A big text file (read in blocks) goes to the store through
`replace_source_batches`, one staged batch at a time (FAISS and Qdrant alike): memory holds a block and a batch, never
the file's records.
Finished files are committed after every batch. Batches that end inside a file are saved to a staging folder in the
index (`.partial/`, numpy arrays and JSON, no pickle), so a kill loses at most one batch of work: the next run resumes
the file from its saved batches when its content and the embedding settings are unchanged, and redoes it otherwise.

What happens to each file, and where the summary reports it:

- unchanged (fingerprint already stored): kept, counted in `files_unchanged`;
- new or changed, readable and accepted: (re)indexed, `files_indexed`;
- its content is rejected (binary, undecodable, broken PDF, over the size limit) or has no text: not indexed, and
  chunks it had from an earlier run are removed (`files_removed`), because the index reflects each file's current
  content. Rejected files are failures (`files_failed`), files with no text are skips (`skipped`);
- it could not be read this time (permission denied, I/O error, a folder that cannot be listed): a failure of kind
  `unreadable`; chunks it already has are kept (`kept_unreadable`) and never pruned;
- `prune=True`: indexed files that no longer exist, and files under the given folders that the rules now skip, are
  removed (`pruned`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from tempscale_rag.config import TempScaleConfig, settings_that_shape
from tempscale_rag.encoder import EncodeReport, TempScaleEncoder
from tempscale_rag.ingest.chunking import Chunk, MultiSizeChunker, WindowChunker
from tempscale_rag.ingest.readers import (
    DEFAULT_MAX_FILE_BYTES,
    TEXT_SUFFIXES,
    Discovery,
    DocumentError,
    TextScan,
    extract,
    find_files,
    fingerprint,
    legacy_source_name,
    path_of,
    read_bytes,
    scan_text,
    source_name,
    text_blocks,
)
from tempscale_rag.stores import ChunkRecord, VectorStore

logger = logging.getLogger(__name__)

DEFAULT_BATCH_CHUNKS = 256
"""Chunks embedded per engine call and committed together (bounded memory, bounded work lost on a crash)."""

STREAM_BYTES = 1024 * 1024
"""Text files bigger than this are split and embedded block by block (`text_blocks`), never held whole."""

STAGING_DIR = ".partial"
"""Folder inside the index that holds the embedded batches of files not finished yet."""

# Chunk texts kept in memory between reading and embedding; files read after this much text are re-read when their
# turn comes, so a huge folder does not need its whole text in memory.
_PLAN_TEXT_BUDGET = 256 * 1024 * 1024


@dataclass
class IndexSummary:
    r"""What an indexing run did (the CLI prints `lines()`, `--json` emits `to_dict()`).

    Every path is a printable `source_name` (a name that is not UTF-8 shows its bytes as `\xNN`).

    Attributes:
        files_indexed: Files (re)embedded and stored by this run.
        files_unchanged: Files whose content fingerprint was already stored: kept as they are.
        files_resumed: Of `files_indexed`, files finished from batches an interrupted run had saved.
        files_found: Supported files found in the given paths (0: nothing to index there).
        files_failed: Files and folders that should have been indexed but were not, each
            `{"path", "reason", "kind", "what"}` (`what`: `file`, `folder`, or `path` when unknown) with kind
            `rejected` (content cannot be indexed: binary, undecodable, broken or encrypted PDF, over the size limit),
            `unreadable` (permission denied, I/O error, a folder that cannot be listed; chunks already stored are
            kept) or `missing` (a given path does not exist). A non-empty list means the run was partial.
        skipped: Paths not indexed by rule, each `{"path", "reason", "kind", "what"}` with kind `unsupported` (file
            type), `hidden` (dot-names, `__pycache__`, `node_modules`; see `include_hidden`), `link` (dangling
            symbolic link, link loop, folder already walked), `duplicate` (same file reached twice), `index` (the
            index's own folder), `special` (device, socket, pipe) or `empty` (no text). Not failures.
        files_removed: Previously indexed files whose chunks were removed because their current content is rejected
            or has no text, each `{"path", "reason"}`.
        kept_unreadable: Previously indexed files kept as they were because they (or their folder) could not be read.
        files_pruned: Number of files removed by `prune=True` (listed in `pruned`).
        pruned: The pruned files.
        encodings: Text files that were not UTF-8, each `{"path", "encoding"}` with the detected encoding.
        chunks_added: Chunks stored by this run.
        chunks: Chunks in the index after the run.
        files: Files in the index after the run.
        tokens: Tokens embedded by this run.
        seconds: Wall time of the run.
        embedding: The engine's report (buckets, truncation), summed over the run.
    """

    files_found: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    files_resumed: int = 0
    files_failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    files_removed: list[dict[str, str]] = field(default_factory=list)
    kept_unreadable: list[str] = field(default_factory=list)
    files_pruned: int = 0
    pruned: list[str] = field(default_factory=list)
    encodings: list[dict[str, str]] = field(default_factory=list)
    chunks_added: int = 0
    chunks: int = 0
    files: int = 0
    tokens: int = 0
    seconds: float = 0.0
    embedding: EncodeReport = field(default_factory=EncodeReport)

    @property
    def files_skipped(self) -> int:
        """Same as `files_unchanged` (the name used before skips by rule were listed in `skipped`)."""
        return self.files_unchanged

    @property
    def partial(self) -> bool:
        """True when some file failed (`files_failed` is not empty)."""
        return bool(self.files_failed)

    def failure_line(self) -> str:
        """What failed, counted as files and folders: "1 file and 1 folder could not be indexed"."""
        counts: dict[str, int] = {}
        for item in self.files_failed:
            what = item.get("what", "file")
            counts[what] = counts.get(what, 0) + 1
        names = {"file": ("file", "files"), "folder": ("folder", "folders"), "path": ("path", "paths")}
        parts = [f"{n} {names[w][n != 1]}" for w, n in sorted(counts.items(), key=lambda i: list(names).index(i[0]))]
        text = " and ".join(parts) if len(parts) < 3 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{text} could not be {'read or indexed' if 'folder' in counts else 'indexed'}"

    def skipped_by_kind(self) -> dict[str, int]:
        """How many paths were skipped for each kind of reason."""
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[item["kind"]] = counts.get(item["kind"], 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (every string is valid UTF-8)."""
        out = {k: v for k, v in self.__dict__.items() if k != "embedding"}
        out["files_skipped"] = self.files_unchanged
        out["skipped_by_kind"] = self.skipped_by_kind()
        out["partial"] = self.partial
        out["truncation"] = {
            "truncated_chunks": self.embedding.truncated_inputs,
            "dropped_tokens": self.embedding.dropped_tokens,
            "buckets": {
                label: {
                    "chunks": b.inputs,
                    "tokens": b.tokens,
                    "taus": b.taus,
                    "truncated_chunks": b.truncated_inputs,
                    "dropped_tokens": b.dropped_tokens,
                }
                for label, b in self.embedding.buckets.items()
            },
        }
        return out

    def lines(self, index: str | os.PathLike[str], *, details: bool = False) -> list[str]:
        """The summary as printable lines.

        Totals, buckets, every failure, removal and prune; skips are counted by kind, and listed one per line when
        `details` is True (`-v`).
        """
        skipped = self.skipped_by_kind()
        skip_text = ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items()))
        out = [
            f"indexed {self.files_indexed} files ({self.chunks_added} chunks, {self.tokens} tokens), "
            f"{self.files_unchanged} unchanged, {len(self.files_failed)} failed, {len(self.skipped)} skipped"
            + (f" ({skip_text})" if skip_text else "")
            + f", {len(self.files_removed)} removed, {self.files_pruned} pruned in {self.seconds:.1f}s",
            f"index {source_name(index)}: {self.files} files, {self.chunks} chunks",
        ]
        if not self.files_found:
            out.append("  no supported files were found in the given paths: nothing to index (-v lists the skips)")
        for label, bucket in self.embedding.buckets.items():
            taus = ",".join(f"{t:g}" for t in bucket.taus)
            line = f"  bucket {label:>9} tau {taus:<8} {bucket.inputs:6d} chunks"
            if bucket.truncated_inputs:
                line += f", {bucket.truncated_inputs} truncated ({bucket.dropped_tokens} tokens dropped)"
            out.append(line)
        out += [f"  failed ({f['kind']}): {f['path']}: {f['reason']}" for f in self.files_failed]
        out += [f"  removed: {f['path']}: {f['reason']}" for f in self.files_removed]
        out += [f"  kept (unreadable): {p}" for p in self.kept_unreadable]
        out += [f"  pruned: {p}" for p in self.pruned]
        out += [f"  decoded as {e['encoding']}: {e['path']}" for e in self.encodings]
        if details:
            out += [f"  skipped ({s['kind']}): {s['path']}: {s['reason']}" for s in self.skipped]
        elif self.skipped:
            out.append("  (-v lists the skipped paths, --json too)")
        return out


@dataclass
class FileRead:
    """One file read, fingerprinted and chunked: what `read_file` gives, in this process or in a Ray task.

    Attributes:
        path: The file.
        source: Its printable name (`source_name`), the key of its chunks in the store.
        fingerprint: The content fingerprint ("" when the file could not be read).
        unchanged: The fingerprint equals the stored one: nothing to do.
        chunks: The chunks to embed; None when unchanged, read in blocks (`scan`) or not indexable (`kind`, `reason`).
        scan: For a big text file, its check by `scan_text`: it is split block by block as it is embedded.
        encoding: The detected encoding of a text file that is not UTF-8, else None.
        kind: Why the file is not indexed (a `DocumentError` kind), "" otherwise.
        reason: The reason, for the summary.
    """

    path: Path
    source: str
    fingerprint: str = ""
    unchanged: bool = False
    chunks: list[Chunk] | None = None
    scan: TextScan | None = None
    encoding: str | None = None
    kind: str = ""
    reason: str = ""

    def error(self) -> DocumentError:
        """The problem as the `DocumentError` reading raised (kept as plain fields so the record pickles)."""
        return DocumentError(self.path, self.reason, self.kind)


def read_file(
    path: Path,
    chunker: WindowChunker | MultiSizeChunker,
    *,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
    stored: str | None = None,
    stream_above: int | None = None,
) -> FileRead:
    """Read, fingerprint, extract and chunk one file, as every indexer does; problems are returned, not raised.

    Args:
        path: A file listed by `find_files`.
        chunker: The indexer's chunker.
        max_file_bytes: Larger files are rejected (None: no limit).
        stored: The fingerprint the store holds for this file, if any (an equal one means unchanged).
        stream_above: A text file bigger than this many bytes is only checked (`FileRead.scan`), not read whole;
            None reads every file whole.

    Returns:
        The file's chunks, or why it has none.
    """
    source = source_name(path)
    try:
        if stream_above is not None and path.suffix.lower() in TEXT_SUFFIXES:
            scan = scan_text(path, max_file_bytes, above=stream_above)
            if scan is not None:
                if stored == scan.fingerprint:
                    return FileRead(path, source, scan.fingerprint, unchanged=True)
                encoding = scan.encoding if scan.detected else None
                return FileRead(path, source, scan.fingerprint, scan=scan, encoding=encoding)
        data = read_bytes(path, max_file_bytes)
        digest = fingerprint(data)
        if stored == digest:
            return FileRead(path, source, digest, unchanged=True)
        extracted = extract(path, data)
        chunks = chunker.split(extracted.text)
    except DocumentError as exc:
        return FileRead(path, source, kind=exc.kind, reason=exc.reason)
    encoding = extracted.encoding if extracted.detected else None
    return FileRead(path, source, digest, chunks=chunks, encoding=encoding)


@dataclass
class FileJob:
    """One file to (re)embed: its chunks, and the vectors (token counts, buckets) embedded for them so far."""

    path: Path
    source: str
    fingerprint: str
    n_chunks: int
    chunks: list[Chunk] | None  # None: over the in-memory budget, re-read when its turn comes
    vectors: list[npt.NDArray[np.float32]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)
    saved_parts: int = 0
    saved_chunks: int = 0
    resumed: bool = False
    # A big text file read in blocks: `chunks`, `vectors`, `tokens` and `buckets` hold only what follows its first
    # `base` chunks, which are in the staging folder; `n_chunks` counts the chunks split so far until `split_all`.
    scan: TextScan | None = None
    base: int = 0
    split_all: bool = False
    estimate: int = 0

    @property
    def done(self) -> int:
        """Chunks embedded so far (staged ones included)."""
        return self.base + len(self.tokens)

    @property
    def complete(self) -> bool:
        """Every chunk of the file has its vector."""
        if self.scan is not None:
            return self.split_all and self.done == self.n_chunks
        return self.chunks is not None and self.done == len(self.chunks)


class FolderIndexer:
    """Indexes files and folders into a store with the engine.

    Args:
        encoder: The engine that embeds the chunks (document mode).
        store: An open, writable store whose manifest matches the encoder.
        chunker: Splits documents to the window; None builds the default `WindowChunker`.
        max_file_bytes: Larger files are rejected and reported (None: no limit).
        batch_chunks: Chunks per engine call and per commit (the most work a kill can lose).
        show_progress: Progress bars on stderr.
        include_hidden: Also index hidden files and folders (and `__pycache__`, `node_modules`).
        index_dir: The index's own folder: never walked, and home of the staging folder that lets an interrupted
            file resume. None: no staging (an interrupted file is redone from the start).
        exclude: More folders never to walk.
        files_step: Reads, embeds and stores the files of a run instead of this process's engine (Ray's
            `RayIndexer` passes its cluster step); it gets the run's `IndexRun`. `encoder` and `chunker` are then
            unused (None), and nothing is staged.
    """

    def __init__(
        self,
        encoder: TempScaleEncoder | None,
        store: VectorStore,
        *,
        chunker: WindowChunker | MultiSizeChunker | None = None,
        max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
        batch_chunks: int = DEFAULT_BATCH_CHUNKS,
        show_progress: bool = True,
        include_hidden: bool = False,
        index_dir: str | os.PathLike[str] | None = None,
        exclude: Sequence[str | os.PathLike[str]] = (),
        files_step: Callable[[list[Path], IndexRun], None] | None = None,
    ) -> None:
        if batch_chunks < 1:
            raise ValueError(f"batch_chunks must be >= 1, got {batch_chunks}")
        if encoder is None and files_step is None:
            raise TypeError("FolderIndexer needs an encoder, unless a files_step reads and embeds the files")
        if max_file_bytes is not None and not (isinstance(max_file_bytes, int) and max_file_bytes >= 1):
            raise ValueError(
                f"max_file_bytes must be a whole number of bytes >= 1 or None (no limit), got {max_file_bytes}"
            )
        self.encoder = encoder
        self.store = store
        self.files_step = files_step
        self._chunker = chunker or (WindowChunker(encoder) if encoder is not None else None)
        self.max_file_bytes = max_file_bytes
        self.batch_chunks = batch_chunks
        self.show_progress = show_progress
        self.include_hidden = include_hidden
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self.exclude = [Path(p) for p in exclude] + ([self.index_dir] if self.index_dir is not None else [])
        # A files step stages nothing; the folder is only cleaned of what an interrupted local run left there.
        key = self._settings_key() if files_step is None else ""
        self._staging = _Staging(self.index_dir / STAGING_DIR, key) if self.index_dir else None
        self._known: dict[str, str] = {}

    @property
    def chunker(self) -> WindowChunker | MultiSizeChunker:
        """The chunker files are split with in this process."""
        if self._chunker is None:
            raise TypeError("this FolderIndexer has no chunker: its files_step chunks the files")
        return self._chunker

    def _engine(self) -> TempScaleEncoder:
        if self.encoder is None:
            raise TypeError("this FolderIndexer has no encoder: its files_step embeds the files")
        return self.encoder

    def run(self, paths: Sequence[str | Path], *, prune: bool = False) -> IndexSummary:
        """Index `paths` (files or folders, recursively); skip unchanged files; optionally prune removed ones.

        Returns:
            The summary. Problem files are listed and do not stop the run.
        """
        start = time.perf_counter()
        summary = IndexSummary()
        discovery = find_files(paths, include_hidden=self.include_hidden, exclude=self.exclude)
        summary.files_found = len(discovery.files)
        summary.skipped += [s.to_dict() for s in discovery.skipped]
        summary.files_failed += [f.to_dict() for f in discovery.failed]
        for problem in discovery.failed:
            logger.warning("%s", problem)
        known = self.store.sources()
        self._known = known
        kept: set[str] = set()
        present = {source_name(p) for p in discovery.files}
        for source in known:
            if source not in present and _under(path_of(source), discovery.unlisted_dirs):
                kept.add(source)  # its folder could not be listed: unknown, not gone
        legacy = _legacy_names(discovery.files, known, present)
        self._index_files(discovery.files, known, summary, kept)
        renamed = self._drop_legacy_names(legacy, known)
        if prune:
            self._prune(known, discovery, kept, paths, summary)
        if summary.files_removed or summary.pruned or renamed:
            self.store.commit()
        if self._staging is not None:
            self._staging.discard({source_name(p) for p in discovery.files})
        summary.kept_unreadable = sorted(s for s in kept if s in known)
        summary.chunks = self.store.count()
        summary.files = len(self.store.sources())
        summary.seconds = time.perf_counter() - start
        return summary

    def _index_files(self, files: list[Path], known: dict[str, str], summary: IndexSummary, kept: set[str]) -> None:
        """Read, chunk, embed and store `files` (the part of a run that a `files_step` replaces)."""
        if self.files_step is not None:
            self.files_step(files, IndexRun(self, known, summary, kept))
            return
        self._embed_all(self._read_all(files, known, summary, kept), summary, kept)

    # Reading ---------------------------------------------------------------------------------------------------

    def _read_all(
        self, files: list[Path], known: dict[str, str], summary: IndexSummary, kept: set[str]
    ) -> list[FileJob]:
        jobs: list[FileJob] = []
        budget = _PLAN_TEXT_BUDGET
        bar = tqdm(total=len(files), desc="Reading", unit="file", disable=not self.show_progress, leave=False)
        try:
            for path in files:
                job = self._read(path, known, summary, kept, keep_text=budget > 0)
                bar.update(1)
                if job is None:
                    continue
                if job.chunks is not None:
                    budget -= sum(len(c.text) for c in job.chunks)
                jobs.append(job)
        finally:
            bar.close()
        return jobs

    def _read(
        self, path: Path, known: dict[str, str], summary: IndexSummary, kept: set[str], *, keep_text: bool
    ) -> FileJob | None:
        """Read and split one file; None when there is nothing to embed (unchanged, or a problem handled here)."""
        read = read_file(
            path,
            self.chunker,
            max_file_bytes=self.max_file_bytes,
            stored=known.get(source_name(path)),
            stream_above=STREAM_BYTES,
        )
        return self._accept(read, known, summary, kept, keep_text=keep_text)

    def _accept(
        self, read: FileRead, known: dict[str, str], summary: IndexSummary, kept: set[str], *, keep_text: bool = True
    ) -> FileJob | None:
        """Record what reading one file gave (unchanged, a problem, a detected encoding); the job to embed, if any."""
        if read.unchanged:
            summary.files_unchanged += 1
            return None
        if read.chunks is None and read.scan is None:
            self._problem(read.error(), read.source, known, summary, kept)
            return None
        if read.encoding is not None:
            summary.encodings.append({"path": read.source, "encoding": read.encoding})
            logger.info("%s: decoded as %s", read.source, read.encoding)
        if read.scan is not None:
            return FileJob(read.path, read.source, read.fingerprint, 0, [], scan=read.scan)
        chunks = read.chunks or []
        return FileJob(read.path, read.source, read.fingerprint, len(chunks), chunks if keep_text else None)

    def _problem(
        self, exc: DocumentError, source: str, known: dict[str, str], summary: IndexSummary, kept: set[str]
    ) -> None:
        entry = {**exc.to_dict(), "path": source}
        if exc.kind == "unreadable":
            # Could not be read this time: what the index holds for it is the best we know, so keep it.
            kept.add(source)
        elif source in known and exc.kind != "missing":
            # The file's current content cannot be indexed: its old chunks no longer describe it.
            self.store.delete_source(source)
            known.pop(source)
            summary.files_removed.append({"path": source, "reason": exc.reason})
        if exc.is_failure:
            summary.files_failed.append(entry)
            logger.warning("not indexed: %s", exc)
        else:
            summary.skipped.append(entry)

    # Embedding -------------------------------------------------------------------------------------------------

    def _embed_all(self, jobs: list[FileJob], summary: IndexSummary, kept: set[str]) -> None:
        staging = self._staging
        for job in jobs:
            if job.scan is not None:
                job.estimate = self._estimate_chunks(job.scan.size)
        total = sum(job.n_chunks + job.estimate for job in jobs)
        bar = tqdm(total=total, desc="Embedding", unit="chunk", disable=not self.show_progress, leave=False)
        try:
            batch: list[tuple[FileJob, Chunk]] = []
            for job in jobs:
                chunks = job.chunks if job.chunks is not None else self._reread(job, summary, kept, bar)
                if job.scan is not None:
                    batch = self._embed_blocks(job, batch, summary, kept, bar)
                    continue
                if chunks is None:
                    continue
                if staging is not None:
                    resumed = staging.resume(job, chunks)
                    if resumed:
                        bar.update(resumed)
                job.chunks = chunks
                if job.done == len(chunks):  # everything was staged already
                    self._finish(job, chunks, summary)
                    self.store.commit()
                    continue
                for chunk in chunks[job.done :]:
                    batch.append((job, chunk))
                    if len(batch) >= self.batch_chunks:
                        self._embed_batch(batch, summary, bar)
                        batch = []
            self._embed_batch(batch, summary, bar)
        finally:
            bar.close()

    def _embed_blocks(
        self, job: FileJob, batch: list[tuple[FileJob, Chunk]], summary: IndexSummary, kept: set[str], bar: Any
    ) -> list[tuple[FileJob, Chunk]]:
        """Split a big text file block by block into `batch`, embedding each full batch; the batch left to embed.

        Memory is bounded by a block and a batch, not by the file: embedded chunks are staged and released after
        every batch (with staging), and a resumed file skips the chunks staged by an interrupted run.
        """
        while True:
            staged = self._staging.resume_blocks(job) if self._staging is not None else iter(())
            bar.update(job.base)
            try:
                return self._split_blocks(job, staged, batch, summary, bar)
            except _StaleStaging:
                # The staged chunks are not this file's chunks any more (another chunker): redo it from the start.
                bar.update(-job.base)
                if self._staging is not None:
                    self._staging.drop(job.source)
                job.chunks, job.base, job.n_chunks, job.saved_parts, job.saved_chunks = [], 0, 0, 0, 0
                job.resumed = False
            except DocumentError as exc:
                if self._staging is not None:
                    self._staging.drop(job.source)
                bar.total -= job.n_chunks - job.done
                self._problem(exc, job.source, self._known, summary, kept)
                return [(other, chunk) for other, chunk in batch if other is not job]

    def _split_blocks(
        self, job: FileJob, staged: Iterator[str], batch: list[tuple[FileJob, Chunk]], summary: IndexSummary, bar: Any
    ) -> list[tuple[FileJob, Chunk]]:
        scan = job.scan
        if scan is None:
            raise ValueError(f"{job.source} is not a file read in blocks")
        position = 0
        for block, read in text_blocks(job.path, scan):
            for piece in self.chunker.split(block):
                chunk = Chunk(piece.text, position, piece.size)
                position += 1
                if chunk.position < job.base:
                    if next(staged, None) != chunk.text:
                        raise _StaleStaging
                    continue
                tail = job.chunks  # a new list after each saved batch is released
                if tail is None:
                    raise ValueError(f"{job.source}: finished before it was split")
                tail.append(chunk)
                job.n_chunks = position
                batch.append((job, chunk))
                if len(batch) >= self.batch_chunks:
                    self._embed_batch(batch, summary, bar)
                    batch = []
            estimate = position * scan.size // max(read, 1)
            bar.total += estimate - job.estimate
            job.estimate = estimate
            bar.refresh()
        if position < job.base or next(staged, None) is not None:
            raise _StaleStaging
        job.n_chunks, job.split_all = position, True
        bar.total += position - job.estimate
        job.estimate = position
        if job.complete:  # its last chunks were embedded by the last full batch (or all were staged)
            self._finish(job, job.chunks or [], summary)
            self.store.commit()
        return batch

    def _estimate_chunks(self, size: int) -> int:
        """About how many chunks a text file of `size` bytes makes (for the progress bar; ~4 bytes a token)."""
        sizes = self.chunker.sizes if isinstance(self.chunker, MultiSizeChunker) else (self.chunker.chunk_tokens,)
        return sum(size // (4 * max(s, 1)) + 1 for s in sizes)

    def _reread(self, job: FileJob, summary: IndexSummary, kept: set[str], bar: Any) -> list[Chunk] | None:
        # Files beyond the in-memory budget are read again now; if they changed meanwhile, index what is there now.
        fresh = self._read(job.path, self._known, summary, kept, keep_text=True)
        if fresh is None or fresh.chunks is None:
            bar.total -= job.n_chunks
            return None
        if fresh.scan is not None:  # it grew past STREAM_BYTES meanwhile: read it in blocks
            bar.total -= job.n_chunks
            job.fingerprint, job.n_chunks, job.chunks, job.scan = fresh.fingerprint, 0, [], fresh.scan
            return None
        bar.total += fresh.n_chunks - job.n_chunks
        job.fingerprint, job.n_chunks = fresh.fingerprint, fresh.n_chunks
        return fresh.chunks

    def _embed_batch(self, batch: list[tuple[FileJob, Chunk]], summary: IndexSummary, bar: Any) -> None:
        if not batch:
            return
        encoder = self._engine()
        vectors = encoder.encode([chunk.text for _, chunk in batch], show_progress=False)
        report = encoder.last_report
        summary.embedding.merge(report)
        summary.tokens += report.tokens
        touched: dict[int, FileJob] = {}
        for row, (job, _) in enumerate(batch):
            job.vectors.append(np.asarray(vectors[row], dtype=np.float32))
            job.tokens.append(int(report.input_tokens[row]))
            job.buckets.append(str(report.input_buckets[row]))
            touched[id(job)] = job
        for job in touched.values():
            chunks = job.chunks
            if chunks is not None and job.complete:
                self._finish(job, chunks, summary)
            elif self._staging is not None:
                # The batch ended inside this file: save its part so a kill does not lose it.
                self._staging.save(job)
        # Commit per batch: a crash loses at most this batch; finished files are durable, unfinished ones staged.
        self.store.commit()
        bar.update(len(batch))
        bar.set_postfix(tokens=summary.tokens, files=summary.files_indexed)

    def _finish(self, job: FileJob, chunks: list[Chunk], summary: IndexSummary) -> None:
        # One transaction: the old chunks stay searchable until the new ones and the fingerprint are all in.
        records = self._records(job, chunks)
        if job.base and self._staging is not None:
            # A file read in blocks: its first chunks are staged. They go to the store a staged batch at a time (a
            # 50 MB file is about a million records), followed by the few still in memory.
            batches = itertools.chain(self._staging.record_batches(job), [records])
            stored = self.store.replace_source_batches(job.source, job.fingerprint, batches)
        else:
            self.store.replace_source(job.source, job.fingerprint, records)
            stored = len(records)
        self._finished(job, stored, summary)

    def _records(self, job: FileJob, chunks: list[Chunk]) -> list[ChunkRecord]:
        """The store records of a file whose chunks all have their vectors."""
        return chunk_records(job.source, chunks, job.vectors, job.tokens, job.buckets)

    def _finished(self, job: FileJob, chunks_stored: int, summary: IndexSummary) -> None:
        """Count a file whose chunks replaced its old ones, and release its staged batches and vectors."""
        summary.files_indexed += 1
        summary.files_resumed += int(job.resumed)
        summary.chunks_added += chunks_stored
        if self._staging is not None:
            self._staging.drop(job.source)
        job.vectors, job.chunks = [], None

    def _drop_legacy_names(self, legacy: dict[str, str], known: dict[str, str]) -> bool:
        """Remove the chunks stored under the old name of a non-UTF-8 path once it is indexed under its new one."""
        stored = self.store.sources() if legacy else {}
        dropped = False
        for source, old in legacy.items():
            if source in stored:
                self.store.delete_source(old)
                known.pop(old, None)
                dropped = True
        return dropped

    # Pruning ---------------------------------------------------------------------------------------------------

    def _prune(
        self,
        known: dict[str, str],
        discovery: Discovery,
        kept: set[str],
        roots: Sequence[str | Path],
        summary: IndexSummary,
    ) -> None:
        present = {source_name(p) for p in discovery.files}
        resolved_roots = [Path(r).expanduser().resolve() for r in roots]
        for source in list(known):
            if source in present or source in kept:
                continue
            path = path_of(source)
            try:
                os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                exists = False
            except OSError:
                kept.add(source)  # cannot tell whether it exists: keep it
                continue
            else:
                exists = True
            under_root = _under(path, resolved_roots)
            # Gone, or still there under a folder indexed now but skipped by the rules (hidden, unsupported, ...).
            if not exists or under_root:
                self.store.delete_source(source)
                summary.pruned.append(source)
        summary.files_pruned = len(summary.pruned)

    def _settings_key(self) -> str:
        # Staged vectors may be resumed across settings that do not shape documents (device, batching, queries).
        encoder = self._engine()
        config = encoder.config.model_dump(mode="json", include=set(settings_that_shape(TempScaleConfig, "documents")))
        payload = json.dumps(
            {
                "model": encoder.model_name,
                "config": config,
                "chunker": (
                    self.chunker.chunking.model_dump(mode="json")
                    if isinstance(self.chunker, MultiSizeChunker)
                    else [self.chunker.chunk_tokens, self.chunker.overlap_tokens]
                ),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class IndexRun:
    """One run's bookkeeping, handed by `FolderIndexer.run` to a `files_step` (e.g. Ray's).

    Another reading and embedding step records files through it exactly as the local one does.

    Attributes:
        indexer: The indexer running.
        known: The fingerprints the store held when the run started (updated as files are removed).
        summary: The run's summary, filled in as files are accepted and stored.
        kept: Sources kept as they are because they could not be read.
    """

    indexer: FolderIndexer
    known: dict[str, str]
    summary: IndexSummary
    kept: set[str]

    def accept(self, read: FileRead) -> FileJob | None:
        """Record what reading one file gave (unchanged, a problem, an encoding); the job to embed, if any."""
        return self.indexer._accept(read, self.known, self.summary, self.kept)

    def store_file(self, job: FileJob, records: list[ChunkRecord]) -> None:
        """Count a file whose `records` the step stored (`replace_source`), and release its vectors."""
        self.indexer._finished(job, len(records), self.summary)


def chunk_records(
    source: str,
    chunks: Sequence[Chunk],
    vectors: Sequence[npt.NDArray[np.float32]],
    tokens: Sequence[int],
    buckets: Sequence[str],
) -> list[ChunkRecord]:
    """The store records of one source's chunks, each with its vector, token count and bucket (as the engine reported).

    Every indexer (`FolderIndexer`, `RayIndexer`, `Index.add`) stores chunks through this, so the records agree.
    """
    return [
        ChunkRecord.create(
            text=chunk.text,
            vector=vectors[i],
            source=source,
            position=chunk.position,
            token_length=tokens[i],
            bucket=buckets[i],
            # The chunk size each chunk was cut at: document ranking groups chunks by it.
            metadata={"chunk_tokens": chunk.size} if chunk.size else None,
        )
        for i, chunk in enumerate(chunks)
    ]


class _Staging:
    """Embedded batches of unfinished files, saved after every batch so an interrupted file resumes.

    One folder per source (named by a hash of it), with `meta.json` (source, fingerprint, settings key) and one
    `NNNNNN.npy` (vectors) plus `NNNNNN.json` (texts, token counts, buckets) per saved batch. Each file is written to a
    temporary name and renamed, the JSON last, so a part counts only once it is complete.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        self.key = key

    def _dir(self, source: str) -> Path:
        return self.folder / hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]

    def save(self, job: FileJob) -> None:
        """Save the vectors embedded for `job` since the last save (a file read in blocks then lets them go)."""
        chunks = job.chunks or []
        folder = self._dir(job.source)
        start = job.saved_chunks - job.base  # indexes into the job's lists, which start at chunk `base`
        if job.saved_parts == 0:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(
                folder / "meta.json",
                json.dumps({"source": job.source, "fingerprint": job.fingerprint, "key": self.key}).encode(),
            )
        end = len(job.tokens)
        if end <= start:
            return
        name = f"{job.saved_parts:06d}"
        vectors = np.stack(job.vectors[start:end]).astype(np.float32)
        with _temp_path(folder / f"{name}.npy") as temp, temp.open("wb") as handle:
            np.save(handle, vectors, allow_pickle=False)
        meta = {
            "texts": [c.text for c in chunks[start:end]],
            "tokens": job.tokens[start:end],
            "buckets": job.buckets[start:end],
            "positions": [c.position for c in chunks[start:end]],
            "sizes": [c.size for c in chunks[start:end]],
        }
        _write_atomic(folder / f"{name}.json", json.dumps(meta).encode("utf-8"))
        job.saved_parts += 1
        job.saved_chunks = job.base + end
        if job.scan is not None:
            # On disk now: keep only what follows, so memory is bounded by a batch, not by the file.
            job.chunks, job.vectors = chunks[end:], job.vectors[end:]
            job.tokens, job.buckets = job.tokens[end:], job.buckets[end:]
            job.base += end

    def resume_blocks(self, job: FileJob) -> Iterator[str]:
        """For a file read in blocks: count the chunks an interrupted run staged (`job.base`); their texts, lazily.

        Nothing but the count is loaded; the caller checks each text against the file's chunks as it splits them
        again, and `records` reads the vectors back when the file is finished.
        """
        folder = self._dir(job.source)
        parts = counted = 0
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta != {"source": job.source, "fingerprint": job.fingerprint, "key": self.key}:
                raise ValueError("stale")
            while (folder / f"{parts:06d}.json").exists():
                part = json.loads((folder / f"{parts:06d}.json").read_text(encoding="utf-8"))
                if not (len(part["texts"]) == len(part["positions"]) == len(part["sizes"]) == len(part["tokens"])):
                    raise ValueError("damaged")
                counted += len(part["texts"])
                parts += 1
        except FileNotFoundError:
            parts = counted = 0
        except (OSError, ValueError, KeyError, TypeError):
            self.drop(job.source)
            parts = counted = 0
        job.saved_parts, job.saved_chunks, job.base, job.resumed = parts, counted, counted, counted > 0
        if counted:
            logger.info("%s: resuming after %d chunks embedded by an interrupted run", job.source, counted)
        return self._staged_texts(folder, parts)

    def _staged_texts(self, folder: Path, parts: int) -> Iterator[str]:
        for number in range(parts):
            yield from json.loads((folder / f"{number:06d}.json").read_text(encoding="utf-8"))["texts"]

    def record_batches(self, job: FileJob) -> Iterator[list[ChunkRecord]]:
        """The store records of the chunks staged for a file read in blocks, in order, one saved batch at a time."""
        folder = self._dir(job.source)
        for number in range(job.saved_parts):
            part = json.loads((folder / f"{number:06d}.json").read_text(encoding="utf-8"))
            vectors = np.load(folder / f"{number:06d}.npy", allow_pickle=False).astype(np.float32)
            chunks = [Chunk(t, p, z) for t, p, z in zip(part["texts"], part["positions"], part["sizes"], strict=True)]
            tokens, buckets = [int(t) for t in part["tokens"]], [str(b) for b in part["buckets"]]
            yield chunk_records(job.source, chunks, list(vectors), tokens, buckets)

    def resume(self, job: FileJob, chunks: list[Chunk]) -> int:
        """Load the saved batches of `job` if they match its content and settings; the number of chunks loaded."""
        folder = self._dir(job.source)
        if not folder.exists():
            return 0
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta != {"source": job.source, "fingerprint": job.fingerprint, "key": self.key}:
                raise ValueError("stale")
            loaded = 0
            parts = 0
            while (folder / f"{parts:06d}.json").exists():
                part = json.loads((folder / f"{parts:06d}.json").read_text(encoding="utf-8"))
                vectors = np.load(folder / f"{parts:06d}.npy", allow_pickle=False)
                texts = part["texts"]
                if [c.text for c in chunks[loaded : loaded + len(texts)]] != texts or len(vectors) != len(texts):
                    raise ValueError("chunks differ")
                job.vectors.extend(np.asarray(v, dtype=np.float32) for v in vectors)
                job.tokens.extend(int(t) for t in part["tokens"])
                job.buckets.extend(str(b) for b in part["buckets"])
                loaded += len(texts)
                parts += 1
        except (OSError, ValueError, KeyError, TypeError):
            # Stale (the file or the settings changed) or damaged: redo the file from the start.
            job.vectors, job.tokens, job.buckets = [], [], []
            self.drop(job.source)
            return 0
        job.saved_parts = parts
        job.saved_chunks = loaded
        job.resumed = loaded > 0
        if loaded:
            logger.info("%s: resuming after %d chunks embedded by an interrupted run", job.source, loaded)
        return loaded

    def drop(self, source: str) -> None:
        """Forget the saved batches of `source`."""
        shutil.rmtree(self._dir(source), ignore_errors=True)

    def discard(self, sources: set[str]) -> None:
        """Forget saved batches of `sources` (they are finished or obsolete) and of files that no longer exist."""
        if not self.folder.exists():
            return
        for folder in self.folder.iterdir():
            try:
                source = json.loads((folder / "meta.json").read_text(encoding="utf-8"))["source"]
            except (OSError, ValueError, KeyError, TypeError):
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if source in sources or not path_of(source).exists():
                shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when empty


def nothing_to_index(
    paths: Sequence[str | os.PathLike[str]],
    *,
    include_hidden: bool = False,
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> str | None:
    """Why `paths` hold no file to index, as a sentence, or None when they hold one (a walk, no file is read).

    `tempscale-rag index` refuses to create a new, empty index for an empty folder (a mistyped path, as a rule).
    """
    discovery = find_files(paths, include_hidden=include_hidden, exclude=exclude)
    if discovery.files:
        return None
    names = ", ".join(repr(source_name(p)) for p in paths)
    problems = [f"{e}" for e in discovery.failed]
    kinds: dict[str, int] = {}
    for skip in discovery.skipped:
        kinds[skip.kind] = kinds.get(skip.kind, 0) + 1
    if not problems and not kinds:
        return f"nothing to index: {names} holds no files"
    found = []
    if kinds:
        counted = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        found.append(f"{len(discovery.skipped)} skipped ({counted})")
    if problems:
        found.append(f"{len(problems)} failed ({'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''})")
    hint = "; --include-hidden indexes hidden ones" if "hidden" in kinds else ""
    return f"nothing to index: {names} holds no supported file ({', '.join(found)}{hint})"


class _StaleStaging(Exception):
    """The chunks staged for a file are not the chunks it splits into now."""


def _legacy_names(files: list[Path], known: dict[str, str], present: set[str]) -> dict[str, str]:
    r"""`{source: old name}` for files stored by an earlier version under their `legacy_source_name`.

    The old name (`/a/caf\xe9.txt`) is taken for this file only when no file of that literal name exists.
    """
    out = {}
    for path in files:
        old = legacy_source_name(path)
        if old is not None and old in known and old not in present and not os.path.lexists(old):
            out[source_name(path)] = old
    return out


def _under(path: Path, folders: Sequence[Path]) -> bool:
    return any(folder == path or folder in path.parents for folder in folders)


@contextlib.contextmanager
def _temp_path(target: Path) -> Iterator[Path]:
    temp = target.with_name(target.name + ".tmp")
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _write_atomic(target: Path, data: bytes) -> None:
    with _temp_path(target) as temp:
        temp.write_bytes(data)


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
