"""Congruence (qdrant-client style): the same corpus and the same calls give the same answers on every backend.

The 300-chunk corpus runs against Qdrant's in-memory local mode: the on-disk local mode commits SQLite once per point
(about 25 ms each here), so it gets a smaller corpus, written, closed and reopened.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.stores import ChunkRecord, FaissSettings, SearchHit, VectorStore
from tempscale_rag.stores.faiss import FaissStore
from tempscale_rag.stores.qdrant import MEMORY, QdrantStore

N, DIM, N_QUERIES, K = 300, 64, 20, 10
TIE = 1e-5


def normalised(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[ChunkRecord]]:
    vectors = normalised(np.random.default_rng(42), N)
    by_source: dict[str, list[ChunkRecord]] = {}
    for i, vector in enumerate(vectors):
        source = f"docs/file{i % 15:02d}.md"
        position = len(by_source.setdefault(source, []))
        by_source[source].append(
            ChunkRecord.create(
                text=f"chunk {i}",
                vector=vector,
                source=source,
                position=position,
                token_length=i % 300,
                bucket=f"b{i % 3}",
                metadata={"i": i},
            )
        )
    return by_source


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return normalised(np.random.default_rng(7), N_QUERIES)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[dict[str, VectorStore]]:
    opened: dict[str, VectorStore] = {
        "faiss-flat": FaissStore(tmp_path / "faiss", dimension=DIM, create=True),
        "qdrant-memory-cosine": QdrantStore(dimension=DIM, path=MEMORY),
        "qdrant-memory-dot": QdrantStore(dimension=DIM, path=MEMORY, distance="dot"),
    }
    yield opened
    for store in opened.values():
        store.close()


def assert_congruent(reference: list[list[SearchHit]], other: list[list[SearchHit]], name: str) -> None:
    """Same ids in the same order, except where two neighbours score within `TIE` of each other."""
    assert len(reference) == len(other), name
    for q, (want, got) in enumerate(zip(reference, other, strict=True)):
        assert len(want) == len(got), f"{name}, query {q}"
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=TIE, err_msg=name)
        for rank, (a, b) in enumerate(zip(want, got, strict=True)):
            if a.id == b.id:
                assert (a.text, a.source, a.position, a.token_length, a.bucket, a.metadata) == (
                    b.text,
                    b.source,
                    b.position,
                    b.token_length,
                    b.bucket,
                    b.metadata,
                ), f"{name}, query {q}, rank {rank}"
                continue
            tied = [h.id for h in want if abs(h.score - a.score) <= TIE]
            assert b.id in tied and len(tied) > 1, f"{name}, query {q}, rank {rank}: {b.id} instead of {a.id}"


def test_same_top_k_on_every_backend(
    stores: dict[str, VectorStore], corpus: dict[str, list[ChunkRecord]], queries: np.ndarray
) -> None:
    for store in stores.values():
        for source, records in corpus.items():
            store.replace_source(source, f"sha-{source}", records)
    reference = stores["faiss-flat"].search_many(queries, k=K)
    in_order = sorted((r for rs in corpus.values() for r in rs), key=lambda r: r.metadata["i"])
    brute = np.argsort(-(queries @ np.stack([r.vector for r in in_order]).T), axis=1)[:, :K]
    assert [[h.id for h in hits] for hits in reference] == [[in_order[i].id for i in row] for row in brute]
    for name, store in stores.items():
        assert store.count() == N, name
        assert store.sources() == {source: f"sha-{source}" for source in corpus}, name
        assert_congruent(reference, store.search_many(queries, k=K), name)
        assert_congruent(reference[:1], [store.search(queries[0], k=K)], name)


def test_same_answers_after_the_same_edits(
    stores: dict[str, VectorStore], corpus: dict[str, list[ChunkRecord]], queries: np.ndarray
) -> None:
    rng = np.random.default_rng(3)
    sources = sorted(corpus)
    edited = [
        ChunkRecord.create(
            text=f"edited {j}", vector=v, source=sources[0], position=j, token_length=5, bucket="b0", metadata={}
        )
        for j, v in enumerate(normalised(rng, 4))
    ]
    loose = [
        ChunkRecord.create(text=f"loose {j}", vector=v, source="scratch", position=j, token_length=1, bucket="b1")
        for j, v in enumerate(normalised(rng, 6))
    ]
    for store in stores.values():
        for source in sources:
            store.replace_source(source, "v1", corpus[source])
        store.replace_source(sources[0], "v2", edited)
        for source in sources[1:5]:
            store.delete_source(source)
        store.upsert(loose)
        store.replace_source(sources[6], "v1", corpus[sources[6]])
        store.commit()

    expected_count = N - len(corpus[sources[0]]) + len(edited) - sum(len(corpus[s]) for s in sources[1:5]) + 6
    reference = stores["faiss-flat"].search_many(queries, k=K)
    for name, store in stores.items():
        assert store.count() == expected_count, name
        assert store.sources() == {sources[0]: "v2", **{s: "v1" for s in sources[5:]}}, name
        assert_congruent(reference, store.search_many(queries, k=K), name)


def test_hnsw_agrees_with_exact_search(
    tmp_path: Path, corpus: dict[str, list[ChunkRecord]], queries: np.ndarray
) -> None:
    with (
        FaissStore(tmp_path / "flat", dimension=DIM, create=True) as flat,
        FaissStore(tmp_path / "hnsw", dimension=DIM, settings=FaissSettings(index="hnsw"), create=True) as hnsw,
    ):
        for store in (flat, hnsw):
            for source, records in corpus.items():
                store.replace_source(source, "fp", records)
        exact = [[h.id for h in hits] for hits in flat.search_many(queries, k=K)]
        approx = [[h.id for h in hits] for hits in hnsw.search_many(queries, k=K)]
    recall = np.mean([len(set(e) & set(a)) / K for e, a in zip(exact, approx, strict=True)])
    assert recall >= 0.95


def test_local_path_mode_agrees_after_reopen(
    tmp_path: Path, corpus: dict[str, list[ChunkRecord]], queries: np.ndarray
) -> None:
    subset = {source: corpus[source] for source in sorted(corpus)[:3]}
    with (
        FaissStore(tmp_path / "faiss", dimension=DIM, create=True) as faiss_store,
        QdrantStore(dimension=DIM, path=tmp_path / "qdrant") as qdrant_store,
    ):
        for store in (faiss_store, qdrant_store):
            for source, records in subset.items():
                store.replace_source(source, "fp", records)
    with (
        FaissStore(tmp_path / "faiss", read_only=True) as faiss_store,
        QdrantStore(dimension=DIM, path=tmp_path / "qdrant", read_only=True) as qdrant_store,
    ):
        assert qdrant_store.count() == faiss_store.count() == sum(len(r) for r in subset.values())
        assert qdrant_store.sources() == faiss_store.sources()
        assert_congruent(faiss_store.search_many(queries, k=K), qdrant_store.search_many(queries, k=K), "local path")
