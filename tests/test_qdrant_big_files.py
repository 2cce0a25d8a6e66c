"""Big files on Qdrant (issue 24, point 3): a source written batch by batch, with memory bounded by a batch.

- `QdrantStore.replace_source_batches` (local mode and Qdrant Edge) stores what `replace_source` stores: the same
  chunks, fingerprint, group vectors and document vectors bit for bit, the same whole-document BM25 vector, the same
  document ranking; its document point is a summary, without the copy of the chunk vectors;
- a failure or Ctrl-C part way leaves the source out of `sources()`, and the next call gives the clean result;
- on Edge (whose storage is outside Python), the write holds a few batches, not the source;
- `tempscale-rag index --store qdrant` on a big file, interrupted by SIGINT or killed while the file is written to the
  store, exits 130 within 2 s (SIGINT), never reports the file as indexed, and the re-run ends with a clean run's index.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from tempscale_rag.config import LexicalSettings
from tempscale_rag.ranking.lexical import SparseEncoder
from tempscale_rag.ranking.search import search_documents_many
from tempscale_rag.stores import ChunkRecord
from tempscale_rag.stores.qdrant import MEMORY, QdrantStore
from tempscale_rag.stores.qdrant.edge import EdgeStore
from tempscale_rag.stores.qdrant.points import document_point_id
from tempscale_rag.stores.qdrant.streaming import SUMMARY_FORMAT

from .test_big_files import failing_batches, in_batches, random_batches, traced_peak_mb

DIM = 16
LEX = LexicalSettings(chunk_size=48, pivot=6.0, document_pivot=20.0)
WORDS = ("budget", "meeting", "design", "review", "remote", "control", "battery", "energy", "voice", "speech")


def records(source: str, n: int, *, seed: int = 0, version: str = "v1", first: int = 0) -> list[ChunkRecord]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ChunkRecord.create(
            text=f"{source} chunk {first + i} {version} " + " ".join(rng.choice(WORDS, size=6).tolist()),
            vector=vectors[i] * (1.0 + 0.01 * i),  # not all unit: a cosine collection normalises them
            source=source,
            position=first + i,
            token_length=10 + i,
            bucket="short" if i % 3 else "long",
            metadata={"chunk_tokens": (24, 48, 192)[i % 3]},
        )
        for i in range(n)
    ]


def queries() -> np.ndarray:
    out = np.random.default_rng(99).normal(size=(5, DIM)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def open_store(kind: str, path: Path, **options: Any) -> QdrantStore:
    if kind == "edge":
        return EdgeStore(dimension=DIM, path=path, exact=True, **options)
    return QdrantStore(dimension=DIM, path=MEMORY if kind == "memory" else path, **options)


def document_point(store: QdrantStore, source: str) -> Any:
    found = store.client.retrieve(store.documents_collection, [document_point_id(source)], with_vectors=True)
    return found[0] if found else None


def dense(vector: Any) -> list[float]:
    return list(vector[""] if isinstance(vector, dict) else vector)


def chunk_payloads(store: QdrantStore) -> list[tuple[str, str, int]]:
    found = store.client.scroll(store.collection, limit=10_000, with_payload=True)[0]
    return sorted((str(p.id), p.payload["text"], p.payload["position"]) for p in found)


def assert_same_documents(streamed: QdrantStore, listed: QdrantStore, sources: list[str]) -> None:
    """Same chunks, fingerprints, group vectors, document vectors, whole-document BM25 and document ranking."""
    assert streamed.sources() == listed.sources() and streamed.count() == listed.count()
    assert chunk_payloads(streamed) == chunk_payloads(listed)
    got, want = streamed.document_table(sources), listed.document_table(sources)
    assert got is not None and want is not None
    assert got.keys.tolist() == want.keys.tolist()
    np.testing.assert_array_equal(got.group_vectors, want.group_vectors)  # bit for bit
    np.testing.assert_allclose(got.matrix, want.matrix, atol=1e-6)
    for source in sources:
        a, b = document_point(streamed, source), document_point(listed, source)
        assert dense(a.vector) == dense(b.vector), source
    assert streamed.mean_candidates(queries(), 3) == listed.mean_candidates(queries(), 3)
    for words in ("budget meeting", "remote control voice", "chunk 25 v2"):
        found = streamed.lexical_documents(SparseEncoder().query(words), None)
        expected = listed.lexical_documents(SparseEncoder().query(words), None)
        assert found[0].tolist() == expected[0].tolist() and found[1].tolist() == expected[1].tolist(), words
    for scoring in ("max", "mean", "softmax"):
        # The chunk vectors are read from the chunk points, which the engine normalised (cosine) itself: equal to
        # the document point's numpy-normalised copy to float rounding.
        a_hits = search_documents_many(streamed, queries(), 3, scoring=scoring)
        b_hits = search_documents_many(listed, queries(), 3, scoring=scoring)
        assert [[h.source for h in hits] for hits in a_hits] == [[h.source for h in hits] for hits in b_hits]
        assert [h.score for hits in a_hits for h in hits] == pytest.approx(
            [h.score for hits in b_hits for h in hits], rel=1e-6, abs=1e-6
        ), scoring


@pytest.mark.parametrize("kind", ["memory", "edge"])
def test_replace_source_batches_stores_what_replace_source_stores(tmp_path: Path, kind: str) -> None:
    old = records("big.txt", 40, seed=1) + records("other.txt", 5, seed=2)
    # The new version keeps chunks 0-19, changes 20-29 and drops the rest; 30 more chunks follow.
    new = records("big.txt", 20, seed=1) + records("big.txt", 40, seed=3, version="v2", first=20)
    with (
        open_store(kind, tmp_path / "listed", lexical=LEX) as listed,
        open_store(kind, tmp_path / "streamed", lexical=LEX) as streamed,
    ):
        for store in (listed, streamed):
            store.replace_source("big.txt", "fp1", old[:40])
            store.replace_source("other.txt", "fp-o", old[40:])
            store.commit()
        listed.replace_source("big.txt", "fp2", new)
        assert streamed.replace_source_batches("big.txt", "fp2", in_batches(new, 7)) == len(new)
        assert_same_documents(streamed, listed, ["big.txt", "other.txt"])
        # The streamed source's document point is a summary: no copy of the chunk vectors, no chunk ids.
        payload = document_point(streamed, "big.txt").payload
        assert payload["format"] == SUMMARY_FORMAT and "chunk_vectors" not in payload and "chunk_ids" not in payload
        # Repeated (unchanged) and in other batches: the same again.
        assert streamed.replace_source_batches("big.txt", "fp2", in_batches(new, 3)) == len(new)
        assert_same_documents(streamed, listed, ["big.txt", "other.txt"])
        # A new source (Edge skips the stale-chunk scroll), then an emptied one.
        listed.replace_source("new.txt", "fp-n", records("new.txt", 9, seed=4))
        streamed.replace_source_batches("new.txt", "fp-n", in_batches(records("new.txt", 9, seed=4), 4))
        assert_same_documents(streamed, listed, ["big.txt", "new.txt", "other.txt"])
        listed.replace_source("big.txt", "fp3", [])
        assert streamed.replace_source_batches("big.txt", "fp3", iter([])) == 0
        assert streamed.sources() == listed.sources() and chunk_payloads(streamed) == chunk_payloads(listed)
        assert document_point(streamed, "big.txt") is None and document_point(listed, "big.txt") is None


@pytest.mark.parametrize("failure", [KeyboardInterrupt, ValueError])
def test_a_failure_part_way_leaves_the_source_unrecorded_and_the_next_call_finishes_it(
    tmp_path: Path, failure: type[BaseException]
) -> None:
    old, new = records("big.txt", 30, seed=1), records("big.txt", 50, seed=5, version="v2")

    with open_store("edge", tmp_path / "listed", lexical=LEX) as listed:
        listed.replace_source("other.txt", "fp-o", records("other.txt", 5, seed=2))
        listed.replace_source("big.txt", "fp2", new)
    with open_store("edge", tmp_path / "s", lexical=LEX) as store:
        store.replace_source("other.txt", "fp-o", records("other.txt", 5, seed=2))
        store.replace_source("big.txt", "fp1", old)
        store.commit()
        with pytest.raises(failure):
            store.replace_source_batches("big.txt", "fp2", failing_batches(new, failure))
        # Never reported as indexed, and no document point vouches for the half-written chunks.
        assert store.sources() == {"other.txt": "fp-o"}
        assert document_point(store, "big.txt") is None
        store.replace_source_batches("big.txt", "fp2", in_batches(new, 16))
    with open_store("edge", tmp_path / "s") as reopened, open_store("edge", tmp_path / "listed") as expected:
        assert_same_documents(reopened, expected, ["big.txt", "other.txt"])


def test_a_chunk_id_in_two_batches_is_refused_and_the_source_not_recorded(tmp_path: Path) -> None:
    new = records("big.txt", 10)
    with open_store("edge", tmp_path / "s") as store:
        with pytest.raises(ValueError, match="appears in two batches"):
            store.replace_source_batches("big.txt", "fp", [new[:6], new[4:]])
        assert store.sources() == {}


def test_a_summary_that_no_longer_matches_its_chunks_is_rescored_from_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    new = records("big.txt", 30, seed=1)
    with open_store("edge", tmp_path / "s") as store:
        store.replace_source_batches("big.txt", "fp", in_batches(new, 8))
        table = store.document_table(["big.txt"])
        assert table is not None and len(table.keys) == 30 and not caplog.records
        gone = str(table.keys[0])
        store.client.delete(store.collection, models.PointIdsList(points=[gone]))  # behind the store's back
        with caplog.at_level(logging.WARNING):
            table = store.document_table(["big.txt"])
        assert table is not None and len(table.keys) == 29 and gone not in table.keys.tolist()
        assert "no up-to-date document entry" in caplog.text


def test_writing_a_big_source_to_edge_holds_a_few_batches_not_the_source(tmp_path: Path) -> None:
    # 100 batches of 128 records of 384 dimensions: 18.75 MB of vectors, made as the batches are asked for. Edge keeps
    # its storage outside Python, so tracemalloc sees what the store's own code holds: a few batches when streamed,
    # several copies of the source through `replace_source` (the records, their points, the document point's copy).
    dim, n_batches, size = 384, 100, 128

    def batches() -> Iterator[list[ChunkRecord]]:
        return random_batches(n_batches, size, dim, (48, 192))

    total_mb = n_batches * size * dim * 4 / 2**20
    with EdgeStore(dimension=dim, path=tmp_path / "streamed", lexical=LexicalSettings.for_chunks(192)) as store:
        streamed_mb = traced_peak_mb(lambda: store.replace_source_batches("big.txt", "fp", batches()))
        assert store.count() == n_batches * size and store.sources() == {"big.txt": "fp"}
        table = store.document_table(["big.txt"])  # ranking reads the chunks from the chunk collection
        assert table is not None and len(table.keys) == n_batches * size
    with EdgeStore(dimension=dim, path=tmp_path / "listed", lexical=LexicalSettings.for_chunks(192)) as store:
        listed_mb = traced_peak_mb(
            lambda: store.replace_source("big.txt", "fp", [record for batch in batches() for record in batch])
        )
    # Measured: 5.4 MB streamed (a batch's points hold their vectors as Python floats, ~1.6 MB), 284 MB listed.
    assert streamed_mb < total_mb / 2 and listed_mb > 4 * total_mb, (streamed_mb, total_mb, listed_mb)


# The CLI on Qdrant Edge: SIGINT and kill -9 while a big file is written to the store ------------------------------

# `tempscale-rag index --store qdrant` with the big-file thresholds lowered (a 12 KB file is read in 4 KB blocks);
# from the `after`-th batch the store is given, each batch pauses 50 ms (and the first writes the marker file the
# test waits for), so the signal lands inside the write.
_DRIVER = r"""
import sys, time
from pathlib import Path
after, marker = int(sys.argv[1]), Path(sys.argv[2])
from tempscale_rag.ingest import indexer, readers
from tempscale_rag.stores.qdrant import streaming
indexer.STREAM_BYTES = 4096
readers.TEXT_BLOCK_CHARS = 4096
calls = [0]
real = streaming.DocumentSummary.add
def add(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] >= after:
        if not marker.exists():
            marker.write_text("reached")
        time.sleep(0.05)
    return real(self, *args, **kwargs)
