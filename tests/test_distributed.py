"""Distributed indexing and embedding on a real local Ray cluster (2 CPUs) with the bundled model.

One cluster serves the whole module and one actor pool most of its tests: Ray start-up and model loading take seconds
each here.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tempscale_rag import TempScaleEncoder
from tempscale_rag.config import TempScaleConfig
from tempscale_rag.ingest.chunking import WindowChunker
from tempscale_rag.ingest.indexer import FolderIndexer, IndexSummary
from tempscale_rag.stores import IndexManifest, open_store

CONFIG = TempScaleConfig(device="cpu")
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
def embedder(ray_module: Any) -> Iterator[Any]:
    from tempscale_rag.distributed import RayEmbedder, RaySettings

    # Batches of 4 chunks: several batches per run, so an actor can be killed while work is queued on it.
    with RayEmbedder(CONFIG, RaySettings(batch_rows=4, files_per_task=2)) as pool:
        yield pool


def make_docs(folder: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, words in enumerate([20, 150, 700, 1200, 60, 1900, 400]):
        (folder / f"doc{i}.txt").write_text(_text(rng, words), encoding="utf-8")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "notes.md").write_text("# Notes\n\n" + _text(rng, 300), encoding="utf-8")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02 not text")
    (folder / "image.xyz").write_text("unsupported", encoding="utf-8")
    return folder


def index_single(encoder: TempScaleEncoder, folder: Path, docs: Path, *, prune: bool = False) -> IndexSummary:
    manifest = IndexManifest.new(model=encoder.model_name, dimension=encoder.dimension, config=CONFIG)
    with open_store(folder, manifest) as store:
        return FolderIndexer(encoder, store, chunker=WindowChunker(encoder), show_progress=False).run(
            [docs], prune=prune
        )


def index_ray(embedder: Any, folder: Path, docs: Path, *, prune: bool = False, **options: Any) -> IndexSummary:
    from tempscale_rag.distributed import RayIndexer

    manifest = IndexManifest.new(model=embedder.model_name, dimension=embedder.dimension, config=CONFIG)
    with open_store(folder, manifest) as store:
        return RayIndexer(embedder, store, show_progress=False, **options).run([docs], prune=prune)


def stored_chunks(folder: Path) -> dict[str, tuple[Any, ...]]:
    db = sqlite3.connect(folder / "chunks.sqlite")
    try:
        rows = db.execute("SELECT chunk_id, source, position, token_length, bucket, text, vector FROM chunks")
        return {r[0]: (*r[1:6], np.frombuffer(r[6], dtype="<f4")) for r in rows}
    finally:
        db.close()


def assert_same_index(expected: Path, actual: Path) -> None:
    a, b = stored_chunks(expected), stored_chunks(actual)
    assert sorted(a) == sorted(b), "chunk sets differ"
    for chunk_id, row in a.items():
        assert row[:5] == b[chunk_id][:5]
        np.testing.assert_allclose(row[5], b[chunk_id][5], atol=2e-6)
    with open_store(expected, read_only=True) as one, open_store(actual, read_only=True) as two:
        assert one.sources() == two.sources()
        m1, m2 = one.manifest, two.manifest
        assert m1 is not None and m2 is not None
        skip = {"created_at", "updated_at"}
        assert m1.model_dump(exclude=skip) == m2.model_dump(exclude=skip)
        queries = np.stack([row[5] for row in list(a.values())[:5]])
        hits1, hits2 = one.search_many(queries, k=5), two.search_many(queries, k=5)
        assert [[h.id for h in q] for q in hits1] == [[h.id for h in q] for q in hits2]


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


def test_cli_index_ray_builds_a_searchable_index(
    ray_module: Any, encoder: TempScaleEncoder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tempscale_rag.cli import main

    docs = make_docs(tmp_path / "docs", seed=4)
    out = tmp_path / "index"
    assert (
        main(["-q", "index", str(docs), "--out", str(out), "--ray", "--ray-actors", "1", "--device", "cpu", "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["files_indexed"] == 8 and len(summary["files_failed"]) == 2
    assert main(["search", "kinetic battery", "--out", str(out), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    assert ray_module.is_initialized()  # the CLI reused the running cluster and left it up


def test_ray_index_equals_single_process_index(embedder: Any, encoder: TempScaleEncoder, tmp_path: Path) -> None:
    docs = make_docs(tmp_path / "docs")
    single = index_single(encoder, tmp_path / "single", docs)
    distributed = index_ray(embedder, tmp_path / "ray", docs)
    assert single.chunks_added > 8  # several embedding batches
    assert comparable(distributed) == comparable(single)
    assert_same_index(tmp_path / "single", tmp_path / "ray")

    # A second run adds nothing; then a change, an addition and a removal match the single-process indexer's run.
    again = index_ray(embedder, tmp_path / "ray", docs)
    assert (again.files_indexed, again.chunks_added, again.files_skipped) == (0, 0, 8)
    assert_same_index(tmp_path / "single", tmp_path / "ray")
    (docs / "doc1.txt").write_text(_text(random.Random(7), 500), encoding="utf-8")
    (docs / "doc7.txt").write_text(_text(random.Random(8), 90), encoding="utf-8")
    (docs / "doc0.txt").unlink()
    single = index_single(encoder, tmp_path / "single", docs, prune=True)
    distributed = index_ray(embedder, tmp_path / "ray", docs, prune=True)
    assert (distributed.files_indexed, distributed.files_pruned, distributed.files_skipped) == (2, 1, 6)
    assert comparable(distributed) == comparable(single)
    assert_same_index(tmp_path / "single", tmp_path / "ray")


def test_killed_embedding_actor_is_replaced_and_the_index_is_complete(
    embedder: Any, encoder: TempScaleEncoder, tmp_path: Path, ray_module: Any
) -> None:
    docs = make_docs(tmp_path / "docs", seed=1)
    index_single(encoder, tmp_path / "single", docs)
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
    assert_same_index(tmp_path / "single", tmp_path / "ray")
    assert summary.chunks == summary.chunks_added == len(stored_chunks(tmp_path / "ray"))


def test_interrupted_job_rerun_converges(embedder: Any, encoder: TempScaleEncoder, tmp_path: Path) -> None:
    docs = make_docs(tmp_path / "docs", seed=2)
    index_single(encoder, tmp_path / "single", docs)

    calls: list[int] = []

    def interrupt(done: int, read: int) -> None:
        calls.append(done)
        if len(calls) == 3:  # Ctrl-C in the middle of the run: files committed so far stay, the rest is redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index_ray(embedder, tmp_path / "ray", docs, progress=interrupt, batch_chunks=4)
    with open_store(tmp_path / "ray", read_only=True) as store:
        partial = store.count()
    assert 0 < partial < len(stored_chunks(tmp_path / "single"))  # some files were committed, not all
    rerun = index_ray(embedder, tmp_path / "ray", docs)
    assert rerun.files_skipped > 0 and rerun.files_indexed > 0
    assert_same_index(tmp_path / "single", tmp_path / "ray")


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
        # A 2-GPU, 32-core host: one actor per GPU, the CPUs less 1 in 8 (for reading) shared, tokenising with them.
        (32, 2.0, {}, (2, 1.0, 14, 16384, 14)),
        (32, 2.0, {"actors": 1}, (1, 1.0, 28, 16384, 28)),
        (16, 0.0, {}, (1, 0.0, 1, 256, None)),  # CPU cluster: one CPU actor by default
        (16, 0.0, {"actors": 4, "batch_rows": 64}, (4, 0.0, 1, 64, None)),
    ],
)
def test_pool_sizing(
    monkeypatch: pytest.MonkeyPatch, cpus: int, gpus: float, settings: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    from tempscale_rag.distributed import RaySettings, embedding

    monkeypatch.setattr(embedding, "cluster_resources", lambda: (cpus, gpus))
    plan = embedding.plan_pool(RaySettings(**settings))
    assert (plan.actors, plan.gpus_per_actor, plan.cpus_per_actor, plan.batch_rows, plan.tokenize_workers) == expected
    assert plan.actor_config(CONFIG).tokenize_workers == expected[4]
    with pytest.raises(ValueError, match="lower --ray-actors"):
        embedding.plan_pool(RaySettings(actors=int(gpus) + 1 if gpus else cpus))
