"""Congruence (qdrant-client style): the same corpus and the same calls give the same answers on every backend.

The 300-chunk corpus runs against Qdrant's in-memory local mode: the on-disk local mode commits SQLite once per point
(about 25 ms each here), so it gets a smaller corpus, written, closed and reopened. `test_one_suite_on_every_backend`
runs one sequence of calls (index, chunk search, document search, delete, re-index, prune, reopen) on FAISS flat,
FAISS HNSW, Qdrant local mode on disk and Qdrant Edge, each opened through `open_store`, against answers computed in
the test. Qdrant Edge runs the 300-chunk corpus too, on disk, with its HNSW settings and with exact search: below
Qdrant's indexing threshold (10 MB of vectors per segment) it scores every chunk, so its answers equal FAISS flat's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.config import TempScaleConfig
from tempscale_rag.ranking import search_documents_many
from tempscale_rag.ranking.documents import DOC_SCORES, DocumentScoring
from tempscale_rag.stores import (
    ChunkRecord,
    FaissSettings,
    IndexManifest,
    QdrantSettings,
    SearchHit,
    VectorStore,
    open_store,
)
from tempscale_rag.stores.faiss import FaissStore
from tempscale_rag.stores.qdrant import MEMORY, QdrantStore
from tempscale_rag.stores.qdrant.edge import EdgeStore

from .conftest import reference_group_score

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
        "qdrant-edge-cosine": EdgeStore(dimension=DIM, path=tmp_path / "edge-cosine"),
        "qdrant-edge-dot-exact": EdgeStore(dimension=DIM, path=tmp_path / "edge-dot", distance="dot", exact=True),
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


# --- one suite, three backends: the same calls give the same answers -----------------------------------------------

BACKENDS = ["faiss-flat", "faiss-hnsw", "qdrant-local", "qdrant-edge"]
SUITE_DIM, SUITE_K = 32, 3


def unit_rows(seed: int, n: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, SUITE_DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def open_backend(kind: str, folder: Path, *, read_only: bool = False) -> VectorStore:
    """Open (or create) the index in `folder` through `open_store`, as the CLI and `Index` do."""
    if read_only:
        return open_store(folder, read_only=True)
    backend = (
        QdrantSettings(engine=kind.removeprefix("qdrant-"))  # type: ignore[arg-type]
        if kind.startswith("qdrant-")
        else FaissSettings(index=kind.removeprefix("faiss-"))
    )
    manifest = IndexManifest.new(model="congruence", dimension=SUITE_DIM, config=TempScaleConfig(), backend=backend)
    return open_store(folder, manifest)


def suite_document(source: str, seed: int, n: int) -> list[ChunkRecord]:
    """A document whose chunks come in two sizes and lean towards its own topic."""
    topic, *rows = unit_rows(seed, n + 1)
    vectors = np.stack(rows) + 0.8 * topic
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ChunkRecord.create(
            text=f"{source} chunk {j} (seed {seed})",
            vector=vector,
            source=source,
            position=j,
            token_length=16 if j % 3 else 64,
            bucket="0-128",
            metadata={"chunk_tokens": 16 if j % 3 else 64},
        )
        for j, vector in enumerate(vectors)
    ]


def expected_chunks(content: dict[str, list[ChunkRecord]], queries: np.ndarray, k: int) -> list[list[SearchHit]]:
    """Brute-force top-k chunk search over `content`."""
    records = [r for rs in content.values() for r in rs]
    scores = queries @ np.stack([r.vector for r in records]).T
    out = []
    for row in scores:
        best = np.argsort(-row, kind="stable")[:k]
        out.append(
            [
                SearchHit(
                    id=records[i].id,
                    score=float(row[i]),
                    text=records[i].text,
                    source=records[i].source,
                    position=records[i].position,
                    token_length=records[i].token_length,
                    bucket=records[i].bucket,
                    metadata=records[i].metadata,
                )
                for i in best
            ]
        )
    return out


def expected_documents(
    content: dict[str, list[ChunkRecord]], query: np.ndarray, scoring: DocumentScoring
) -> dict[str, float]:
    """Every document's score by the definition: the mean over its chunk sizes of each size's group score."""
    out = {}
    for source, records in content.items():
        sizes = sorted({r.metadata["chunk_tokens"] for r in records})
        out[source] = float(
            np.mean(
                [
                    reference_group_score(
                        scoring, query, [r.vector for r in records if r.metadata["chunk_tokens"] == size]
                    )
                    for size in sizes
                ]
            )
        )
    return out


def check_store(store: VectorStore, content: dict[str, list[ChunkRecord]], queries: np.ndarray, what: str) -> None:
    """Counts, sources, chunk search and document search of `store` against `content`, computed here."""
    assert store.count() == sum(len(r) for r in content.values()), what
    assert set(store.sources()) == set(content), what
    assert_congruent(expected_chunks(content, queries, SUITE_K), store.search_many(queries, k=SUITE_K), what)
    n_documents = len(content)
    for method in DOC_SCORES:
        scoring = DocumentScoring(method=method, top_m=2, softmax_temperature=0.1)
        # Asking for every document makes every backend's candidate set complete: the ranking must be exact.
        for query, found in zip(
            queries, search_documents_many(store, queries, n_documents, scoring=scoring), strict=True
        ):
            want = expected_documents(content, query, scoring)
            assert sorted(h.source for h in found) == sorted(want), (what, method)
            np.testing.assert_allclose([h.score for h in found], [want[h.source] for h in found], atol=TIE)
            assert all(a.score >= b.score - TIE for a, b in itertools.pairwise(found)), (what, method)
            evidence = found[0].chunks
            assert evidence and all(c.source == found[0].source for c in evidence), (what, method)
    best = search_documents_many(store, queries, SUITE_K, scoring="max")
    for query, found in zip(queries, best, strict=True):
        want = sorted(expected_documents(content, query, DocumentScoring()).items(), key=lambda kv: -kv[1])
        np.testing.assert_allclose([h.score for h in found], [s for _, s in want[:SUITE_K]], atol=TIE)


@pytest.mark.parametrize("kind", BACKENDS)
def test_one_suite_on_every_backend(tmp_path: Path, kind: str) -> None:
    """Index, chunk search, document search, delete, re-index, prune and reopen: the same calls, the same answers.

    qdrant-client's local mode on disk commits SQLite once per point (~25 ms here), hence the small corpus.
    """
    content = {f"docs/d{i}.md": suite_document(f"docs/d{i}.md", seed=i, n=6 + i % 4) for i in range(8)}
    # Two queries near stored chunks (one of them replaced on re-index), two anywhere.
    queries = np.stack([content["docs/d2.md"][3].vector, content["docs/d5.md"][1].vector, *unit_rows(12, 2)])
    folder = tmp_path / "index"
    with open_backend(kind, folder) as store:
        for source, records in content.items():
            store.replace_source(source, "v1", records)
        check_store(store, content, queries, f"{kind}: indexed")

        assert store.delete_source("docs/d3.md") == len(content.pop("docs/d3.md"))
        check_store(store, content, queries, f"{kind}: deleted")

        # Re-index a changed file: two chunks kept as they were, the others new.
        old = content["docs/d2.md"]
        content["docs/d2.md"] = old[:2] + suite_document("docs/d2.md", seed=99, n=5)[2:]
        store.replace_source("docs/d2.md", "v2", content["docs/d2.md"])
        store.replace_source("docs/d4.md", "v1", content["docs/d4.md"])  # unchanged: a no-op
        check_store(store, content, queries, f"{kind}: re-indexed")
        assert store.sources()["docs/d2.md"] == "v2"

        # Prune as the indexer does: every stored source outside the kept set is deleted.
        keep = {"docs/d0.md", "docs/d2.md", "docs/d5.md", "docs/d7.md"}
        for source in sorted(set(store.sources()) - keep):
            store.delete_source(source)
            del content[source]
        check_store(store, content, queries, f"{kind}: pruned")
    with open_backend(kind, folder, read_only=True) as reopened:
        check_store(reopened, content, queries, f"{kind}: reopened")
