"""Document ranking at the store level: every backend against a brute-force reference written here.

Congruence style (qdrant-client): the same corpus and the same calls on FAISS flat, FAISS HNSW and Qdrant local mode
must give the scores of the reference formula, computed below with plain loops over each document's chunks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.ranking import search_documents, search_documents_many
from tempscale_rag.ranking.documents import DOC_SCORES, DocumentScoring
from tempscale_rag.stores import ChunkRecord, DocumentHit, FaissSettings, VectorStore
from tempscale_rag.stores.faiss import DB_NAME, FaissStore
from tempscale_rag.stores.qdrant import MEMORY, QdrantStore

from .conftest import reference_group_score

DIM = 16
TOL = 1e-5
SCORING = {method: DocumentScoring(method=method, top_m=2, softmax_temperature=0.1) for method in DOC_SCORES}


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_document(source: str, rng: np.random.Generator, sizes: list[int | None]) -> list[ChunkRecord]:
    """A document chunked at each size (None: no `chunk_tokens`), 1-9 chunks per size, around a random topic."""
    topic = unit(rng, 1)[0]
    records = []
    for size in sizes:
        n = int(rng.integers(1, 10))
        vectors = unit(rng, n) + rng.uniform(0.0, 2.0) * topic
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for i in range(n):
            records.append(
                ChunkRecord.create(
                    text=f"{source} size {size} chunk {i}",
                    vector=vectors[i],
                    source=source,
                    position=len(records),
                    token_length=5 + i,
                    bucket="b",
                    metadata={} if size is None else {"chunk_tokens": size},
                )
            )
    return records


def make_corpus(seed: int = 0, n_docs: int = 14) -> dict[str, list[ChunkRecord]]:
    rng = np.random.default_rng(seed)
    options: list[list[int | None]] = [[64, 128, 256], [128], [64, 256], [None], [64, 128, 256, 512]]
    return {
        f"docs/d{i:02d}.txt": make_document(f"docs/d{i:02d}.txt", rng, options[i % len(options)]) for i in range(n_docs)
    }


def reference(corpus: dict[str, list[ChunkRecord]], query: np.ndarray, scoring: DocumentScoring) -> dict[str, float]:
    """The definition: per (document, size) group aggregate the cosines, then average the groups."""
    out = {}
    for source, records in corpus.items():
        per_size = []
        for size in sorted({r.metadata.get("chunk_tokens", 0) for r in records}):
            members = [r for r in records if r.metadata.get("chunk_tokens", 0) == size]
            value = reference_group_score(scoring, query, np.stack([r.vector for r in members]))
            per_size.append(value)
        out[source] = sum(per_size) / len(per_size)
    return out


def check_against_reference(
    found: list[DocumentHit],
    corpus: dict[str, list[ChunkRecord]],
    query: np.ndarray,
    scoring: DocumentScoring,
    k: int,
    *,
    evidence: int,
    exact_ranking: bool = True,
) -> None:
    want = reference(corpus, query, scoring)
    ranked = sorted(want, key=lambda s: -want[s])
    assert len(found) == min(k, len(corpus))
    for hit in found:
        assert hit.score == pytest.approx(want[hit.source], abs=TOL), hit.source
        # Evidence: the document's best chunks, best first, each scored by its cosine.
        cosines = sorted(((float(query @ r.vector), r.id) for r in corpus[hit.source]), reverse=True)
        assert [c.id for c in hit.chunks] == [i for _, i in cosines[:evidence]]
        for chunk in hit.chunks:
            assert chunk.source == hit.source
            assert chunk.score == pytest.approx(dict((i, c) for c, i in cosines)[chunk.id], abs=TOL)
    scores = [hit.score for hit in found]
    assert scores == sorted(scores, reverse=True)
    if exact_ranking:
        # Same documents as the reference's top k, up to ties at the boundary.
        boundary = want[ranked[len(found) - 1]]
        assert all(want[hit.source] >= boundary - TOL for hit in found)


KINDS = ["faiss-flat", "faiss-hnsw", "qdrant-memory", "qdrant-grouping"]
Opener = Callable[[], VectorStore]


@pytest.fixture(params=KINDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    kind: str = request.param
    opened: list[VectorStore] = []

    def open_() -> VectorStore:
        store: VectorStore
        if kind.startswith("faiss"):
            index = "hnsw" if kind == "faiss-hnsw" else "flat"
            store = FaissStore(tmp_path / "faiss", dimension=DIM, settings=FaissSettings(index=index), create=True)
        else:
            if opened:
                return opened[0]
            qdrant = QdrantStore(dimension=DIM, path=MEMORY)
            # Exercise the server's candidate path (Qdrant's grouping API) on local mode too.
            qdrant.use_grouping_api = kind == "qdrant-grouping"
            store = qdrant
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def exact(store: VectorStore) -> bool:
    """FAISS scores every candidate's chunks from a full or 10x over-fetch; Qdrant rescores only 2k candidates."""
    return isinstance(store, FaissStore)