streaming.DocumentSummary.add = add
sys.argv[1:] = sys.argv[3:]
from tempscale_rag.cli import entrypoint
entrypoint()
"""


def paragraphs(n: int) -> str:
    return "\n\n".join(f"Paragraph {i} of the long report covers topic number {i} in plain words." for i in range(n))


def stored_index(folder: Path) -> tuple[dict[str, str], list[tuple[str, str, int]], Any, list[float] | None]:
    """The index's sources, chunks, and its document point's payload and vector (None without one)."""
    from tempscale_rag.stores import open_store as open_index

    with open_index(folder, read_only=True) as store:
        if not isinstance(store, QdrantStore):
            raise TypeError(f"expected a Qdrant index, got {type(store).__name__}")
        point = document_point(store, "big.txt") if store.count() else None
        found = store.sources(), chunk_payloads(store)
        return (*found, None, None) if point is None else (*found, point.payload, dense(point.vector))


def test_sigint_or_kill_while_a_big_file_is_written_to_qdrant_edge_then_the_rerun_finishes_it(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text(paragraphs(160), encoding="utf-8")
    index, clean, marker = tmp_path / "index", tmp_path / "clean", tmp_path / "marker"

    def command(out: Path, after: int = 10**9) -> list[str]:
        cli = ["-q", "index", str(docs), "--out", str(out), "--json", "--store", "qdrant"]
        cli += ["--chunk-tokens", "48", "--commit-every", "8"]
        return [sys.executable, "-c", _DRIVER, str(after), str(marker), *cli]

    done = subprocess.run(command(clean), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    total = json.loads(done.stdout)["chunks"]
    assert total > 40

    def interrupt(sig: signal.Signals) -> None:
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen(command(index, after=3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, f"ended before the write: {proc.communicate()}"
            assert time.monotonic() < deadline, "the write was not reached in 2 minutes"
            time.sleep(0.01)
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        seconds = time.monotonic() - sent
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and seconds < 2.0, (proc.returncode, seconds, err)
            assert "interrupted" in err and "Traceback" not in err and not out, err
        else:
            assert proc.returncode == -signal.SIGKILL
        sources, chunks, document, _ = stored_index(index)
        assert sources == {} and document is None, "a half-written big file is never reported as indexed"
        assert 0 < len(chunks) < total, "interrupted inside the write"

    interrupt(signal.SIGINT)
    interrupt(signal.SIGKILL)
    final = subprocess.run(command(index), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["files_indexed"] == 1 and summary["files_resumed"] == 1 and summary["chunks"] == total
    assert stored_index(index) == stored_index(clean)
