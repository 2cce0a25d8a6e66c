"""Texts given in memory (`Index.add`): chunked, embedded and stored under their names, unchanged ones skipped.

A text longer than `STREAM_BYTES` characters is split and embedded as a big file is (`FolderIndexer`): block by block
(`split_blocks`, the blocks `text_blocks` cuts the same text from a file into, so the chunks are the same), in
batches of `batch_chunks` chunks that go to the store's `replace_source_batches` as they are embedded: memory holds
the caller's text, a block and a batch, never all of its chunks, vectors or records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from tempscale_rag.encoder import TempScaleEncoder
from tempscale_rag.ingest import indexer
from tempscale_rag.ingest.chunking import Chunk, MultiSizeChunker, WindowChunker
from tempscale_rag.ingest.indexer import chunk_records
from tempscale_rag.ingest.readers import fingerprint, split_blocks
from tempscale_rag.stores import ChunkRecord, VectorStore


def check_texts(documents: Mapping[str, str]) -> None:
    """Raise TypeError unless every name is a non-empty str and every text a str (before anything is written)."""
    for name, text in documents.items():
        if not isinstance(name, str) or not name or not isinstance(text, str):
            raise TypeError("documents must map non-empty source names (str) to texts (str)")


def add_texts(
    store: VectorStore,
    encoder: TempScaleEncoder,
    chunker: WindowChunker | MultiSizeChunker,
    documents: Mapping[str, str],
    *,
    batch_chunks: int | None = None,
) -> int:
    """Store each document's chunks under its name (its old chunks replaced atomically), then commit.

    Args:
        store: A writable store.
        encoder: The index's engine.
        chunker: The index's chunker.
        documents: Source name -> text (see `check_texts`); a text whose fingerprint the store already has is
            skipped.
        batch_chunks: Chunks embedded, and handed to the store, at a time for a long text (None: the indexer's
            `DEFAULT_BATCH_CHUNKS`).

    Returns:
        The number of chunks stored.
    """
    check_texts(documents)
    batch = indexer.DEFAULT_BATCH_CHUNKS if batch_chunks is None else batch_chunks
    if batch < 1:
        raise ValueError(f"batch_chunks must be >= 1, got {batch}")
    known = store.sources()
    stored = 0
    for name, text in documents.items():
        if len(text) > indexer.STREAM_BYTES:
            digest = _text_fingerprint(text)
            if known.get(name) != digest:
                batches = embedded_batches(name, text, encoder, chunker, batch)
                stored += store.replace_source_batches(name, digest, batches)
            continue
        digest = fingerprint(text.encode("utf-8"))
        if known.get(name) == digest:
            continue
        chunks = chunker.split(text)
        records = _embedded(name, chunks, encoder) if chunks else []
        store.replace_source(name, digest, records)
        stored += len(records)
    store.commit()
    return stored


def embedded_batches(
    source: str,
    text: str,
    encoder: TempScaleEncoder,
    chunker: WindowChunker | MultiSizeChunker,
    batch_chunks: int,
) -> Iterator[list[ChunkRecord]]:
    """The records of a long text, `batch_chunks` at a time, split block by block and embedded as they are asked for."""
    pending: list[Chunk] = []
    position = 0
    for block in split_blocks(text):
        for piece in chunker.split(block):
            pending.append(Chunk(piece.text, position, piece.size))
            position += 1
            if len(pending) >= batch_chunks:
                yield _embedded(source, pending, encoder)
                pending = []
    if pending:
        yield _embedded(source, pending, encoder)


def _embedded(source: str, chunks: list[Chunk], encoder: TempScaleEncoder) -> list[ChunkRecord]:
    vectors: Any = encoder.encode([c.text for c in chunks], show_progress=False)
    report = encoder.last_report
    tokens = [int(t) for t in report.input_tokens]
    buckets = [str(b) for b in report.input_buckets]
    return chunk_records(source, chunks, list(vectors), tokens, buckets)


def _text_fingerprint(text: str) -> str:
    """`fingerprint(text.encode("utf-8"))`, encoded a block at a time (no second copy of a long text)."""
    digest = hashlib.sha256()
    step = 1 << 20
    for start in range(0, len(text), step):
        digest.update(text[start : start + step].encode("utf-8"))
    return digest.hexdigest()
