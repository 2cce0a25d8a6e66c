"""Big files (issue 24, point 3): stored with memory bounded by a batch, and Ctrl-C at any point exits at once.

- `replace_source_batches` stores exactly what `replace_source` stores, one batch at a time, in one transaction: a
  failure or Ctrl-C part way leaves the store as it was;
- the indexer hands a big file's staged batches to it one at a time (never a list of all the file's records);
- a flat store never holds a streamed source's vectors: it releases its FAISS index, writes `vectors.faiss` from the
  database (byte for byte faiss's file of the rebuilt index) and loads the index again at the next search; the
  process's peak RSS stays below the vectors' size;
- (Qdrant's `replace_source_batches`, and the same on Qdrant Edge: `test_qdrant_big_files.py`)
- `tempscale-rag index` on a big file, interrupted by SIGINT while reading, splitting, embedding, writing the file to
  the store and writing `vectors.faiss`, exits with 130 within 2 s each time, and the re-runs resume and end with a
  clean run's index.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from tempscale_rag import TempScaleEncoder
from tempscale_rag.config import LexicalSettings
from tempscale_rag.ingest import indexer as indexer_module
from tempscale_rag.ingest import readers
from tempscale_rag.ingest.chunking import WindowChunker
from tempscale_rag.ingest.indexer import STAGING_DIR, FolderIndexer
from tempscale_rag.ranking.lexical import SparseEncoder
from tempscale_rag.stores import ChunkRecord, FaissSettings, IndexManifest, open_store
from tempscale_rag.stores.faiss import FaissStore, streaming
from tempscale_rag.stores.faiss.vector_file import HEADER_BYTES

DIM = 16


def records(source: str, n: int, *, seed: int = 0, version: str = "v1", first: int = 0) -> list[ChunkRecord]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ChunkRecord.create(
            text=f"{source} chunk {first + i} {version}",
            vector=vectors[i],
            source=source,
            position=first + i,
            token_length=10 + i,
            bucket="short" if i % 3 else "long",
            metadata={"chunk_tokens": (24, 48, 192)[i % 3]},
        )
        for i in range(n)
    ]


def in_batches(items: list[ChunkRecord], size: int) -> Iterator[list[ChunkRecord]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def failing_batches(new: list[ChunkRecord], failure: type[BaseException]) -> Iterator[list[ChunkRecord]]:
    """Two batches of `new`, then (for ValueError) a record of another source, which a store refuses, then `failure`."""
    yield new[:20]
    yield new[20:40]
    if failure is ValueError:
        yield [records("elsewhere.txt", 1)[0]]
    raise failure


def traced_peak_mb(write: Callable[[], object]) -> float:
    """The peak of Python's allocations (tracemalloc) while `write()` runs, in MB."""
    tracemalloc.start()
    try:
        write()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def spy_store_writes(monkeypatch: pytest.MonkeyPatch, store_class: Any) -> tuple[list[str], list[int]]:
    """Record the file names `store_class.replace_source` gets and the batch sizes `replace_source_batches` reads."""
    listed: list[str] = []
    batch_sizes: list[int] = []
    real_replace, real_batches = store_class.replace_source, store_class.replace_source_batches

    def replace_source(self: Any, source: str, fingerprint: str, items: Any) -> None:
        listed.append(Path(source).name)
        real_replace(self, source, fingerprint, items)

    def replace_source_batches(self: Any, source: str, fingerprint: str, batches: Any) -> int:
        def counted() -> Iterator[Any]:
            for batch in batches:
                batch_sizes.append(len(batch))
                yield batch

        return int(real_batches(self, source, fingerprint, counted()))

    monkeypatch.setattr(store_class, "replace_source", replace_source)
    monkeypatch.setattr(store_class, "replace_source_batches", replace_source_batches)
    return listed, batch_sizes


