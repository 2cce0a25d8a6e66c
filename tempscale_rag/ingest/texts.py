"""Texts given in memory (`Index.add`): chunked, embedded and stored under their names, unchanged ones skipped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tempscale_rag.encoder import TempScaleEncoder
from tempscale_rag.ingest.chunking import MultiSizeChunker, WindowChunker
from tempscale_rag.ingest.indexer import chunk_records
from tempscale_rag.ingest.readers import fingerprint
from tempscale_rag.stores import VectorStore


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
) -> int:
    """Store each document's chunks under its name (its old chunks replaced atomically), then commit.

    Args:
        store: A writable store.
        encoder: The index's engine.
        chunker: The index's chunker.
        documents: Source name -> text (see `check_texts`); a text whose fingerprint the store already has is
            skipped.

    Returns:
        The number of chunks stored.
    """
    check_texts(documents)
    known = store.sources()
    stored = 0
    for name, text in documents.items():
        digest = fingerprint(text.encode("utf-8"))
        if known.get(name) == digest:
            continue
        chunks = chunker.split(text)
        vectors: Any = encoder.encode([c.text for c in chunks], show_progress=False) if chunks else []
        report = encoder.last_report
        tokens = [int(t) for t in report.input_tokens] if chunks else []
        buckets = [str(b) for b in report.input_buckets] if chunks else []
        records = chunk_records(name, chunks, list(vectors), tokens, buckets)
        store.replace_source(name, digest, records)
        stored += len(records)
    store.commit()
    return stored