def assert_same(found: list[list[DocumentHit]], expected: list[list[DocumentHit]]) -> None:
    assert [[h.source for h in hits] for hits in found] == [[h.source for h in hits] for hits in expected]
    for got, want in zip(found, expected, strict=True):
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=TOL)
        assert [[c.id for c in h.chunks] for h in got] == [[c.id for c in h.chunks] for h in want]


def reference_group_vectors(corpus: dict[str, list[ChunkRecord]]) -> dict[tuple[str, int], list[float]]:
    out = {}
    for source, records in corpus.items():
        for size in {r.metadata.get("chunk_tokens", 0) for r in records}:
            total = np.sum(
                [r.vector.astype(np.float64) for r in records if r.metadata.get("chunk_tokens", 0) == size], 0
            )
            out[(source, size)] = (total / np.linalg.norm(total)).tolist()
    return out


def stored_group_vectors(db_path: Path) -> dict[tuple[str, int], list[float]]:
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    rows = db.execute("SELECT source, chunk_tokens, vector FROM groups").fetchall()
    db.close()
    return {(source, size): np.frombuffer(blob, dtype="<f4").tolist() for source, size, blob in rows}


def fill(store: VectorStore, corpus: dict[str, list[ChunkRecord]]) -> None:
    for source, records in corpus.items():
        store.replace_source(source, "fp-" + source, records)


@pytest.mark.parametrize("method", DOC_SCORES)
def test_every_aggregation_matches_the_reference(opener: Opener, method: str) -> None:
    corpus = make_corpus()
    store = opener()
    fill(store, corpus)
    queries = unit(np.random.default_rng(5), 6)
    scoring = SCORING[method]
    for k in (1, 3, 20):
        results = search_documents_many(store, queries, k, scoring=scoring, evidence=2)
        for query, found in zip(queries, results, strict=True):
            check_against_reference(found, corpus, query, scoring, k, evidence=2, exact_ranking=exact(store))
    one = search_documents(store, queries[0], 3, scoring=scoring, evidence=2)
    assert [h.source for h in one] == [h.source for h in results[0][:3]]
    np.testing.assert_allclose([h.score for h in one], [h.score for h in results[0][:3]], atol=TOL)


def test_the_default_aggregation_is_max_and_names_work(opener: Opener) -> None:
    corpus = make_corpus(seed=3)
    store = opener()
    fill(store, corpus)
    query = unit(np.random.default_rng(9), 1)[0]
    by_default = search_documents(store, query, 4)
    by_name = search_documents(store, query, 4, scoring="max", evidence=3)
    assert [(h.source, h.score) for h in by_default] == [(h.source, h.score) for h in by_name]
    check_against_reference(by_default, corpus, query, DocumentScoring(), 4, evidence=3, exact_ranking=exact(store))
    none = search_documents(store, query, 2, scoring="topm", evidence=0)
    assert all(hit.chunks == [] for hit in none)