def table(folder: Path, name: str) -> list[tuple[Any, ...]]:
    columns = {
        "chunks": "chunk_id, source, position, token_length, bucket, text, metadata, vector",
        "groups": "source, chunk_tokens, chunks, vector",
        "sources": "source, fingerprint, chunks",
    }[name]
    with sqlite3.connect(folder / "chunks.sqlite") as db:
        return sorted(db.execute(f"SELECT {columns} FROM {name}"))


def search_ids(store: FaissStore, queries: np.ndarray) -> list[list[str]]:
    return [[hit.id for hit in hits] for hits in store.search_many(queries, k=50)]


def queries() -> np.ndarray:
    out = np.random.default_rng(99).normal(size=(5, DIM)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# The store: batches in one transaction ----------------------------------------------------------------------------


@pytest.mark.parametrize("index", ["flat", "hnsw", "flat+lexical"])
def test_replace_source_batches_stores_what_replace_source_stores(tmp_path: Path, index: str) -> None:
    settings = FaissSettings(index=index.split("+")[0])  # type: ignore[arg-type]
    lexical = LexicalSettings(chunk_size=48, pivot=6.0, document_pivot=20.0) if "lexical" in index else None
    listed, batched = tmp_path / "listed", tmp_path / "batched"
    old = records("big.txt", 40, seed=1) + records("other.txt", 5, seed=2)
    # The new version keeps chunks 0-19 as they are, changes 20-29 and drops the rest; 30 more chunks follow.
    new = records("big.txt", 20, seed=1) + records("big.txt", 40, seed=3, version="v2", first=20)
    with (
        FaissStore(listed, dimension=DIM, settings=settings, create=True, lexical=lexical) as one,
        FaissStore(batched, dimension=DIM, settings=settings, create=True, lexical=lexical) as two,
    ):
        for store in (one, two):
            store.replace_source("big.txt", "fp1", old[:40])
            store.replace_source("other.txt", "fp-o", old[40:])
            store.commit()
        one.replace_source("big.txt", "fp2", new)
        assert two.replace_source_batches("big.txt", "fp2", in_batches(new, 7)) == len(new)
        assert two.count() == one.count() == 65
        assert search_ids(two, queries()) == search_ids(one, queries())
        two.check_integrity()  # the lexical tables (when on) are in step with the chunks
        for words in ("chunk 25 v2", "big.txt chunk 3 v1", "other.txt chunk 2"):
            found, expected = (
                two.lexical_chunks(SparseEncoder().query(words), None),
                one.lexical_chunks(SparseEncoder().query(words), None),
            )
            assert found[0].tolist() == expected[0].tolist() and np.allclose(found[1], expected[1]), words
            assert len(found[0]) > 0 or lexical is None
        # Repeating it changes nothing (identical rows keep their FAISS id, the generation stays).
        generation = two.generation
        two.replace_source_batches("big.txt", "fp2", in_batches(new, 3))
        assert two.generation == generation and search_ids(two, queries()) == search_ids(one, queries())
        one.replace_source("big.txt", "fp3", [])
        two.replace_source_batches("big.txt", "fp3", iter([]))
        assert search_ids(two, queries()) == search_ids(one, queries())
    for name in ("chunks", "groups", "sources"):
        assert table(batched, name) == table(listed, name), name
    with FaissStore(batched, read_only=True) as reopened, FaissStore(listed, read_only=True) as expected:
        assert search_ids(reopened, queries()) == search_ids(expected, queries())


@pytest.mark.parametrize("failure", [KeyboardInterrupt, ValueError])
def test_a_failure_part_way_through_the_batches_leaves_the_store_as_it_was(
    tmp_path: Path, failure: type[BaseException]
) -> None:
    old, new = records("big.txt", 30, seed=1), records("big.txt", 50, seed=5, version="v2")

    with FaissStore(tmp_path / "s", dimension=DIM, create=True) as store:
        store.replace_source("big.txt", "fp1", old)
        store.commit()
        before = search_ids(store, queries())
        with pytest.raises(failure):
            store.replace_source_batches("big.txt", "fp2", failing_batches(new, failure))
        assert store.sources() == {"big.txt": "fp1"} and store.count() == 30
        assert search_ids(store, queries()) == before
        # The next call works, and starts from a clean slate (nothing of the failed one is left).
        store.replace_source_batches("big.txt", "fp2", in_batches(new, 16))
        assert store.count() == 50 and store.sources() == {"big.txt": "fp2"}
    with FaissStore(tmp_path / "s", read_only=True) as reopened:
        assert reopened.count() == 50
        assert {hit.text.split()[-1] for hit in reopened.search(queries()[0], k=50)} == {"v2"}


def test_an_id_in_two_batches_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    new = records("big.txt", 10)
    with FaissStore(tmp_path / "s", dimension=DIM, create=True) as store:
        with pytest.raises(ValueError, match="appears in two batches"):
            store.replace_source_batches("big.txt", "fp", [new[:6], new[4:]])
        assert store.count() == 0 and store.sources() == {}


def test_replace_source_batches_holds_one_batch_not_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 100 batches of 128 records of 384-dimensional vectors: 19.7 MB of vectors, made as the batches are asked for.
    # Python's allocations (numpy's included; FAISS's own storage is not traced) peak at a few batches' worth.
    monkeypatch.setattr(streaming, "READ_BACK_ROWS", 512)
    dim, n_batches, size = 384, 100, 128

    def batches() -> Iterator[list[ChunkRecord]]:
        return random_batches(n_batches, size, dim)

    total_mb = n_batches * size * dim * 4 / 2**20
    with FaissStore(tmp_path / "batched", dimension=dim, create=True) as store:
        batched_mb = traced_peak_mb(lambda: store.replace_source_batches("big.txt", "fp", batches()))
        assert store.count() == n_batches * size
    with FaissStore(tmp_path / "listed", dimension=dim, create=True) as store:
        listed_mb = traced_peak_mb(
            lambda: store.replace_source("big.txt", "fp", [record for batch in batches() for record in batch])
        )
    assert batched_mb < total_mb / 4 < listed_mb, (batched_mb, total_mb, listed_mb)


# A flat store does not hold a streamed source's vectors: it releases its FAISS index and writes vectors.faiss from
# the database. The file is byte for byte the one faiss writes for the index rebuilt from the database.


def test_a_streamed_source_is_written_to_vectors_faiss_from_the_database_byte_for_byte(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listed, batched = tmp_path / "listed", tmp_path / "batched"
    new = records("big.txt", 300, seed=3)
    with (
        FaissStore(listed, dimension=DIM, create=True) as one,
        FaissStore(batched, dimension=DIM, create=True) as two,
    ):
        for store in (one, two):
            store.replace_source("other.txt", "fp-o", records("other.txt", 20, seed=2))
            store.commit()
        one.replace_source("big.txt", "fp", new)
        two.replace_source_batches("big.txt", "fp", in_batches(new, 32))
        two.replace_source("small.txt", "fp-s", records("small.txt", 7, seed=4))  # while released
        one.replace_source("small.txt", "fp-s", records("small.txt", 7, seed=4))
        two.delete_source("other.txt")
        one.delete_source("other.txt")
        two.commit()
    # Written from SQLite (`write_flat_file`): the payload is faiss's serialisation of the index rebuilt from it.
    with sqlite3.connect(batched / "chunks.sqlite") as db:
        rows = db.execute("SELECT vid, vector FROM chunks ORDER BY vid").fetchall()
    rebuilt = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
    rebuilt.add_with_ids(
        np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), DIM),
        np.asarray([r[0] for r in rows], dtype=np.int64),
    )
    payload = (batched / "vectors.faiss").read_bytes()[HEADER_BYTES:]
    assert payload == faiss.serialize_index(rebuilt).tobytes() and len(rows) == 307
    with caplog.at_level(logging.WARNING), FaissStore(batched, read_only=True) as reopened:
        assert reopened.generation == two.generation
        found = reopened.search_many(queries(), k=50)
    assert not caplog.records, "the file was current and intact: loaded, not rebuilt"
    with FaissStore(listed, read_only=True) as expected:
        # Exact search over the same vectors: the same hits with bit-identical scores.
        assert [[(h.id, h.score) for h in hits] for hits in found] == [
            [(h.id, h.score) for h in hits] for hits in expected.search_many(queries(), k=50)
        ]


