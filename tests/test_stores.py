"""Round trips, persistence, crash safety and error paths of the vector stores, on real FAISS and qdrant-client."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.config import TempScaleConfig
from tempscale_rag.stores import (
    ChunkRecord,
    FaissSettings,
    IndexCorruptError,
    IndexManifest,
    IndexMismatchError,
    IndexNotFoundError,
    QdrantSettings,
    SearchHit,
    StoreUnavailableError,
    VectorStore,
    make_chunk_id,
    open_store,
)
from tempscale_rag.stores.faiss import DB_NAME, FAISS_NAME, FaissStore
from tempscale_rag.stores.qdrant import MEMORY, QdrantStore
from tempscale_rag.stores.qdrant.edge import EdgeStore

REPO_ROOT = Path(__file__).resolve().parents[1]
DIM = 16


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_records(source: str, n: int, *, seed: int = 0, version: str = "v1", dim: int = DIM) -> list[ChunkRecord]:
    vectors = unit_vectors(n, dim, seed)
    return [
        ChunkRecord.create(
            text=f"{source} chunk {i} {version}",
            vector=vectors[i],
            source=source,
            position=i,
            token_length=10 + i,
            bucket="0-128" if i % 2 else "128-256",
            metadata={"page": i, "tags": ["a", "b"], "version": version},
        )
        for i in range(n)
    ]


def assert_same_hits(found: list[list[SearchHit]], expected: list[list[SearchHit]]) -> None:
    """Same hits in the same order; scores equal up to float32 rounding (Qdrant local mode reloads in float64)."""
    assert [[h.id for h in hits] for hits in found] == [[h.id for h in hits] for hits in expected]
    for got, want in zip(found, expected, strict=True):
        for a, b in zip(got, want, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-5)
            assert (a.text, a.source, a.position, a.token_length, a.bucket, a.metadata) == (
                b.text,
                b.source,
                b.position,
                b.token_length,
                b.bucket,
                b.metadata,
            )


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


StoreOpener = Callable[..., VectorStore]
KINDS = ["faiss-flat", "faiss-hnsw", "qdrant-path", "qdrant-memory", "qdrant-edge"]
PERSISTENT_KINDS = ["faiss-flat", "faiss-hnsw", "qdrant-path", "qdrant-edge"]


@pytest.fixture(params=KINDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOpener]:
    """Opens the same store again and again; `:memory:` Qdrant is one long-lived store that is never reopened."""
    kind: str = request.param
    opened: list[VectorStore] = []

    def open_(*, read_only: bool = False) -> VectorStore:
        store: VectorStore
        if kind.startswith("faiss"):
            settings = FaissSettings(index="hnsw" if kind == "faiss-hnsw" else "flat")
            store = FaissStore(
                tmp_path / "faiss", dimension=DIM, settings=settings, create=not read_only, read_only=read_only
            )
        elif kind == "qdrant-path":
            store = QdrantStore(dimension=DIM, path=tmp_path / "qdrant", read_only=read_only)
        elif kind == "qdrant-edge":
            store = EdgeStore(dimension=DIM, path=tmp_path / "edge", read_only=read_only)
        else:
            if opened:
                return opened[0]
            store = QdrantStore(dimension=DIM, path=MEMORY)
        opened.append(store)
        return store

    open_.kind = kind  # type: ignore[attr-defined]
    yield open_
    for store in opened:
        store.close()


def test_round_trip_add_search_delete(opener: StoreOpener) -> None:
    store = opener()
    a, b = make_records("a.txt", 5, seed=1), make_records("b.txt", 7, seed=2)
    store.replace_source("a.txt", "fp-a", a)
    store.replace_source("b.txt", "fp-b", b)
    assert store.count() == 12
    assert store.sources() == {"a.txt": "fp-a", "b.txt": "fp-b"}

    hits = store.search(a[2].vector, k=3)
    assert len(hits) == 3
    top = hits[0]
    assert (top.id, top.text, top.source, top.position, top.token_length, top.bucket) == (
        a[2].id,
        a[2].text,
        "a.txt",
        2,
        12,
        "128-256",
    )
    assert top.metadata == {"page": 2, "tags": ["a", "b"], "version": "v1"}
    assert top.score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    batched = store.search_many(np.stack([r.vector for r in a + b]), k=4)
    assert [hits[0].id for hits in batched] == [r.id for r in a + b]
    assert_same_hits([batched[2]], [store.search(a[2].vector, k=4)])

    assert store.delete_source("b.txt") == 7
    assert store.count() == 5
    assert store.sources() == {"a.txt": "fp-a"}
    assert all(h.source == "a.txt" for h in store.search(b[0].vector, k=10))
    assert store.delete_source("b.txt") == 0

    extra = make_records("notes.txt", 1, seed=3)
    store.upsert(extra)
    assert store.count() == 6
    assert store.sources() == {"a.txt": "fp-a"}, "upsert must not vouch for a source"
    store.commit()
    json.dumps(store.describe())
    assert store.describe()["count"] == 6


@pytest.mark.parametrize("opener", PERSISTENT_KINDS, indirect=True)
def test_persist_and_reopen(opener: StoreOpener) -> None:
    a, b = make_records("a.txt", 6, seed=1), make_records("b.txt", 4, seed=2)
    with opener() as store:
        store.replace_source("a.txt", "fp-a", a)
        store.replace_source("b.txt", "fp-b", b)
        store.delete_source("b.txt")
        expected = store.search_many(np.stack([r.vector for r in a]), k=3)

    with opener(read_only=True) as store:
        assert store.count() == 6
        assert store.sources() == {"a.txt": "fp-a"}
        assert_same_hits(store.search_many(np.stack([r.vector for r in a]), k=3), expected)
        with pytest.raises(StoreUnavailableError, match="read-only"):
            store.replace_source("b.txt", "fp-b", b)

    with opener() as store:
        store.replace_source("b.txt", "fp-b2", b)
    with opener(read_only=True) as store:
        assert store.count() == 10
        assert store.sources() == {"a.txt": "fp-a", "b.txt": "fp-b2"}
        assert store.search(b[3].vector, k=1)[0].id == b[3].id


def test_replace_source_is_idempotent_and_drops_stale_chunks(opener: StoreOpener) -> None:
    store = opener()
    first = make_records("a.txt", 6, seed=1)
    store.replace_source("a.txt", "fp1", first)
    store.replace_source("a.txt", "fp1", first)
    assert store.count() == 6
    assert [h.id for h in store.search(first[0].vector, k=10)].count(first[0].id) == 1

    edited = make_records("a.txt", 3, seed=4, version="v2")
    store.replace_source("a.txt", "fp2", edited)
    assert store.count() == 3
    assert store.sources() == {"a.txt": "fp2"}
    assert {h.text.split()[-1] for h in store.search(first[0].vector, k=10)} == {"v2"}

    store.replace_source("a.txt", "fp3", [])
    assert store.count() == 0
    assert store.sources() == {"a.txt": "fp3"}


def test_upsert_replaces_by_id(opener: StoreOpener) -> None:
    store = opener()
    record = make_records("a.txt", 1, seed=1)[0]
    store.upsert([record])
    moved = ChunkRecord(
        id=record.id,
        text=record.text,
        vector=unit_vectors(1, seed=9)[0],
        source=record.source,
        position=record.position,
        token_length=record.token_length,
        bucket=record.bucket,
        metadata={"edited": True},
    )
    store.upsert([moved])
    assert store.count() == 1
    hit = store.search(moved.vector, k=1)[0]
    assert (hit.id, hit.metadata) == (record.id, {"edited": True})
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_invalid_input_is_refused_and_changes_nothing(opener: StoreOpener) -> None:
    store = opener()
    store.replace_source("a.txt", "fp", make_records("a.txt", 3))
    bad_dim = make_records("b.txt", 2, dim=DIM + 1)
    with pytest.raises(ValueError, match="dimensional"):
        store.replace_source("b.txt", "fp", bad_dim)
    with pytest.raises(ValueError, match="belongs to source"):
        store.replace_source("b.txt", "fp", make_records("a.txt", 2))
    with pytest.raises(ValueError, match="twice"):
        store.upsert(make_records("c.txt", 2) * 2)
    with pytest.raises(ValueError, match="fingerprint"):
        store.replace_source("c.txt", "", make_records("c.txt", 2))
    assert store.count() == 3
    assert store.sources() == {"a.txt": "fp"}

    query = unit_vectors(1)[0]
    with pytest.raises(ValueError, match="shape"):
        store.search(np.zeros(DIM + 1, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        store.search(np.full(DIM, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="k must"):
        store.search(query, k=0)
    assert len(store.search(query, k=50)) == 3
    assert store.search_many(np.empty((0, DIM), dtype=np.float32), k=5) == []


def test_empty_store_returns_no_hits(opener: StoreOpener) -> None:
    store = opener()
    assert store.count() == 0
    assert store.sources() == {}
    assert store.search(unit_vectors(1)[0], k=5) == []
    assert store.search_many(unit_vectors(3), k=5) == [[], [], []]


def test_closed_store_refuses_calls(opener: StoreOpener) -> None:
    store = opener()
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.count()


def test_chunk_record_validation() -> None:
    vector = unit_vectors(1)[0]
    record = ChunkRecord.create(text="t", vector=vector, source="s", position=0, token_length=1, bucket="0-128")
    assert record.id == make_chunk_id("s", 0, "t")
    assert record.id != make_chunk_id("s", 1, "t") != make_chunk_id("s0", 0, "t")
    assert (
        ChunkRecord.create(
            text="t", vector=vector.astype(np.float64), source="s", position=0, token_length=1, bucket="b"
        ).vector.dtype
        == np.float32
    )
    with pytest.raises(TypeError, match="float"):
        ChunkRecord.create(text="t", vector=np.arange(4), source="s", position=0, token_length=1, bucket="b")
    with pytest.raises(ValueError, match="NaN"):
        ChunkRecord.create(text="t", vector=np.array([np.nan, 1.0]), source="s", position=0, token_length=1, bucket="b")
    with pytest.raises(ValueError, match="1-D"):
        ChunkRecord.create(text="t", vector=np.ones((2, 2)), source="s", position=0, token_length=1, bucket="b")
    with pytest.raises(TypeError, match="JSON"):
        ChunkRecord.create(
            text="t", vector=vector, source="s", position=0, token_length=1, bucket="b", metadata={"when": object()}
        )
    with pytest.raises(ValueError, match="position"):
        ChunkRecord.create(text="t", vector=vector, source="s", position=-1, token_length=1, bucket="b")


# --- FAISS: files, crashes, locks -------------------------------------------------------------------------------


def faiss_store(folder: Path, index: str = "flat", **kwargs: object) -> FaissStore:
    return FaissStore(folder, dimension=DIM, settings=FaissSettings(index=index), create=True, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_torn_or_foreign_faiss_file_is_rebuilt_from_sqlite(
    tmp_path: Path, index: str, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_records("a.txt", 20, seed=1)
    with faiss_store(tmp_path, index) as store:
        store.replace_source("a.txt", "fp", a)
        expected = store.search_many(np.stack([r.vector for r in a]), k=5)
    faiss_file = tmp_path / FAISS_NAME
    good = faiss_file.read_bytes()

    damages: dict[str, bytes] = {
        "truncated": good[: len(good) // 2],
        "header only": good[:40],
        "flipped byte": good[:-10] + bytes([good[-10] ^ 0xFF]) + good[-9:],
        "garbage": b"not a faiss index" * 10,
        "empty": b"",
    }
    for what, damaged in damages.items():
        faiss_file.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING), FaissStore(tmp_path, read_only=True) as store:
            assert store.search_many(np.stack([r.vector for r in a]), k=5) == expected, what
        assert "rebuilding" in caplog.text, what
        assert faiss_file.read_bytes() == damaged, f"a read-only open must not repair ({what})"

    with faiss_store(tmp_path, index) as store:
        assert store.count() == 20
    assert faiss_file.read_bytes() != damages["empty"]
    caplog.clear()
    with caplog.at_level(logging.WARNING), FaissStore(tmp_path, read_only=True) as store:
        assert store.search_many(np.stack([r.vector for r in a]), k=5) == expected
    assert "rebuilding" not in caplog.text, "a writable open must leave a valid, current FAISS file"


def test_faiss_file_from_an_older_generation_is_not_trusted(tmp_path: Path) -> None:
    a, b = make_records("a.txt", 5, seed=1), make_records("b.txt", 5, seed=2)
    with faiss_store(tmp_path) as store:
        store.replace_source("a.txt", "fp", a)
    old = (tmp_path / FAISS_NAME).read_bytes()
    with faiss_store(tmp_path) as store:
        store.delete_source("a.txt")
        store.replace_source("b.txt", "fp", b)
    (tmp_path / FAISS_NAME).write_bytes(old)
    with FaissStore(tmp_path, read_only=True) as store:
        hits = store.search_many(np.stack([r.vector for r in a + b]), k=10)
        assert {h.source for query in hits for h in query} == {"b.txt"}
        assert store.count() == 5

    other = tmp_path / "other"
    with faiss_store(other) as store:
        store.replace_source("b.txt", "fp", b)
    (tmp_path / FAISS_NAME).write_bytes((other / FAISS_NAME).read_bytes())
    with FaissStore(tmp_path, read_only=True) as store:
        assert [h[0].id for h in store.search_many(np.stack([r.vector for r in b]), k=1)] == [r.id for r in b]


def test_commit_refreshes_a_large_faiss_file_only_after_enough_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempscale_rag.stores.faiss.store as faiss_store_module

    # Pretend 40 vectors is a large index, so that the amortised refresh policy applies.
    monkeypatch.setattr(faiss_store_module, "_ALWAYS_REFRESH_BELOW", 0)
    faiss_file = tmp_path / FAISS_NAME
    with faiss_store(tmp_path) as store:
        store.replace_source("a.txt", "fp", make_records("a.txt", 40, seed=1))
        store.commit()
        written = faiss_file.read_bytes()
        store.replace_source("b.txt", "fp", make_records("b.txt", 4, seed=2))
        store.commit()
        assert faiss_file.read_bytes() == written, "4 changes in 44 vectors: the chunks are durable in SQLite only"
        with FaissStore(tmp_path, read_only=True) as reader:
            assert (
                reader.count() == 44
                and reader.search(make_records("b.txt", 4, seed=2)[0].vector, k=1)[0].source == "b.txt"
            )
        store.replace_source("c.txt", "fp", make_records("c.txt", 12, seed=3))
        store.commit()
        assert faiss_file.read_bytes() != written, "16 changes in 56 vectors: the file is rewritten"
        written = faiss_file.read_bytes()
        store.delete_source("c.txt")
    assert faiss_file.read_bytes() != written, "close() always leaves a current file"


def test_missing_faiss_file_and_stale_temp_files(tmp_path: Path) -> None:
    a = make_records("a.txt", 5, seed=1)
    with faiss_store(tmp_path) as store:
        store.replace_source("a.txt", "fp", a)
    (tmp_path / FAISS_NAME).unlink()
    stale = tmp_path / f".{FAISS_NAME}.abc123.tmp"
    stale.write_bytes(b"half a file")
    with FaissStore(tmp_path, read_only=True) as store:
        assert store.search(a[0].vector, k=1)[0].id == a[0].id
    assert stale.exists(), "read-only opens write nothing"
    with faiss_store(tmp_path) as store:
        assert store.count() == 5
    assert not stale.exists()
    assert (tmp_path / FAISS_NAME).exists()


def test_corrupt_or_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    with faiss_store(tmp_path) as store:
        store.replace_source("a.txt", "fp", make_records("a.txt", 3))
    db = tmp_path / DB_NAME
    db.write_bytes(b"this is not an sqlite database" * 200)
    before = snapshot(tmp_path)
    for read_only in (True, False):
        with pytest.raises(IndexCorruptError, match=DB_NAME):
            FaissStore(tmp_path, read_only=read_only)
    assert snapshot(tmp_path) == before

    import sqlite3

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / DB_NAME) as connection:
        connection.execute("CREATE TABLE notes (x)")
    connection.close()
    before = snapshot(foreign)
    with pytest.raises(IndexCorruptError, match="not a tempscale-rag store"):
        FaissStore(foreign)
    assert snapshot(foreign) == before

    with pytest.raises(IndexNotFoundError, match="no FAISS store"):
        FaissStore(tmp_path / "nothing-here")
    assert not (tmp_path / "nothing-here").exists()


def test_dimension_and_index_kind_of_an_existing_store_are_checked(tmp_path: Path) -> None:
    faiss_store(tmp_path).close()
    with pytest.raises(IndexMismatchError, match="16-dimensional"):
        FaissStore(tmp_path, dimension=32)
    with pytest.raises(IndexMismatchError, match="'flat' index"):
        FaissStore(tmp_path, settings=FaissSettings(index="hnsw"))


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    with faiss_store(tmp_path) as writer:
        writer.replace_source("a.txt", "fp", make_records("a.txt", 2))
        with pytest.raises(StoreUnavailableError, match="another process"):
            FaissStore(tmp_path)
        with FaissStore(tmp_path, read_only=True) as reader:
            assert reader.count() == 2
    FaissStore(tmp_path).close()


def test_hnsw_deletions_rebuild_and_match_flat(tmp_path: Path) -> None:
    flat, hnsw = faiss_store(tmp_path / "flat"), faiss_store(tmp_path / "hnsw", "hnsw")
    sources = {f"doc{i}.txt": make_records(f"doc{i}.txt", 20, seed=i) for i in range(10)}
    for store in (flat, hnsw):
        for source, records in sources.items():
            store.replace_source(source, "fp", records)
        for i in range(0, 10, 3):
            store.delete_source(f"doc{i}.txt")
        store.replace_source("doc1.txt", "fp2", make_records("doc1.txt", 5, seed=99, version="v2"))
    queries = unit_vectors(20, seed=123)
    expected = [[h.id for h in hits] for hits in flat.search_many(queries, k=5)]
    found = [[h.id for h in hits] for hits in hnsw.search_many(queries, k=5)]
    assert flat.count() == hnsw.count() == 105
    recall = np.mean([len(set(e) & set(f)) / 5 for e, f in zip(expected, found, strict=True)])
    assert recall >= 0.95
    flat.close()
    hnsw.close()


_CHILD_PRELUDE = """
import os, signal, sys
import numpy as np
from tempscale_rag.stores import ChunkRecord, FaissSettings
from tempscale_rag.stores.faiss import FaissStore