def test_replace_and_delete_keep_group_vectors_right(opener: Opener) -> None:
    corpus = make_corpus(seed=1, n_docs=8)
    store = opener()
    fill(store, corpus)
    rng = np.random.default_rng(11)
    search_documents(store, unit(rng, 1)[0], 3, scoring="mean")  # caches the grouping: the writes must refresh it
    first, second = sorted(corpus)[:2]
    corpus[first] = make_document(first, rng, [32, 256, 1024])  # new sizes, new vectors
    store.replace_source(first, "fp2", corpus[first])
    assert store.delete_source(second) == len(corpus.pop(second))
    # upsert adds chunks to an existing document: its groups must follow.
    extra = make_document(sorted(corpus)[3], rng, [64])
    extra = [
        ChunkRecord.create(
            text=r.text + " extra",
            vector=r.vector,
            source=r.source,
            position=100 + r.position,
            token_length=1,
            bucket="b",
            metadata=r.metadata,
        )
        for r in extra
    ]
    store.upsert(extra)
    corpus[extra[0].source] = corpus[extra[0].source] + extra
    if isinstance(store, FaissStore):
        store.commit()
        stored, want = stored_group_vectors(store.db_path), reference_group_vectors(corpus)
        assert sorted(stored) == sorted(want)
        for key, vector in want.items():
            np.testing.assert_allclose(stored[key], vector, atol=1e-6, err_msg=str(key))
    queries = unit(rng, 4)
    for method in ("mean", "hybrid", "max"):
        for query, found in zip(queries, search_documents_many(store, queries, 10, scoring=method), strict=True):
            check_against_reference(found, corpus, query, SCORING[method], 10, evidence=3, exact_ranking=exact(store))
            assert second not in {hit.source for hit in found}


@pytest.mark.parametrize("kind", ["faiss-flat", "faiss-hnsw", "qdrant-path"])
def test_reopening_gives_the_same_results(tmp_path: Path, kind: str) -> None:
    corpus = make_corpus(seed=2, n_docs=6)

    def open_() -> VectorStore:
        if kind.startswith("faiss"):
            index = "hnsw" if kind == "faiss-hnsw" else "flat"
            return FaissStore(tmp_path / "s", dimension=DIM, settings=FaissSettings(index=index), create=True)
        return QdrantStore(dimension=DIM, path=tmp_path / "q")

    queries = unit(np.random.default_rng(4), 3)
    with open_() as store:
        fill(store, corpus)
        before = {m: search_documents_many(store, queries, 4, scoring=SCORING[m]) for m in DOC_SCORES}
    with open_() as store:
        for method in DOC_SCORES:
            after = search_documents_many(store, queries, 4, scoring=SCORING[method])
            assert_same(after, before[method])
            for query, found in zip(queries, after, strict=True):
                check_against_reference(
                    found, corpus, query, SCORING[method], 4, evidence=3, exact_ranking=exact(store)
                )


def test_faiss_store_without_groups_table_is_upgraded(tmp_path: Path) -> None:
    """A store written before the groups table existed: read-only opens derive the vectors, writable ones add them."""
    corpus = make_corpus(seed=6, n_docs=5)
    query = unit(np.random.default_rng(0), 1)[0]
    with FaissStore(tmp_path, dimension=DIM, create=True) as store:
        fill(store, corpus)
        want = search_documents(store, query, 5, scoring="hybrid")
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("DROP TABLE groups")
    db.commit()
    db.close()
    with FaissStore(tmp_path, read_only=True) as store:
        assert_same([search_documents(store, query, 5, scoring="hybrid")], [want])
    with FaissStore(tmp_path) as store:
        assert_same([search_documents(store, query, 5, scoring="hybrid")], [want])
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT COUNT(*) FROM groups").fetchone()[0] == sum(
        len({r.metadata.get("chunk_tokens", 0) for r in records}) for records in corpus.values()
    )
    db.close()