def test_a_search_after_a_streamed_source_loads_the_index_again(tmp_path: Path) -> None:
    new = records("big.txt", 100, seed=3)
    with FaissStore(tmp_path / "listed", dimension=DIM, create=True) as one:
        one.replace_source("big.txt", "fp", new)
        expected = search_ids(one, queries())
        one.replace_source("more.txt", "fp-m", records("more.txt", 5, seed=6))
        expected_more = search_ids(one, queries())
    with FaissStore(tmp_path / "s", dimension=DIM, create=True) as store:
        store.replace_source_batches("big.txt", "fp", in_batches(new, 16))
        assert search_ids(store, queries()) == expected  # not committed: rebuilt from the database
        store.replace_source("more.txt", "fp-m", records("more.txt", 5, seed=6))  # queued as before
        assert search_ids(store, queries()) == expected_more
        store.replace_source_batches("big.txt", "fp", in_batches(new, 16))  # unchanged: nothing released
        store.commit()
        assert search_ids(store, queries()) == expected_more


def test_a_faiss_with_another_file_layout_keeps_the_index_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were faiss to write flat indexes differently, the store would not stream the file: it mirrors the source in the
    # in-memory index and writes that, as before.
    monkeypatch.setattr(streaming, "flat_layout_matches", lambda dimension: False)
    new = records("big.txt", 60, seed=3)
    with FaissStore(tmp_path / "listed", dimension=DIM, create=True) as one:
        one.replace_source("gone.txt", "fp-g", records("gone.txt", 9, seed=8))
        one.replace_source("big.txt", "fp", new)
        one.delete_source("gone.txt")
        expected = search_ids(one, queries())
    with FaissStore(tmp_path / "s", dimension=DIM, create=True) as store:
        store.replace_source("gone.txt", "fp-g", records("gone.txt", 9, seed=8))
        store.replace_source("big.txt", "fp-old", records("big.txt", 30, seed=1, version="v0"))
        store.commit()
        store.replace_source_batches("big.txt", "fp", in_batches(new, 16))  # removes the 30, adds the 60
        store.delete_source("gone.txt")
        assert search_ids(store, queries()) == expected
    with FaissStore(tmp_path / "s", read_only=True) as reopened:
        assert search_ids(reopened, queries()) == expected