def vectors(i, n=8):
    v = np.random.default_rng(1000 + i).standard_normal((n, 32)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)

def records(source, i):
    return [ChunkRecord.create(text=f"{source} {j} v{i}", vector=v, source=source, position=j, token_length=j,
                               bucket="b") for j, v in enumerate(vectors(i))]
"""

# One child process, to pay for importing the package once. First a forked copy of it kills itself with SIGKILL from
# SQLite's statement trace, after the 4th of 8 chunk inserts of a replace_source that replaces an existing source:
# deterministically inside the transaction. Then the child writes until the test kills it at an arbitrary moment
# (most often while vectors.faiss is being written). It forks before using faiss, so no OpenMP pool is copied.
_CRASH_CHILD = _CHILD_PRELUDE + textwrap.dedent(
    """
    def self_kill_scenario():
        store = FaissStore(sys.argv[1] + "/self", dimension=32, create=True)
        store.replace_source("doc.txt", "fp1", records("doc.txt", 1))
        store.commit()
        store.replace_source("other.txt", "fp2", records("other.txt", 2))
        inserts = 0

        def kill_on_fourth_insert(statement):
            nonlocal inserts
            if statement.startswith("INSERT INTO chunks"):
                inserts += 1
                if inserts == 4:
                    os.kill(os.getpid(), signal.SIGKILL)

        store._db.set_trace_callback(kill_on_fourth_insert)
        store.replace_source("doc.txt", "fp3", records("doc.txt", 3))

    pid = os.fork()
    if pid == 0:
        self_kill_scenario()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("killed" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else "survived", flush=True)

    stores = [
        FaissStore(sys.argv[1] + "/flat", dimension=32, create=True),
        FaissStore(sys.argv[1] + "/hnsw", dimension=32, settings=FaissSettings(index="hnsw", hnsw_m=8), create=True),
    ]
    # A bulk of source-less chunks makes every vectors.faiss write of the flat store take a while.
    bulk = np.random.default_rng(7).standard_normal((30000, 32)).astype(np.float32)
    bulk /= np.linalg.norm(bulk, axis=1, keepdims=True)
    stores[0].upsert(ChunkRecord.create(text=f"bulk {j}", vector=v, source="bulk", position=j, token_length=1,
                                        bucket="b") for j, v in enumerate(bulk))
    i = 0
    while True:
        source = f"doc{i % 12}.txt"
        for store in stores:
            store.replace_source(source, f"fp{i}", records(source, i))
            if i % 3 == 0:
                store.commit()
        print(i, flush=True)
        i += 1
    """
)


def _vectors(i: int) -> np.ndarray:
    v = np.random.default_rng(1000 + i).standard_normal((8, 32)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _assert_whole_sources(folder: Path, bulk: int) -> dict[str, str]:
    """Every listed source has exactly its 8 chunks of the version its fingerprint names; nothing else is stored."""
    sources: dict[str, str] = {}
    for read_only in (True, False):
        with FaissStore(folder, read_only=read_only) as store:
            sources = store.sources()
            assert store.count() == bulk + 8 * len(sources), f"{folder.name}: a source is stored partially"
            for source, fingerprint in sources.items():
                version = int(fingerprint.removeprefix("fp"))
                hits = store.search_many(_vectors(version), k=1)
                assert [h[0].text for h in hits] == [f"{source} {j} v{version}" for j in range(8)], folder.name
                assert hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    return sources


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and SIGKILL (POSIX)")
def test_kill_9_mid_write_leaves_the_previous_or_the_new_state(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "killed", "the self-kill scenario did not die inside the transaction"
        lines = 0
        for _line in child.stdout:
            lines += 1
            if lines >= 30:
                break
        time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert lines >= 30, "the looping writer died before it was killed"

    assert _assert_whole_sources(tmp_path / "self", bulk=0) == {"doc.txt": "fp1", "other.txt": "fp2"}
    assert len(_assert_whole_sources(tmp_path / "flat", bulk=30000)) >= 10
    assert len(_assert_whole_sources(tmp_path / "hnsw", bulk=0)) >= 10


# --- Qdrant specifics ------------------------------------------------------------------------------------------


def test_qdrant_interrupted_upload_is_not_listed_and_redo_does_not_duplicate(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []

    def crash_after_first_batch(done: int, total: int) -> None:
        calls.append((done, total))
        if len(calls) == 1:
            raise KeyboardInterrupt("simulated crash mid-upload")

    first, second = make_records("a.txt", 5, seed=1), make_records("a.txt", 5, seed=2, version="v2")
    with QdrantStore(dimension=DIM, path=tmp_path, batch_size=2) as store:
        store.replace_source("a.txt", "fp1", first)
        store._progress = crash_after_first_batch
        with pytest.raises(KeyboardInterrupt):
            store.replace_source("a.txt", "fp2", second)
        assert store.sources() == {}, "a half-uploaded source must not be vouched for"
    with QdrantStore(dimension=DIM, path=tmp_path, batch_size=2) as store:
        assert store.sources() == {}
        store.replace_source("a.txt", "fp2", second)
        store.replace_source("a.txt", "fp2", second)
        assert store.sources() == {"a.txt": "fp2"}
        assert store.count() == 5
        assert {h.text.split()[-1] for h in store.search(first[0].vector, k=10)} == {"v2"}


def test_qdrant_progress_and_batches(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    with QdrantStore(dimension=DIM, path=MEMORY, batch_size=2, progress=lambda d, t: seen.append((d, t))) as store:
        store.upsert(make_records("a.txt", 5))
        assert store.count() == 5
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_qdrant_existing_collection_must_match(tmp_path: Path) -> None:
    QdrantStore(dimension=DIM, path=tmp_path, collection="docs").close()
    with pytest.raises(IndexMismatchError, match=r"16-dimensional vectors with cosine distance.*needs 8-dimensional"):
        QdrantStore(dimension=8, path=tmp_path, collection="docs")
    with pytest.raises(IndexMismatchError, match="dot distance"):
        QdrantStore(dimension=DIM, path=tmp_path, collection="docs", distance="dot")
    with pytest.raises(IndexNotFoundError, match="no collection 'other'"):
        QdrantStore(dimension=DIM, path=tmp_path, collection="other", create=False)
    with pytest.raises(IndexNotFoundError, match="no local Qdrant storage"):
        QdrantStore(dimension=DIM, path=tmp_path / "missing", read_only=True)
    with pytest.raises(ValueError, match="exactly one of url"):
        QdrantStore(dimension=DIM)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_qdrant_server_fails_fast_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{_unused_port()}"
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(StoreUnavailableError) as info:
        QdrantStore(dimension=DIM, url=url, timeout=1, retries=2, backoff=0.01)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert url in message and "unreachable" in message and "\n" not in message
    assert caplog.text.count("retrying") == 2, "network errors are retried, `retries` times"


def test_open_store_with_an_unreachable_server_leaves_no_folder(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_unused_port()}"
    manifest = IndexManifest.new(
        model="m", dimension=DIM, config=TempScaleConfig(model="m"), backend=QdrantSettings(url=url)
    )
    with pytest.raises(StoreUnavailableError, match=url):
        open_store(tmp_path / "index", manifest, retries=0, timeout=1)
    assert not (tmp_path / "index").exists()


# --- repair reports exactly what was lost (issue 24, point 6) -------------------------------------------------------

REPAIR_FILES = {f"docs/file{i}.md": n for i, n in enumerate([60, 200, 90, 150, 250, 110, 130, 120])}


def build_repairable_index(folder: Path) -> None:
    """A FAISS index of 8 files and 1,110 chunks of MiniLM's dimension, written through `open_store` as `index` does."""
    rng = np.random.default_rng(0)
    manifest = IndexManifest.new(model="all-MiniLM-L6-v2", dimension=384, config=TempScaleConfig())
    with open_store(folder, manifest) as store:
        for source, n in REPAIR_FILES.items():
            vectors = unit_vectors(n, 384, seed=len(source) + n)
            records = [
                ChunkRecord.create(
                    text=f"chunk {i} of {source}: " + " ".join(f"w{rng.integers(1000)}" for _ in range(60)),
                    vector=vector,
                    source=source,
                    position=i,
                    token_length=64,
                    bucket="0-128",
                    metadata={"chunk_tokens": 64},
                )
                for i, vector in enumerate(vectors)
            ]
            store.replace_source(source, "fp-" + source, records)


