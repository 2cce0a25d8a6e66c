"""Distributed indexing and embedding on a real local Ray cluster (2 CPUs) with the bundled model.

One cluster serves the whole module and one actor pool most of its tests: Ray start-up and model loading take seconds
each here. Every index is compared with the one the single-process `FolderIndexer` (or `tempscale-rag index`) builds
from the same files with the default multi-size chunking: chunks, vectors, metadata, manifest, search results, summary.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tempscale_rag import TempScaleEncoder
from tempscale_rag.cli.options import EXIT_PARTIAL
from tempscale_rag.config import ChunkingConfig, TempScaleConfig, chunked_index_config
from tempscale_rag.ingest.chunking import MultiSizeChunker
from tempscale_rag.ingest.indexer import FolderIndexer, IndexSummary
from tempscale_rag.ranking import search_documents
from tempscale_rag.stores import FaissStore, IndexManifest, QdrantStore, manifest_of, open_store

CONFIG = TempScaleConfig(device="cpu")
CHUNKING = ChunkingConfig()  # the default sizes, temperatures and document score, as `tempscale-rag index` uses
WORDS = [
    "the",
    "committee",
    "decided",
    "to",
    "fund",
    "the",
    "remote",
    "control",
    "design",
    "with",
    "a",
    "rubber",
    "case",
    "and",
    "a",
    "kinetic",
    "battery",
    "after",
    "a",
    "long",
    "debate",
    "about",
    "cost",
    "and",
    "the",
    "marketing",
    "report",
    "on",
    "fruit",
    "and",
    "vegetables",
]


def _text(rng: random.Random, words: int) -> str:
    sentences = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(max(1, words // 12))]
    return ". ".join(sentences) + "."


@pytest.fixture(scope="module")
def ray_module() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def single(encoder: TempScaleEncoder) -> tuple[TempScaleEncoder, MultiSizeChunker]:
    """The single-process engine and chunker, set up as `tempscale-rag index` sets them up."""
    chunker = MultiSizeChunker(encoder, CHUNKING)
    n_special = encoder.count_tokens([""])[0]
    return encoder.with_config(**chunked_index_config(encoder.config, CHUNKING, n_special).model_dump()), chunker


@pytest.fixture(scope="module")
def embedder(ray_module: Any) -> Iterator[Any]:
    from tempscale_rag.distributed import RayEmbedder, RaySettings
    from tempscale_rag.distributed.indexing import routing_config

    # The buckets are derived in a Ray task; the manifests compared below prove them equal to the local derivation.
    # Batches of 4 chunks: many batches per run, so an actor can be killed while work is queued on it.
    config = routing_config(CONFIG, CHUNKING)
    with RayEmbedder(config, RaySettings(batch_rows=4, files_per_task=2)) as pool:
        yield pool


def make_docs(folder: Path, seed: int = 0) -> Path:
    """Files of every kind the indexer meets: text at many lengths, markdown, cp1252, a non-UTF-8 name, and files it
    skips (unsupported, hidden, empty) or rejects (binary)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, words in enumerate([20, 150, 450, 800, 60, 600, 300]):
        (folder / f"doc{i}.txt").write_text(_text(rng, words), encoding="utf-8")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "notes.md").write_text("# Notes\n\n" + _text(rng, 200), encoding="utf-8")
    french = "Le caf\u00e9 \u00ab cr\u00e8me \u00bb co\u00fbte deux euros \u2013 c\u2019est l\u2019\u00e9t\u00e9. " * 6
    (folder / "latin.txt").write_bytes(french.encode("cp1252"))
    with open(os.fsencode(folder) + b"/caf\xe9.txt", "wb") as handle:
        handle.write(b"The espresso machine needs descaling with citric acid every month. " * 3)
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02 not text")
    (folder / "image.xyz").write_text("unsupported", encoding="utf-8")
    (folder / ".hidden.txt").write_text("hidden " * 20, encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    return folder


INDEXED = 10  # doc0-6, notes.md, latin.txt, caf\xe9.txt


def index_single(
    single: tuple[TempScaleEncoder, MultiSizeChunker], folder: Path, docs: Path, *, prune: bool = False
) -> IndexSummary:
    encoder, chunker = single
    manifest = IndexManifest.new(
        model=encoder.model_name, dimension=encoder.dimension, config=encoder.config, chunking=CHUNKING
    )
    with open_store(folder, manifest) as store:
        indexer = FolderIndexer(encoder, store, chunker=chunker, show_progress=False, index_dir=folder)
        return indexer.run([docs], prune=prune)


def index_ray(embedder: Any, folder: Path, docs: Path, *, prune: bool = False, **options: Any) -> IndexSummary:
    from tempscale_rag.distributed import RayIndexer

    manifest = IndexManifest.new(
        model=embedder.model_name, dimension=embedder.dimension, config=embedder.config, chunking=CHUNKING
    )
    with open_store(folder, manifest) as store:
        indexer = RayIndexer(embedder, store, chunking=CHUNKING, show_progress=False, index_dir=folder, **options)
        return indexer.run([docs], prune=prune)


def stored_chunks(folder: Path) -> dict[str, tuple[Any, ...]]:
    """chunk id -> (source, position, token_length, bucket, text, metadata, vector), as the store holds them."""
    db = sqlite3.connect(folder / "chunks.sqlite")
    try:
        rows = db.execute("SELECT chunk_id, source, position, token_length, bucket, text, metadata, vector FROM chunks")
        return {r[0]: (*r[1:6], json.loads(r[6]), np.frombuffer(r[7], dtype="<f4")) for r in rows}
    finally:
        db.close()


def assert_same_index(expected: Path, actual: Path, queries: np.ndarray) -> None:
    a, b = stored_chunks(expected), stored_chunks(actual)
    assert sorted(a) == sorted(b), "chunk sets differ"
    for chunk_id, row in a.items():
        assert row[:6] == b[chunk_id][:6]  # source, position, token length, bucket, text, metadata
        np.testing.assert_allclose(row[6], b[chunk_id][6], atol=1e-5)
    sizes = {row[5]["chunk_tokens"] for row in a.values()}
    assert sizes == set(CHUNKING.sizes), "every chunk carries its chunk size, and all sizes are there"
    with open_store(expected, read_only=True) as one, open_store(actual, read_only=True) as two:
        assert one.sources() == two.sources()
        m1, m2 = manifest_of(one), manifest_of(two)
        assert m1 is not None and m2 is not None and m2.chunking == CHUNKING
        skip = {"created_at", "updated_at"}
        assert m1.model_dump(exclude=skip) == m2.model_dump(exclude=skip)
        queries = np.concatenate([queries, np.stack([row[6] for row in list(a.values())[:4]])])
        hits1, hits2 = one.search_many(queries, k=8), two.search_many(queries, k=8)
        assert [[h.id for h in q] for q in hits1] == [[h.id for h in q] for q in hits2]
        for query in queries:
            docs1 = search_documents(one, query, 5, scoring=CHUNKING.doc_score)
            docs2 = search_documents(two, query, 5, scoring=CHUNKING.doc_score)
            assert [d.source for d in docs1] == [d.source for d in docs2]
            np.testing.assert_allclose([d.score for d in docs1], [d.score for d in docs2], atol=1e-5)
            assert [[h.id for h in d.chunks] for d in docs1] == [[h.id for h in d.chunks] for d in docs2]


@pytest.fixture(scope="module")
def queries(single: tuple[TempScaleEncoder, MultiSizeChunker]) -> np.ndarray:
    return single[0].encode(["kinetic battery in a rubber case", "descaling the espresso machine"], query=True)


def comparable(summary: IndexSummary) -> dict[str, Any]:
    out = summary.to_dict()
    out.pop("seconds")
    return out


# These two run first, before the module's actor pool exists: on 2 CPUs a second pool (the CLI's, Ray Data's)
# next to it would leave no CPU for reading tasks.


def test_embed_dataset_adds_the_engines_vectors(ray_module: Any, encoder: TempScaleEncoder) -> None:
    from tempscale_rag.distributed import RaySettings, embed_dataset

    rng = random.Random(3)
    texts = [_text(rng, n) for n in (3, 40, 90, 250, 12, 400, 5, 160)]
    ds = ray_module.data.from_items([{"id": i, "body": t} for i, t in enumerate(texts)])
    rows = embed_dataset(ds, "body", config=CONFIG, settings=RaySettings(batch_rows=3)).take_all()
    rows.sort(key=lambda r: r["id"])
    assert [r["body"] for r in rows] == texts
    vectors = np.stack([r["vector"] for r in rows])
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), encoder.dimension)
    np.testing.assert_allclose(vectors, encoder.encode(texts), atol=2e-6)