_RSS_JOB = r"""
import json, resource, sys
import numpy as np
from tempscale_rag.stores import ChunkRecord
from tempscale_rag.stores.faiss import FaissStore, streaming
dim, n_batches, size = 1024, 128, 256
streaming.READ_BACK_ROWS = 1024  # 4 MB of vectors read back at a time, as 4,096 are at the default 384 dimensions
def batches():
    rng = np.random.default_rng(0)
    for b in range(n_batches):
        vectors = rng.normal(size=(size, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield [ChunkRecord.create(text=f"chunk {b * size + i}", vector=vectors[i], source="big.txt",
                                  position=b * size + i, token_length=9, bucket="short") for i in range(size)]
with FaissStore(sys.argv[1], dimension=dim, create=True, use_gpu=False) as store:
    for _ in batches():  # the generator's own peak (one batch) before measuring
        break
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.replace_source_batches("big.txt", "fp", batches())
    store.commit()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (peak - before) / 1024, "vectors_mb": n_batches * size * dim * 4 / 2**20}))
"""


def test_storing_a_big_source_and_writing_vectors_faiss_keep_the_process_peak_below_its_vectors(
    tmp_path: Path,
) -> None:
    # 32,768 records of 1,024 dimensions: 128 MB of vectors. The old path held them all in the FAISS index (and wrote
    # vectors.faiss from it): the process grew by more than their size (91 MB for 64 MB). Now it grows by a few
    # batches and SQLite's cache, ~25 MB whatever the size (ru_maxrss, the kernel's peak RSS of the whole process:
    # FAISS's C++ storage included).
    done = subprocess.run([sys.executable, "-c", _RSS_JOB, str(tmp_path / "s")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["growth_mb"] < result["vectors_mb"] / 4, result
    with FaissStore(tmp_path / "s", read_only=True) as store:
        assert store.count() == 32_768


# The indexer: a big file goes to the store one staged batch at a time ---------------------------------------------


def paragraphs(n: int, word: str = "plain") -> str:
    return "\n\n".join(f"Paragraph {i} of the long report covers topic number {i} in {word} words." for i in range(n))


def test_a_big_file_is_stored_one_staged_batch_at_a_time(
    tmp_path: Path, encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text(paragraphs(120), encoding="utf-8")  # 9 KB: "big" below, in 4 KB blocks
    (docs / "small.txt").write_text("A short note about ferrets.", encoding="utf-8")
    monkeypatch.setattr(indexer_module, "STREAM_BYTES", 4096)
    monkeypatch.setattr(readers, "TEXT_BLOCK_CHARS", 4096)
    chunker = WindowChunker(encoder, chunk_tokens=32, overlap_tokens=0)
    listed, batch_sizes = spy_store_writes(monkeypatch, FaissStore)

    def run(folder: Path, batch_chunks: int) -> Any:
        manifest = IndexManifest.new(
            model=encoder.model_name, dimension=encoder.dimension, config=encoder.config, backend=FaissSettings()
        )
        with open_store(folder, manifest) as store:
            indexer = FolderIndexer(
                encoder, store, chunker=chunker, batch_chunks=batch_chunks, show_progress=False, index_dir=folder
            )
            return indexer.run([docs])

    summary = run(tmp_path / "batched", 8)
    assert summary.files_indexed == 2 and summary.chunks > 40
    assert listed == ["small.txt"], "the big file never goes to the store as one list"
    assert batch_sizes and max(batch_sizes) <= 8 and sum(batch_sizes) == summary.chunks - 1, batch_sizes
    assert not (tmp_path / "batched" / STAGING_DIR).exists()
    # One batch holding the whole file (nothing staged) stores it through replace_source: the same rows (the vectors
    # up to float rounding, as the engine batched the chunks otherwise).
    listed.clear()
    whole = run(tmp_path / "whole", 10_000)
    assert sorted(listed) == ["big.txt", "small.txt"] and whole.chunks == summary.chunks
    assert table(tmp_path / "batched", "sources") == table(tmp_path / "whole", "sources")
    for name in ("chunks", "groups"):
        rows, expected = table(tmp_path / "batched", name), table(tmp_path / "whole", name)
        assert [r[:-1] for r in rows] == [r[:-1] for r in expected], name
        got = np.frombuffer(b"".join(r[-1] for r in rows), dtype="<f4")
        assert np.allclose(got, np.frombuffer(b"".join(r[-1] for r in expected), dtype="<f4"), atol=1e-5), name


# The CLI: SIGINT while reading, splitting, embedding, writing and loading FAISS ---------------------------------------

# Runs `tempscale-rag index` with the big-file thresholds lowered (a 12 KB file is read in 4 KB blocks) and a hook at
# one point of the run: the first time the run gets there (the `after`-th call), it writes the marker file the test
# waits for; from then on each call of that step pauses 50 ms, so the test's SIGINT lands inside the step.
_DRIVER = r"""
import sys, time
from pathlib import Path
point, after, marker = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
from tempscale_rag.encoder import TempScaleEncoder
from tempscale_rag.ingest import indexer, readers
from tempscale_rag.ingest.chunking import MultiSizeChunker
from tempscale_rag.stores.faiss import streaming
indexer.STREAM_BYTES = 4096
readers.TEXT_BLOCK_CHARS = 4096
streaming.READ_BACK_ROWS = 4
calls = [0]
def hook(owner, name):
    real = getattr(owner, name)
    def hooked(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= after:
            if not marker.exists():
                marker.write_text("reached")
            time.sleep(0.05)
        return real(*args, **kwargs)
    setattr(owner, name, hooked)
if point == "read":
    hook(readers, "_check_decodes")
elif point == "split":
    hook(MultiSizeChunker, "split")
elif point == "embed":
    hook(TempScaleEncoder, "encode")
elif point == "write":
    hook(streaming, "check_records")
elif point == "file":
    # vectors.faiss written from the database after the commit, a batch of READ_BACK_ROWS vectors at a time.
    real_rows = streaming._stored_vectors
    def rows(*args, **kwargs):
        for item in real_rows(*args, **kwargs):
            calls[0] += 1
            if calls[0] >= after:
                if not marker.exists():
                    marker.write_text("reached")
                time.sleep(0.05)
            yield item
    streaming._stored_vectors = rows
sys.argv[1:] = sys.argv[4:]
from tempscale_rag.cli import entrypoint
entrypoint()  # as the console script: it skips the interpreter's slow teardown
"""


def _stored(folder: Path) -> tuple[list[tuple[Any, ...]], np.ndarray]:
    rows = table(folder, "chunks")
    return [r[:-1] for r in rows], np.frombuffer(b"".join(r[-1] for r in rows), dtype="<f4")


# The default run interrupts embedding, the write and the writing of vectors.faiss (5 processes, ~40 s on two busy
# cores); the slow one also reading and splitting (7 processes).
@pytest.mark.parametrize(
    "early",
    [pytest.param(False, id="embed-write-file"), pytest.param(True, id="all-steps", marks=pytest.mark.slow)],
)
def test_sigint_at_every_step_of_a_big_file_exits_130_at_once_and_the_reruns_finish_it(
    tmp_path: Path, early: bool
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text(paragraphs(160), encoding="utf-8")  # 12 KB, 3 blocks, ~10 batches of 8 chunks
    index, clean, marker = tmp_path / "index", tmp_path / "clean", tmp_path / "marker"

    def command(out: Path, point: str = "none", after: int = 1) -> list[str]:
        cli = ["-q", "index", str(docs), "--out", str(out), "--json", "--chunk-tokens", "48", "--commit-every", "8"]
        return [sys.executable, "-c", _DRIVER, point, str(after), str(marker), *cli]

    done = subprocess.run(command(clean), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    total = json.loads(done.stdout)["chunks"]
    assert total > 40

    def interrupt(point: str, after: int = 1) -> None:
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen(command(index, point, after), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, f"{point}: ended before the step was reached: {proc.communicate()}"
            assert time.monotonic() < deadline, f"{point}: not reached in 2 minutes"
            time.sleep(0.01)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        seconds = time.monotonic() - sent
        assert proc.returncode == 130 and seconds < 2.0, (point, proc.returncode, seconds, err)
        assert "interrupted" in err and "Traceback" not in err and not out, (point, err)

    staged = index / STAGING_DIR
    if early:
        interrupt("read")
        interrupt("split")
    interrupt("embed", after=3)  # after two batches were staged
    parts = sorted(staged.glob("*/*.npy"))
    assert len(parts) >= 2
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    interrupt("write", after=2)  # the transaction is rolled back: the store is as it was, the staged batches stay
    assert all(p.stat().st_mtime_ns == stamps[p] for p in parts), "the re-run resumed after the staged batches"
    with sqlite3.connect(index / "chunks.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0
    interrupt("file", after=2)  # committed; vectors.faiss half written: the next open rebuilds it from SQLite
    with sqlite3.connect(index / "chunks.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == total
    assert not list(index.glob(".vectors.faiss.*")), "the torn file was removed"
    final = subprocess.run(command(index), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["files_unchanged"] == 1 and summary["chunks"] == total and not staged.exists()
    rows, vectors = _stored(index)
    clean_rows, clean_vectors = _stored(clean)
    assert rows == clean_rows and np.allclose(vectors, clean_vectors, atol=1e-5)
    assert table(index, "groups")[0][:3] == table(clean, "groups")[0][:3]
    with FaissStore(index, read_only=True) as resumed, FaissStore(clean, read_only=True) as expected:
        # FAISS, rebuilt from SQLite after the interrupted file write, finds what the clean run's finds.
        probes = clean_vectors.reshape(total, -1)[:: max(1, total // 5)]
        assert [[h.id for h in hits] for hits in resumed.search_many(probes, k=20)] == [
            [h.id for h in hits] for hits in expected.search_many(probes, k=20)
        ]


# Index.add: a long text goes to the store in batches, split as the same text read from a file ---------------------


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_index_add_stores_a_long_text_a_batch_at_a_time_as_the_same_file_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    from tempscale_rag import Index
    from tempscale_rag.config import ChunkingConfig
    from tempscale_rag.stores import QdrantSettings
    from tempscale_rag.stores.qdrant import QdrantStore

    monkeypatch.setattr(indexer_module, "STREAM_BYTES", 4096)
    monkeypatch.setattr(indexer_module, "DEFAULT_BATCH_CHUNKS", 8)
    monkeypatch.setattr(readers, "TEXT_BLOCK_CHARS", 4096)
    store_class: Any = FaissStore if backend == "faiss" else QdrantStore
    listed, batch_sizes = spy_store_writes(monkeypatch, store_class)
    text = paragraphs(160)  # 12 KB: "long" here, in 4 KB blocks
    settings = FaissSettings() if backend == "faiss" else QdrantSettings()
    chunking = ChunkingConfig.parse("48")
    with Index.create(tmp_path / "added", chunking=chunking, backend=settings) as index:
        stored = index.add({"big": text, "note": "A short note about ferrets."})
        assert listed == ["note"], "the long text never goes to the store as one list"
        assert stored > 40 and max(batch_sizes) <= 8 and sum(batch_sizes) == stored - 1, batch_sizes
        assert index.add({"big": text}) == 0, "unchanged: its fingerprint is that of its UTF-8 bytes"
        assert index.sources()["big"] == readers.fingerprint(text.encode("utf-8"))
        hits = index.search("topic number 77", k=3)
        assert any("topic number 77" in hit.text for hit in hits)
    if backend != "faiss":
        return
    # The chunks are those of the same text indexed as a file (read in blocks): same texts, positions and sizes.
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text(text, encoding="utf-8")
    with Index.create(tmp_path / "filed", chunking=chunking) as index:
        assert index.index_folder([docs]).files_indexed == 1
    added = [row[2:7] for row in table(tmp_path / "added", "chunks") if row[1] == "big"]
    filed = [row[2:7] for row in table(tmp_path / "filed", "chunks")]
    assert sorted(added) == sorted(filed) and len(added) == stored - 1


def random_batches(
    n_batches: int, size: int, dim: int, chunk_tokens: tuple[int, ...] = (48,)
) -> Iterator[list[ChunkRecord]]:
    """Batches of "big.txt" records with random unit vectors, made as they are asked for (the i-th of each batch of
    chunk size `chunk_tokens[i % len(chunk_tokens)]`)."""
    rng = np.random.default_rng(0)
    for b in range(n_batches):
        vectors = rng.normal(size=(size, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield [
            ChunkRecord.create(
                text=f"chunk {b * size + i}",
                vector=vectors[i],
                source="big.txt",
                position=b * size + i,
                token_length=9,
                bucket="short",
                metadata={"chunk_tokens": chunk_tokens[i % len(chunk_tokens)]},
            )
            for i in range(size)
        ]