@pytest.mark.parametrize("where", [0.5, 0.3, 0.7])
def test_repair_reports_exactly_the_chunks_and_files_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: float
) -> None:
    """4 KB of garbage inside chunks.sqlite: the report's lost chunks and files are the true difference."""
    from .conftest import run_cli

    index = tmp_path / "index"
    build_repairable_index(index)
    with FaissStore(index, read_only=True) as store:
        chunks_before, sources_before = store.count(), set(store.sources())
    assert (chunks_before, len(sources_before)) == (1110, 8)
    db = index / DB_NAME
    data = db.read_bytes()
    start = int(len(data) * where) // 4096 * 4096
    db.write_bytes(data[:start] + bytes((i * 73 + 41) % 256 for i in range(4096)) + data[start + 4096 :])
    shutil.copy(db, tmp_path / "damaged.sqlite")

    code, out, err = run_cli(capsys, "repair", "--out", str(index), "--json")
    report = json.loads(out)
    with FaissStore(index, read_only=True) as store:
        chunks_after, sources_after = store.count(), set(store.sources())
    assert report["database_damaged"], err
    assert (report["chunks_before"], report["files_before"]) == (chunks_before, len(sources_before))
    assert report["chunks_kept"] == chunks_after and report["files_kept"] == len(sources_after)
    assert report["chunks_lost"] == chunks_before - chunks_after
    assert set(report["files_lost"]) == sources_before - sources_after
    assert (code == 3) == bool(report["files_lost"])

    # The same damage, reported as text.
    shutil.copy(tmp_path / "damaged.sqlite", db)
    (index / FAISS_NAME).unlink(missing_ok=True)
    _, text, _ = run_cli(capsys, "repair", "--out", str(index))
    lost_files = len(sources_before - sources_after)
    assert (
        f"kept {len(sources_after)} of {len(sources_before)} files ({chunks_after} of {chunks_before} chunks)" in text
    )
    assert f"lost {lost_files} files and {chunks_before - chunks_after} chunks" in text


def test_a_failing_rollback_does_not_hide_ctrl_c() -> None:
    """Ctrl-C inside a write transaction must reach the CLI as Ctrl-C (exit 130), even when ROLLBACK itself fails.

    A stand-in connection: the real failure ("database table is locked" from ROLLBACK after SIGINT landed mid-
    statement) depends on timing and showed up in about one run in five of the SIGINT crash test.
    """
    from tempscale_rag.stores.faiss.database import transaction

    class LockedOnRollback:
        in_transaction = True

        def execute(self, statement: str) -> None:
            if statement == "ROLLBACK":
                raise sqlite3.OperationalError("database table is locked")

    with pytest.raises(KeyboardInterrupt), transaction(LockedOnRollback()):  # type: ignore[arg-type]
        raise KeyboardInterrupt