def test_tokenising_tasks_feed_the_actors_the_engines_ids(ray_module: Any, encoder: TempScaleEncoder) -> None:
    """The CPU stage (Ray tasks; a Ray Data task stage) sends ids to the actors: the single process's vectors, for
    `RayEmbedder` and `embed_dataset`, the prompt included."""
    from tempscale_rag.distributed import RayEmbedder, RaySettings, embed_dataset

    rng = random.Random(5)
    texts = [_text(rng, n) for n in (3, 40, 90, 250, 12, 400, 5, 160, 700)] + ["", "naïve café 日本語"]
    config = CONFIG.model_copy(update={"document_prompt": "passage: "})
    expected = encoder.with_config(document_prompt="passage: ").encode(texts)
    settings = RaySettings(batch_rows=4, tokenize_in_tasks=True, tokenize_task_rows=3)
    ds = ray_module.data.from_items([{"id": i, "body": t} for i, t in enumerate(texts)])
    rows = sorted(embed_dataset(ds, "body", config=config, settings=settings).take_all(), key=lambda r: r["id"])
    assert all(set(r) == {"id", "body", "vector"} for r in rows)  # the ids column is dropped
    np.testing.assert_allclose(np.stack([r["vector"] for r in rows]), expected, atol=2e-6)
    with RayEmbedder(config, settings, reserve_cpus=False) as pool:
        assert pool.plan.tokenize_in_tasks and pool._tokenizer is not None
        np.testing.assert_allclose(pool.encode(texts), expected, atol=2e-6)
        assert pool.last_report.inputs == len(texts) and pool.last_report.empty_inputs == 1


