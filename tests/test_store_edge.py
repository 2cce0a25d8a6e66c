"""Qdrant Edge (`EdgeStore`, qdrant-edge-py): opening through the manifest, one opener, interruptions, kill -9, damage.

The store contract itself (round trips, reopen, edits, document search) runs on Edge in `test_stores.py` and
`test_store_congruence.py`; this file covers what is Edge's own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.cli import main
from tempscale_rag.cli.indexing import _requested_backend
from tempscale_rag.config import TempScaleConfig
from tempscale_rag.ranking import search_documents
from tempscale_rag.stores import (
    ChunkRecord,
    IndexCorruptError,
    IndexManifest,
    QdrantSettings,
    StoreUnavailableError,
    open_store,
)
from tempscale_rag.stores.manifest import MANIFEST_NAME
from tempscale_rag.stores.qdrant import QdrantStore
from tempscale_rag.stores.qdrant.edge import REPAIRED_FINGERPRINT, EdgeStore

REPO_ROOT = Path(__file__).resolve().parents[1]
DIM = 32


def records(source: str, version: int, n: int = 8) -> list[ChunkRecord]:
    vectors = np.random.default_rng(1000 + version).standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ChunkRecord.create(
            text=f"{source} {j} v{version}", vector=v, source=source, position=j, token_length=j, bucket="b"
        )
        for j, v in enumerate(vectors)
    ]


def edge_manifest() -> IndexManifest:
    return IndexManifest.new(
        model="edge-test", dimension=DIM, config=TempScaleConfig(), backend=QdrantSettings(engine="edge")
    )


def test_new_embedded_index_runs_on_edge_and_reopens(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    with open_store(folder, edge_manifest()) as store:
        assert isinstance(store, EdgeStore)
        for i in range(3):
            store.replace_source(f"s{i}.txt", f"fp{i}", records(f"s{i}.txt", i))
    stored = json.loads((folder / MANIFEST_NAME).read_text())
    assert stored["backend"]["engine"] == "edge"
    for name in ("tempscale", "tempscale__sources", "tempscale__documents"):
        assert (folder / "qdrant" / name / "edge_config.json").is_file(), name
    start = time.perf_counter()
    with open_store(folder, read_only=True) as store:
        opened_in = time.perf_counter() - start
        assert isinstance(store, EdgeStore)
        assert store.count() == 24
        assert store.sources() == {f"s{i}.txt": f"fp{i}" for i in range(3)}
        hit = store.search(records("s1.txt", 1)[5].vector, k=1)[0]
        assert (hit.text, hit.source, hit.position) == ("s1.txt 5 v1", "s1.txt", 5)
        assert hit.score == pytest.approx(1.0, abs=1e-5)
        assert store.describe()["mode"] == "edge"
    assert opened_in < 2.0


def test_an_index_written_before_edge_keeps_local_mode(tmp_path: Path) -> None:
    """A manifest without `engine` (written before Edge existed) opens with qdrant-client's local mode."""
    folder = tmp_path / "index"
    manifest = IndexManifest.new(model="edge-test", dimension=DIM, config=TempScaleConfig(), backend=QdrantSettings())
    with open_store(folder, manifest) as store:
        store.replace_source("a.txt", "fp", records("a.txt", 1))
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    del raw["backend"]["engine"]
    (folder / MANIFEST_NAME).write_text(json.dumps(raw))
    with open_store(folder, read_only=True) as store:
        assert type(store) is QdrantStore
        assert store.sources() == {"a.txt": "fp"}
    # Asking for the index with today's CLI settings (engine edge) still opens what is there.
    with open_store(folder, edge_manifest()) as store:
        assert type(store) is QdrantStore


def test_cli_makes_edge_indexes_and_local_mode_only_by_name() -> None:
    def settings(**flags: object) -> object:
        base = {"qdrant_url": None, "qdrant_path": None, "collection": None, "store": None, "hnsw": False}
        return _requested_backend(argparse.Namespace(**{**base, **flags}))

    assert settings(store="qdrant") == QdrantSettings(collection="tempscale", engine="edge")
    assert settings(store="qdrant", qdrant_engine="local") == QdrantSettings(collection="tempscale", engine="local")
    assert settings(qdrant_engine="edge") == QdrantSettings(collection="tempscale", engine="edge")
    assert settings(store="qdrant", qdrant_url="http://localhost:6333").url == "http://localhost:6333"
    with pytest.raises(ValueError, match="for --store qdrant"):
        settings(store="faiss", qdrant_engine="edge")
    with pytest.raises(ValueError, match="memory"):
        QdrantSettings(engine="edge", path=":memory:")


