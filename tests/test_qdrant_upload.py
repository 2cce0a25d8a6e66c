"""`tempscale-rag qdrant-upload`: an Edge index moves to a Qdrant server's collections without re-embedding.

No server runs here: the destination is qdrant-client's local mode (`--qdrant-path`), which takes the same requests
and creates the collections through the same store code as a server. Searching the copy must give what searching the
Edge index gives: chunks (hybrid, dense, lexical) and documents, with the same scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tempscale_rag.cli import main
from tempscale_rag.config import ChunkingConfig
from tempscale_rag.index.index import Index
from tempscale_rag.stores import IndexManifest, QdrantSettings, open_store
from tempscale_rag.stores.manifest import read_manifest
from tempscale_rag.stores.qdrant import QdrantStore
from tempscale_rag.stores.qdrant.edge import EdgeStore
from tempscale_rag.stores.qdrant.migrate import upload_index

DOCS = {
    "rivers.txt": "The river bank flooded after the storm; fishermen moved their boats to the harbour. " * 6,
    "finance.txt": "The bank approved the loan, and interest rates shaped the money market. " * 6,
    "passkey.txt": "Grass is green. The sky is blue. " * 12 + "The pass key is 71432. " + "Grass is green. " * 8,
    "garden.txt": "Tomatoes and beans grow in the garden; the gardener waters them every morning. " * 5,
}
QUERIES = ["what is the pass key 71432", "bank loan money", "river storm boats", "the and of"]


def results(folder: Path) -> dict[str, Any]:
    """Every kind of search of the index in `folder`, as (chunk text or source, score) lists.

    Texts, not chunk ids: repeated sentences make chunks with one text, whose ties the engines may order either way.
    """
    out: dict[str, Any] = {}
    with Index.open(folder) as index:
        for query in QUERIES:
            for retrieval in ("hybrid", "dense", "lexical"):
                hits = index.search(query, k=6, retrieval=retrieval)
                out[f"{retrieval} chunks: {query}"] = [(h.text, h.score) for h in hits]
                documents = index.search_documents(query, k=3, retrieval=retrieval)
                out[f"{retrieval} documents: {query}"] = [(d.source, d.score) for d in documents]
    return out


def tied_runs(hits: list[tuple[str, float]]) -> list[set[str]]:
    """The hits' names in runs of equal scores (repeated sentences make equal chunks; engines order ties freely)."""
    runs: list[set[str]] = []
    previous: float | None = None
    for name, score in hits:
        if previous is None or abs(score - previous) > 1e-5:
            runs.append(set())
        runs[-1].add(name)
        previous = score
    return runs


def same(found: dict[str, Any], want: dict[str, Any]) -> None:
    assert found.keys() == want.keys()
    for key, hits in want.items():
        assert [score for _, score in found[key]] == pytest.approx([score for _, score in hits], abs=1e-5), key
        # Equal names run by run; the last run may be cut by k anywhere among its ties.
        assert tied_runs(found[key])[:-1] == tied_runs(hits)[:-1], key


@pytest.fixture(scope="module")
def edge_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("edge") / "index"
    backend = QdrantSettings(engine="edge")
    with Index.create(folder, backend=backend, chunking=ChunkingConfig(sizes=(48, 128))) as index:
        index.add(DOCS)
    manifest = read_manifest(folder)
    assert manifest.backend.engine == "edge" and manifest.lexical is not None and manifest.lexical.chunk_size == 128
    return folder


def test_upload_through_the_cli_searches_the_same_and_reruns(
    edge_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    want = results(edge_index)
    server, target = tmp_path / "server", tmp_path / "on-server"
    assert main(["qdrant-upload", str(edge_index), "--qdrant-path", str(server), "--to", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "nothing was re-embedded" in printed and f"--out {target}" in printed

    source, copy = read_manifest(edge_index), read_manifest(target)
    assert copy.backend == QdrantSettings(path=str(server.resolve()), distance=source.backend.distance)
    assert copy.model_dump(exclude={"backend", "updated_at"}) == source.model_dump(exclude={"backend", "updated_at"})
    same(results(target), want)

    with open_store(edge_index, read_only=True) as old, open_store(target, read_only=True) as new:
        assert isinstance(old, EdgeStore) and isinstance(new, QdrantStore) and not isinstance(new, EdgeStore)
        assert new.sources() == old.sources() and new.count() == old.count()
        described_old, described_new = old.describe(), new.describe()
        assert described_new["lexical_chunks"] == described_old["lexical_chunks"] > 0
        old_chunks, new_chunks = old.scan_chunks(None), new.scan_chunks(None)
        assert old_chunks.keys() == new_chunks.keys()
        for name, chunks in old_chunks.items():
            by_id = {point: (vector, size) for point, vector, size in new_chunks[name]}
            for point, vector, size in chunks:
                assert by_id[point][1] == size
                np.testing.assert_allclose(by_id[point][0], vector, atol=1e-6)

    # An interrupted upload is finished by running it again: idempotent, nothing doubled.
    assert main(["qdrant-upload", str(edge_index), "--qdrant-path", str(server), "--to", str(target), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["chunks"] == sum(len(c) for c in old_chunks.values()) and report["files"] == len(DOCS)
    same(results(target), want)


def test_upload_to_another_collection_keeps_the_embedded_index(edge_index: Path, tmp_path: Path) -> None:
    before = read_manifest(edge_index)
    calls: list[tuple[str, int, int]] = []
    report = upload_index(
        edge_index,
        tmp_path / "copy",
        path=tmp_path / "server",
        collection="moved",
        batch_size=7,
        progress=lambda what, done, total: calls.append((what, done, total)),
    )
    assert report.collection == "moved" and report.sources == len(DOCS)
    assert [what for what, _, _ in calls][-1] == "sources" and calls[-1][1] == calls[-1][2] == len(DOCS)
    assert read_manifest(edge_index) == before
    with open_store(tmp_path / "copy", read_only=True) as store:
        assert isinstance(store, QdrantStore) and store.collection == "moved" and store.count() == report.chunks


def test_bad_uploads_fail_with_one_line_and_change_nothing(
    edge_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faiss = tmp_path / "faiss"
    with open_store(faiss, IndexManifest.new(model="m", dimension=4, config=read_manifest(edge_index).config)):
        pass
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine", encoding="utf-8")
    cases = [
        ([str(faiss), "--qdrant-path", str(tmp_path / "s1")], "a FAISS index"),
        ([str(tmp_path / "missing"), "--qdrant-path", str(tmp_path / "s2")], "missing"),
        ([str(edge_index), "--qdrant-path", str(tmp_path / "s3"), "--to", str(edge_index)], "must differ"),
        ([str(edge_index), "--qdrant-path", str(tmp_path / "s4"), "--to", str(faiss)], "was built with model 'm'"),
        ([str(edge_index), "--qdrant-path", str(tmp_path / "s6"), "--to", str(notes)], "is not empty"),
        ([str(edge_index), "--qdrant-path", str(tmp_path / "s5"), "--batch-size", "0"], "--batch-size"),
    ]
    for argv, message in cases:
        assert main(["qdrant-upload", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("tempscale-rag: error:") and message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as stopped:
        main(["qdrant-upload", str(edge_index), "--url", "http://x:6333", "--qdrant-path", str(tmp_path / "s")])
    assert stopped.value.code == 2
    assert not any((tmp_path / f"s{i}").exists() for i in range(1, 7))
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]
    with open_store(edge_index, read_only=True) as store:
        assert len(store.sources()) == len(DOCS)