def test_cli_index_ray_builds_the_index_the_cli_builds(
    ray_module: Any, queries: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tempscale_rag.cli import main

    docs = make_docs(tmp_path / "docs", seed=4)
    outputs = {}
    for name, flags in (("single", []), ("ray", ["--ray", "--ray-actors", "1"])):
        out = str(tmp_path / name)
        code = main(["-q", "index", str(docs), "--out", out, "--device", "cpu", "--json", *flags])
        assert code == EXIT_PARTIAL  # binary.txt is rejected: a partial run, on both paths
        summary = json.loads(capsys.readouterr().out)
        summary.pop("seconds")
        assert main(["search", "kinetic battery", "--out", out, "--json", "--documents", "-k", "4"]) == 0
        documents = json.loads(capsys.readouterr().out)
        outputs[name] = (summary, documents)
    (summary, documents), (ray_summary, ray_documents) = outputs["single"], outputs["ray"]
    assert ray_summary == summary and list(ray_summary) == list(summary)  # same fields, same order, same values
    assert summary["files_indexed"] == INDEXED and [f["kind"] for f in summary["files_failed"]] == ["rejected"]
    assert summary["skipped_by_kind"] == {"empty": 1, "hidden": 1, "unsupported": 1}
    assert [(d["source"], [c["position"] for c in d["chunks"]]) for d in ray_documents] == [
        (d["source"], [c["position"] for c in d["chunks"]]) for d in documents
    ]
    np.testing.assert_allclose([d["score"] for d in ray_documents], [d["score"] for d in documents], atol=1e-5)
    assert_same_index(tmp_path / "single", tmp_path / "ray", queries)
    assert ray_module.is_initialized()  # the CLI reused the running cluster and left it up

    # An existing index: its recorded settings (chunking, buckets) are used, unchanged files are skipped.
    code = main(["-q", "index", str(docs), "--out", str(tmp_path / "ray"), "--json", "--ray"])
    again = json.loads(capsys.readouterr().out)
    assert code == EXIT_PARTIAL and (again["files_indexed"], again["files_unchanged"]) == (0, INDEXED)


def test_ray_index_equals_single_process_index(
    embedder: Any, single: tuple[TempScaleEncoder, MultiSizeChunker], queries: np.ndarray, tmp_path: Path
) -> None:
    docs = make_docs(tmp_path / "docs")
    one = index_single(single, tmp_path / "single", docs)
    two = index_ray(embedder, tmp_path / "ray", docs)
    assert one.chunks_added > 8 * 4  # many embedding batches
    assert comparable(two) == comparable(one)
    assert two.files_indexed == INDEXED and [e["encoding"] for e in two.encodings] == ["cp1252"]
    assert_same_index(tmp_path / "single", tmp_path / "ray", queries)

    # A second run adds nothing.
    again = index_ray(embedder, tmp_path / "ray", docs)
    assert (again.files_indexed, again.chunks_added, again.files_unchanged, again.tokens) == (0, 0, INDEXED, 0)
    assert comparable(again) == comparable(index_single(single, tmp_path / "single", docs))
    assert_same_index(tmp_path / "single", tmp_path / "ray", queries)

    # A file turned binary loses its chunks; a change, an addition and a removal (pruned) match too.
    (docs / "doc3.txt").write_bytes(b"\x00\x9f\x00 binary now" * 10)
    (docs / "doc1.txt").write_text(_text(random.Random(7), 500), encoding="utf-8")
    (docs / "doc7.txt").write_text(_text(random.Random(8), 90), encoding="utf-8")
    (docs / "doc0.txt").unlink()
    one = index_single(single, tmp_path / "single", docs, prune=True)
    two = index_ray(embedder, tmp_path / "ray", docs, prune=True)
    assert comparable(two) == comparable(one)
    assert (two.files_indexed, two.files_pruned, two.files_unchanged) == (2, 1, INDEXED - 3)
    assert [r["path"] for r in two.files_removed] == [str(docs / "doc3.txt")]
    assert str(docs / "doc3.txt") not in {row[0] for row in stored_chunks(tmp_path / "ray").values()}
    assert_same_index(tmp_path / "single", tmp_path / "ray", queries)


def test_killed_embedding_actor_is_replaced_and_the_index_is_complete(
    embedder: Any,
    single: tuple[TempScaleEncoder, MultiSizeChunker],
    queries: np.ndarray,
    tmp_path: Path,
    ray_module: Any,
) -> None:
    docs = make_docs(tmp_path / "docs", seed=1)
    index_single(single, tmp_path / "single", docs)
    actor = embedder.actors[0]
    pid_before = ray_module.get(actor.describe.remote())["pid"]
    killed: list[int] = []

    def kill_once(done: int, read: int) -> None:
        if not killed:
            # SIGKILL of the actor's process while more batches are queued on it; Ray restarts it.
            ray_module.kill(actor, no_restart=False)
            killed.append(done)

    summary = index_ray(embedder, tmp_path / "ray", docs, progress=kill_once)
    assert killed and killed[0] < summary.chunks_added  # killed mid-run, with chunks left to embed
    assert ray_module.get(actor.describe.remote())["pid"] != pid_before  # a new process replaced it
    assert_same_index(tmp_path / "single", tmp_path / "ray", queries)
    assert summary.chunks == summary.chunks_added == len(stored_chunks(tmp_path / "ray"))


def test_interrupted_job_rerun_converges(
    embedder: Any, single: tuple[TempScaleEncoder, MultiSizeChunker], queries: np.ndarray, tmp_path: Path
) -> None:
    docs = make_docs(tmp_path / "docs", seed=2)
    index_single(single, tmp_path / "single", docs)

    calls: list[int] = []

    def interrupt(done: int, read: int) -> None:
        calls.append(done)
        if len(calls) == 6:  # Ctrl-C in the middle of the run: files committed so far stay, the rest is redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index_ray(embedder, tmp_path / "ray", docs, progress=interrupt, batch_chunks=4)
    with open_store(tmp_path / "ray", read_only=True) as store:
        partial = store.count()
    assert 0 < partial < len(stored_chunks(tmp_path / "single"))  # some files were committed, not all
    rerun = index_ray(embedder, tmp_path / "ray", docs)
    assert rerun.files_unchanged > 0 and rerun.files_indexed > 0
    assert_same_index(tmp_path / "single", tmp_path / "ray", queries)


class _ServerStandIn(QdrantStore):
    """Qdrant's local mode standing in for a server, which cannot run here: `writer()` hands out writers that share
    this store's client behind a lock (local mode is one client per folder), so what runs concurrently is the
    indexer's dispatch of whole files to writer threads; each write is the real `replace_source`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lock = threading.Lock()
        self.threads: set[str] = set()
        self.opened = self.closed_writers = 0

    @property
    def concurrent_writers(self) -> bool:
        return True

    def writer(self) -> Any:
        self.opened += 1
        return _SharedWriter(self)


class _SharedWriter:
    def __init__(self, store: _ServerStandIn) -> None:
        self.store = store

    def replace_source(self, source: str, fingerprint: str, records: Any) -> None:
        self.store.threads.add(threading.current_thread().name)
        with self.store.lock:
            QdrantStore.replace_source(self.store, source, fingerprint, records)

    def close(self) -> None:
        self.store.closed_writers += 1


def test_parallel_qdrant_writers_store_the_single_writer_index(
    embedder: Any, single: tuple[TempScaleEncoder, MultiSizeChunker], queries: np.ndarray, tmp_path: Path
) -> None:
    from tempscale_rag.distributed import RayIndexer

    docs = make_docs(tmp_path / "docs", seed=6)
    encoder, chunker = single
    reference = QdrantStore(dimension=encoder.dimension, path=":memory:")
    expected = FolderIndexer(encoder, reference, chunker=chunker, show_progress=False).run([docs])
    store = _ServerStandIn(dimension=encoder.dimension, path=":memory:")
    summary = RayIndexer(embedder, store, chunking=CHUNKING, show_progress=False).run([docs])
    assert embedder.settings.writers == 4 and len(store.threads) >= 2, store.threads  # files written concurrently
    assert store.opened == store.closed_writers >= 2  # one connection per writer thread, all closed after the run
    assert comparable(summary) == comparable(expected)
    assert store.sources() == reference.sources() and len(store.sources()) == INDEXED
    one, two = reference.scan_chunks(None), store.scan_chunks(None)
    assert sorted(one) == sorted(two)
    for source, chunks in one.items():
        assert [c[0] for c in chunks] == [c[0] for c in two[source]] and [c[2] for c in chunks] == [
            c[2] for c in two[source]
        ]
        np.testing.assert_allclose(np.stack([c[1] for c in chunks]), np.stack([c[1] for c in two[source]]), atol=1e-5)
    for query in queries:
        assert [d.source for d in search_documents(store, query, 5, scoring="softmax")] == [
            d.source for d in search_documents(reference, query, 5, scoring="softmax")
        ]


def test_local_stores_have_one_writer(tmp_path: Path) -> None:
    local = QdrantStore(dimension=8, path=str(tmp_path / "qdrant"))
    try:
        assert not local.concurrent_writers
        with pytest.raises(ValueError, match=r"local mode allows one writer.*--qdrant-url"):
            local.writer()
    finally:
        local.close()
    faiss_store = FaissStore(tmp_path / "faiss", dimension=8, create=True)
    try:
        assert not faiss_store.concurrent_writers
        with pytest.raises(ValueError, match="single writer"):
            faiss_store.writer()
    finally:
        faiss_store.close()


@pytest.mark.parametrize("chunking", [CHUNKING, None], ids=["multi-size", "legacy"])
def test_reading_task_chunks_as_the_single_process_indexer(
    encoder: TempScaleEncoder, tmp_path: Path, chunking: ChunkingConfig | None
) -> None:
    from tempscale_rag.distributed.indexing import ChunkingSpec, read_files
    from tempscale_rag.ingest.chunking import WindowChunker
    from tempscale_rag.ingest.indexer import read_file
    from tempscale_rag.ingest.readers import find_files, source_name

    # The task's function, run here: a legacy index (no chunking recorded) is chunked by the window chunker.
    docs = make_docs(tmp_path / "docs", seed=5)
    files = find_files([docs]).files
    chunker = MultiSizeChunker(encoder, chunking) if chunking else WindowChunker(encoder)
    doc0 = docs / "doc0.txt"
    stored = {source_name(doc0): read_file(doc0, chunker).fingerprint}
    spec = ChunkingSpec(CONFIG.model_dump_json(), chunking.model_dump_json() if chunking else None)
    assert read_files(files, stored, spec) == [read_file(f, chunker, stored=stored.get(source_name(f))) for f in files]
    assert read_files([doc0], stored, spec)[0].unchanged and not read_files([doc0], {}, spec)[0].unchanged


def test_too_many_actors_is_a_clear_error(ray_module: Any) -> None:
    from tempscale_rag.distributed import RayEmbedder, RaySettings

    with pytest.raises(ValueError, match="lower --ray-actors"):
        RayEmbedder(CONFIG, RaySettings(actors=2))


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from tempscale_rag.distributed.cluster import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"tempscale-rag\[ray\]"):
        require_ray()


@pytest.mark.parametrize(
    ("cpus", "gpus", "settings", "expected"),
    [
        # A 2-GPU, 32-core host: one actor per GPU holding one CPU, fed ids by tokenising tasks on the other CPUs.
        (32, 2.0, {}, (2, 1.0, 1, 16384, 0, True)),
        # Actors that tokenise themselves: the CPUs less 1 in 8 (for reading) shared, tokenising with them.
        (32, 2.0, {"tokenize_in_tasks": False}, (2, 1.0, 14, 16384, 14, False)),
        (32, 2.0, {"actors": 1, "tokenize_in_tasks": False}, (1, 1.0, 28, 16384, 28, False)),
        (16, 0.0, {}, (1, 0.0, 1, 256, None, False)),  # CPU cluster: one CPU actor by default, tokenising itself
        (16, 0.0, {"actors": 4, "batch_rows": 64}, (4, 0.0, 1, 64, None, False)),
        (16, 0.0, {"tokenize_in_tasks": True}, (1, 0.0, 1, 256, None, True)),
    ],
)
def test_pool_sizing(
    monkeypatch: pytest.MonkeyPatch, cpus: int, gpus: float, settings: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    from tempscale_rag.distributed import RaySettings, embedding

    monkeypatch.setattr(embedding, "cluster_resources", lambda: (cpus, gpus))
    plan = embedding.plan_pool(RaySettings(**settings))
    got = (plan.actors, plan.gpus_per_actor, plan.cpus_per_actor, plan.batch_rows, plan.tokenize_workers)
    assert (*got, plan.tokenize_in_tasks) == expected
    assert plan.actor_config(CONFIG).tokenize_workers == expected[4]
    with pytest.raises(ValueError, match="lower --ray-actors"):
        embedding.plan_pool(RaySettings(actors=int(gpus) + 1 if gpus else cpus))


@pytest.mark.parametrize(
    ("n", "actors", "batch_rows", "expected"),
    [
        (200_000, 1, 16_384, 100_000),  # capped at 8 x 16,384: two equal calls, not 13 of 16,384
        (200_000, 2, 16_384, 100_000),  # one call per actor
        (40_000, 2, 16_384, 20_000),  # not 16,384 + 16,384 + 7,232, which leaves one GPU idle a third of the time
        (10, 3, 256, 4),
        (0, 2, 256, 1),
    ],
)
def test_encode_splits_a_list_equally_between_actors(n: int, actors: int, batch_rows: int, expected: int) -> None:
    from tempscale_rag.distributed import embedding

    embedder = object.__new__(embedding.RayEmbedder)
    embedder._actors = [object()] * actors
    embedder.plan = embedding.PoolPlan(actors, 1.0, 1, batch_rows, None)
    assert embedder.call_rows(n) == expected