def test_one_opener_at_a_time_with_a_clear_message(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    writer = open_store(folder, edge_manifest())
    writer.replace_source("a.txt", "fp", records("a.txt", 1))
    writer.commit()
    with pytest.raises(ValueError, match="one writer"):
        writer.writer()
    for read_only in (True, False):
        with pytest.raises(StoreUnavailableError, match="already open elsewhere") as caught:
            open_store(folder, read_only=read_only)
        assert "\n" not in str(caught.value)
    writer.close()
    with open_store(folder, read_only=True) as reader:
        assert reader.sources() == {"a.txt": "fp"}


def test_interrupted_upload_is_not_listed_and_redo_does_not_duplicate(tmp_path: Path) -> None:
    calls: list[int] = []

    def crash_after_first_batch(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 1:
            raise KeyboardInterrupt("simulated crash mid-upload")

    with EdgeStore(dimension=DIM, path=tmp_path, batch_size=3) as store:
        store.replace_source("a.txt", "fp1", records("a.txt", 1))
        store._progress = crash_after_first_batch
        with pytest.raises(KeyboardInterrupt):
            store.replace_source("a.txt", "fp2", records("a.txt", 2))
        assert store.sources() == {}, "a half-uploaded source must not be vouched for"
    with EdgeStore(dimension=DIM, path=tmp_path, batch_size=3) as store:
        store.replace_source("a.txt", "fp2", records("a.txt", 2))
        assert store.sources() == {"a.txt": "fp2"}
        assert store.count() == 8
        assert {h.text.split()[-1] for h in store.search(records("a.txt", 1)[0].vector, k=10)} == {"v2"}


def test_stale_chunks_of_earlier_sessions_and_interrupted_writes_are_deleted(tmp_path: Path) -> None:
    """The writer skips the stale-chunk delete only for sources it knows have no chunks (its facet, its writes)."""

    def crash_once(store: EdgeStore) -> None:
        calls: list[int] = []

        def progress(done: int, total: int) -> None:
            calls.append(done)
            if len(calls) == 1:
                raise KeyboardInterrupt("simulated crash mid-upload")

        store._progress = progress

    with EdgeStore(dimension=DIM, path=tmp_path, batch_size=3) as store:
        store.replace_source("a.txt", "fp1", records("a.txt", 1))
        crash_once(store)
        with pytest.raises(KeyboardInterrupt):
            store.replace_source("b.txt", "fp1", records("b.txt", 1))  # a new source, left with 3 chunks
        crash_once(store)
        with pytest.raises(KeyboardInterrupt):
            store.replace_source("c.txt", "fp1", records("c.txt", 1))
        store._progress = None
        store.replace_source("c.txt", "fp2", records("c.txt", 2, n=5))  # same session: other chunk ids
        assert store.count() == 8 + 3 + 5
        store.delete_source("a.txt")
        store.replace_source("a.txt", "fp3", records("a.txt", 3, n=2))
        assert store.count() == 2 + 3 + 5
    with EdgeStore(dimension=DIM, path=tmp_path, batch_size=3) as store:
        store.replace_source("a.txt", "fp4", records("a.txt", 4, n=1))  # stored in the first session
        store.replace_source("b.txt", "fp2", records("b.txt", 2, n=2))  # interrupted in the first session
        store.upsert(records("d.txt", 1, n=4))
        store.replace_source("d.txt", "fp2", records("d.txt", 2, n=1))  # chunks written by upsert()
        assert store.count() == 1 + 2 + 5 + 1
        assert store.sources() == {"a.txt": "fp4", "b.txt": "fp2", "c.txt": "fp2", "d.txt": "fp2"}
        for source, version in (("a.txt", "v4"), ("b.txt", "v2"), ("c.txt", "v2"), ("d.txt", "v2")):
            hits = store.search(records(source, int(version[1:]))[0].vector, k=20)
            assert {h.text.split()[-1] for h in hits if h.source == source} == {version}


def damage(shard: Path) -> None:
    """Overwrite the head of every segment's state file (what a torn disk write or a bad sector leaves)."""
    for state in shard.glob("segments/*/segment.json"):
        state.write_bytes(b"\xff" * 16)


@pytest.mark.parametrize("shard", ["tempscale__documents", "tempscale__sources", "tempscale"])
def test_damaged_shard_is_refused_with_one_line_and_repaired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shard: str
) -> None:
    folder = tmp_path / "index"
    want = {f"s{i}.txt": records(f"s{i}.txt", i) for i in range(3)}
    with open_store(folder, edge_manifest()) as store:
        for source, members in want.items():
            store.replace_source(source, "fp", members)
    damage(folder / "qdrant" / shard)
    with pytest.raises(IndexCorruptError, match="repair") as caught:
        open_store(folder, read_only=True)
    assert "\n" not in str(caught.value) and shard in str(caught.value)

    assert main(["--quiet", "repair", "--out", str(folder)]) == 0
    report = capsys.readouterr().out
    assert "damaged" in report
    if shard == "tempscale":
        # The chunks themselves are lost: the storage is set aside and the next `index` starts afresh.
        assert (folder / "qdrant.damaged").is_dir()
        with open_store(folder, edge_manifest()) as store:
            assert store.count() == 0 and store.sources() == {}
        return
    with open_store(folder, read_only=True) as store:
        assert store.count() == 24
        fingerprint = REPAIRED_FINGERPRINT if shard == "tempscale__sources" else "fp"
        assert store.sources() == dict.fromkeys(want, fingerprint)
        query = want["s1.txt"][2].vector
        assert store.search(query, k=1)[0].text == "s1.txt 2 v1"
        assert search_documents(store, query, k=1)[0].source == "s1.txt"
    assert (folder / "qdrant" / (shard + ".damaged")).is_dir()


# The child indexes 12 sources in a loop (version i for the i-th write), committing every 3 writes and closing and
# reopening every 10 (closing runs Edge's optimizers), until the test kills it with SIGKILL at an arbitrary moment.
_CRASH_CHILD = textwrap.dedent(
    """
    import sys
    from tests.test_store_edge import records
    from tempscale_rag.stores.qdrant.edge import EdgeStore

    store = EdgeStore(dimension=32, path=sys.argv[1])
    i = 0
    while True:
        source = f"doc{i % 12}.txt"
        store.replace_source(source, f"fp{i}", records(source, i))
        if i % 3 == 0:
            store.commit()
        if i % 10 == 9:
            store.close()
            store = EdgeStore(dimension=32, path=sys.argv[1])
        print(i, flush=True)
        i += 1
    """
)


def stored_chunks(store: EdgeStore) -> dict[str, dict[str, np.ndarray]]:
    """Every stored chunk's text and vector, by source (texts read through evidence_hits)."""
    chunks = store.scan_chunks(None)
    out: dict[str, dict[str, np.ndarray]] = {}
    for source, members in chunks.items():
        hits = store.evidence_hits([point for point, _, _ in members])
        out[source] = {hits[point].text: vector for point, vector, _ in members}
    return out


def assert_exactly(found: dict[str, dict[str, np.ndarray]], want: dict[str, list[ChunkRecord]]) -> None:
    assert sorted(found) == sorted(want)
    for source, members in want.items():
        assert sorted(found[source]) == sorted(r.text for r in members), source
        for record in members:
            np.testing.assert_allclose(found[source][record.text], record.vector, atol=1e-6)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_kill_9_then_rerun_gives_the_clean_runs_chunks_and_vectors(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, str(crashed)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )
    lines = 0
    try:
        assert child.stdout is not None
        for _line in child.stdout:
            lines += 1
            if lines >= 25 + int.from_bytes(os.urandom(1), "little") % 20:
                break
        time.sleep(float(np.random.default_rng().uniform(0, 0.05)))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert lines >= 25, "the looping writer died before it was killed"

    with EdgeStore(dimension=DIM, path=crashed) as store:
        # Whatever the moment of the kill, every listed source holds exactly the version its fingerprint names.
        listed = store.sources()
        assert len(listed) >= 10
        found = stored_chunks(store)
        for source, fingerprint in listed.items():
            assert_exactly({source: found[source]}, {source: records(source, int(fingerprint.removeprefix("fp")))})
        # The re-run, as the indexer does it: sources whose fingerprint differs are replaced, then pruned.
        wanted = {f"doc{k}.txt": 500 + k for k in range(12)}
        for source, version in wanted.items():
            if listed.get(source) != f"fp{version}":
                store.replace_source(source, f"fp{version}", records(source, version))
        for source in set(store.scan_chunks(None)) - set(wanted):
            store.delete_source(source)
    with EdgeStore(dimension=DIM, path=clean) as store:
        for source, version in wanted.items():
            store.replace_source(source, f"fp{version}", records(source, version))
    want = {source: records(source, version) for source, version in wanted.items()}
    queries = np.stack([r.vector for rs in want.values() for r in rs[:2]])
    with (
        EdgeStore(dimension=DIM, path=crashed, read_only=True) as rerun,
        EdgeStore(dimension=DIM, path=clean, read_only=True) as reference,
    ):
        assert rerun.sources() == reference.sources()
        assert rerun.count() == reference.count() == 96
        assert_exactly(stored_chunks(rerun), want)
        assert [[h.id for h in hits] for hits in rerun.search_many(queries, k=5)] == [
            [h.id for h in hits] for hits in reference.search_many(queries, k=5)
        ]