def test_qdrant_document_entry_missing_is_rescored_from_chunks(caplog: pytest.LogCaptureFixture) -> None:
    """An interrupted write can leave a source without its document point: its scores stay exact."""
    corpus = make_corpus(seed=8, n_docs=5)
    query = unit(np.random.default_rng(1), 1)[0]
    with QdrantStore(dimension=DIM, path=MEMORY) as store:
        fill(store, corpus)
        first = sorted(corpus)[0]
        store.forget_document_points([first])
        found = search_documents(store, query, 5, scoring="hybrid")
        check_against_reference(found, corpus, query, SCORING["hybrid"], 5, evidence=3)
        assert "rescored from a scan of their chunks" in caplog.text
        # The next write to that source rebuilds its entry from all of its chunks, not only the written ones.
        caplog.clear()
        extra = ChunkRecord.create(
            text="one more chunk",
            vector=unit(np.random.default_rng(3), 1)[0],
            source=first,
            position=999,
            token_length=3,
            bucket="b",
            metadata={"chunk_tokens": 64},
        )
        store.upsert([extra])
        corpus[first] = [*corpus[first], extra]
        found = search_documents(store, query, 5, scoring="hybrid")
        check_against_reference(found, corpus, query, SCORING["hybrid"], 5, evidence=3)
        assert "rescored" not in caplog.text


def test_empty_index_and_bad_arguments(opener: Opener) -> None:
    store = opener()
    query = unit(np.random.default_rng(0), 1)[0]
    assert search_documents(store, query, 5) == []
    assert search_documents_many(store, unit(np.random.default_rng(0), 2), 5) == [[], []]
    with pytest.raises(ValueError, match="k must be at least 1"):
        search_documents(store, query, 0)
    with pytest.raises(ValueError, match="unknown document score 'best'"):
        search_documents(store, query, 3, scoring="best")
    with pytest.raises(ValueError, match="evidence must be an integer >= 0"):
        search_documents(store, query, 3, evidence=-1)
    with pytest.raises(ValueError, match="one query vector"):
        search_documents(store, unit(np.random.default_rng(0), 2), 3)
    with pytest.raises(ValueError, match="chunk_tokens"):
        ChunkRecord.create(
            text="x", vector=query, source="a", position=0, token_length=1, bucket="b", metadata={"chunk_tokens": "64"}
        )


def test_real_model_end_to_end(encoder: object, tmp_path: Path) -> None:
    """The bundled model, two chunk sizes per document, FAISS and Qdrant agree and find the right file."""
    from tempscale_rag import TempScaleEncoder

    assert isinstance(encoder, TempScaleEncoder)
    texts = {
        "cooking.txt": ["Boil the pasta in salted water.", "Stir the tomato sauce and add basil.", "Serve hot."],
        "astronomy.txt": ["Jupiter is the largest planet.", "Saturn has rings of ice.", "Telescopes collect light."],
        "finance.txt": ["The bank raised interest rates.", "Bonds fell as inflation rose.", "Stocks were flat."],
    }
    records = {}
    for source, sentences in texts.items():
        chunks = [(s, 32) for s in sentences] + [(" ".join(sentences), 128)]
        vectors = encoder.encode([c for c, _ in chunks])
        records[source] = [
            ChunkRecord.create(
                text=c,
                vector=v,
                source=source,
                position=i,
                token_length=len(c.split()),
                bucket="b",
                metadata={"chunk_tokens": size},
            )
            for i, ((c, size), v) in enumerate(zip(chunks, vectors, strict=True))
        ]
    query = encoder.encode(["Which planet has rings?"], query=True)[0]
    with FaissStore(tmp_path / "f", dimension=len(query), create=True) as faiss_store:
        fill(faiss_store, records)
        by_faiss = search_documents(faiss_store, query, 3, scoring="hybrid", evidence=1)
    with QdrantStore(dimension=len(query), path=MEMORY) as qdrant_store:
        fill(qdrant_store, records)
        by_qdrant = search_documents(qdrant_store, query, 3, scoring="hybrid", evidence=1)
    assert by_faiss[0].source == "astronomy.txt"
    assert by_faiss[0].chunks[0].text == "Saturn has rings of ice."
    assert [h.source for h in by_qdrant] == [h.source for h in by_faiss]
    np.testing.assert_allclose([h.score for h in by_qdrant], [h.score for h in by_faiss], atol=1e-5)
    check_against_reference(by_faiss, records, query, SCORING["hybrid"], 3, evidence=1)
