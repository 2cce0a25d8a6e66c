"""The Qdrant stores' lexical (BM25) channel: sparse vectors on the chunk points, scored exactly like `PivotBM25`.

Real engines throughout: qdrant-client's local mode (on disk and in memory) and Qdrant Edge (qdrant-edge-py). The
dense side is random unit vectors; the texts are drawn from a small vocabulary so that queries match many chunks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.config import LexicalSettings, TempScaleConfig
from tempscale_rag.ranking.lexical import LexicalAnalyzer, PivotBM25, SparseEncoder
from tempscale_rag.stores import ChunkRecord, IndexManifest, IndexMismatchError, QdrantSettings, open_store
from tempscale_rag.stores.qdrant import MEMORY, QdrantStore
from tempscale_rag.stores.qdrant.edge import EdgeStore
from tempscale_rag.stores.qdrant.points import point_id

REPO_ROOT = Path(__file__).resolve().parents[1]
DIM = 16
LEX_SIZE = 64
SMALL = 16
LEX = LexicalSettings(chunk_size=LEX_SIZE, pivot=9.0, document_pivot=30.0)
VOCABULARY = (
    "river bank money loan water fish boat bridge market stock price trade rain storm cloud tree "
    "forest mountain valley stone gold silver iron coal engine train station city harbour ship sail wind"
)
QUERIES = [
    "river bank",
    "money money loan price",
    "the storm over the harbour ship",
    "gold silver iron coal engine",
    "forest",
    "Boats bridging markets",  # stemmed to terms of the documents
]
ANALYZER = LexicalAnalyzer()


def chunk_text(rng: np.random.Generator, lexical: bool) -> str:
    if lexical and rng.random() < 0.1:
        return "the and of to a"  # no term survives: the chunk still counts in N
    n = int(rng.integers(3, 20 if lexical else 6))
    return " ".join(rng.choice(VOCABULARY.split(), size=n).tolist())


def records(source: str, version: int, n_lexical: int = 5, n_small: int = 3) -> list[ChunkRecord]:
    """A source's chunks: `n_lexical` of the lexical size, `n_small` smaller ones (which stay out of the channel)."""
    rng = np.random.default_rng([version, sum(map(ord, source))])
    vectors = rng.standard_normal((n_lexical + n_small, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = []
    for j, vector in enumerate(vectors):
        lexical = j < n_lexical
        out.append(
            ChunkRecord.create(
                text=chunk_text(rng, lexical),
                vector=vector,
                source=source,
                position=j,
                token_length=LEX_SIZE if lexical else SMALL,
                bucket="b",
                metadata={"chunk_tokens": LEX_SIZE if lexical else SMALL},
            )
        )
    return out


def reference(stored: dict[str, list[ChunkRecord]], query: str, settings: LexicalSettings = LEX) -> dict[str, float]:
    """PivotBM25 over the stored chunks of the channel's size: point id -> score, for the chunks that match."""
    chunks = [r for rs in stored.values() for r in rs if r.metadata.get("chunk_tokens") == settings.chunk_size]
    if not chunks:
        return {}
    bm25 = PivotBM25(ANALYZER.terms_many([r.text for r in chunks]), settings.pivot, settings.k1, settings.b)
    scores = bm25.scores(ANALYZER.terms(query))
    return {point_id(r.id): float(s) for r, s in zip(chunks, scores, strict=True) if s > 0}


def assert_scores_match(store: QdrantStore, stored: dict[str, list[ChunkRecord]]) -> None:
    """Every query: all matching chunks (n=None) and the top 3, equal to the reference."""
    for text in QUERIES:
        want = reference(stored, text)
        keys, scores = store.lexical_chunks(SparseEncoder().query(text), None)
        assert keys.dtype == object and scores.dtype == np.float32
        assert dict(zip(keys.tolist(), scores.tolist(), strict=True)) == pytest.approx(want, rel=1e-5, abs=1e-5), text
        assert np.all(np.diff(scores) <= 0), "best first"
        top_keys, top_scores = store.lexical_chunks(SparseEncoder().query(text), 3)
        np.testing.assert_allclose(top_scores, sorted(want.values(), reverse=True)[:3], rtol=1e-5, atol=1e-5)
        assert all(want[key] == pytest.approx(score, rel=1e-5) for key, score in zip(top_keys, top_scores, strict=True))
    if store.lexical is not None and store.lexical.document_pivot is not None:
        assert_documents_match(store, stored, store.lexical)


def assert_documents_match(store: QdrantStore, stored: dict[str, list[ChunkRecord]], lex: LexicalSettings) -> None:
    """Whole-document BM25 (each document's lexical chunk terms) equals `PivotBM25` over the documents."""
    assert lex.document_pivot is not None
    terms = {
        source: [t for r in recs if r.metadata["chunk_tokens"] == lex.chunk_size for t in ANALYZER.terms(r.text)]
        for source, recs in stored.items()
        if any(r.metadata["chunk_tokens"] == lex.chunk_size for r in recs)
    }
    sources = sorted(terms)
    scorer = PivotBM25([terms[s] for s in sources], lex.document_pivot, lex.k1, lex.b) if sources else None
    for text in QUERIES:
        scores = scorer.scores(ANALYZER.terms(text)).tolist() if scorer is not None else []
        want = {s: v for s, v in zip(sources, scores, strict=True) if v > 0}
        got, got_scores = store.lexical_documents(SparseEncoder().query(text), None)
        assert dict(zip(got.tolist(), got_scores.tolist(), strict=True)) == pytest.approx(want, rel=1e-5, abs=1e-5)
        assert list(zip((-got_scores).tolist(), got.tolist(), strict=True)) == sorted(
            zip((-got_scores).tolist(), got.tolist(), strict=True)
        )


Opener = Callable[..., QdrantStore]


def _local(path: Path, **options: object) -> QdrantStore:
    return QdrantStore(dimension=DIM, path=path, **options)  # type: ignore[arg-type]


def _edge(path: Path, **options: object) -> QdrantStore:
    return EdgeStore(dimension=DIM, path=path, exact=True, **options)  # type: ignore[arg-type]


ENGINES = {"local": _local, "edge": _edge}


@pytest.fixture(params=sorted(ENGINES))
def opener(request: pytest.FixtureRequest) -> Opener:
    return ENGINES[request.param]


def edit_history(store: QdrantStore) -> Iterator[dict[str, list[ChunkRecord]]]:
    """Adds, a re-index of a changed source, a delete, a plain upsert; yields what is stored after each."""
    stored = {f"s{i}.txt": records(f"s{i}.txt", 0) for i in range(4)}
    for source, members in stored.items():
        store.replace_source(source, "fp0", members)
    yield stored
    stored["s1.txt"] = records("s1.txt", 1, n_lexical=3)
    store.replace_source("s1.txt", "fp1", stored["s1.txt"])
    yield stored
    assert store.delete_source("s2.txt") == 8
    del stored["s2.txt"]
    yield stored
    extra = records("s3.txt", 7, n_lexical=2, n_small=1)
    extra = [
        ChunkRecord.create(
            text=r.text,
            vector=r.vector,
            source="s3.txt",
            position=100 + r.position,
            token_length=r.token_length,
            bucket="b",
            metadata=r.metadata,
        )
        for r in extra
    ]
    store.upsert(extra)
    stored["s3.txt"] = stored["s3.txt"] + extra
    yield stored


def test_scores_equal_pivot_bm25_through_adds_reindex_delete_and_reopen(opener: Opener, tmp_path: Path) -> None:
    with opener(tmp_path / "q", lexical=LEX) as store:
        assert store.lexical == LEX
        for stored in edit_history(store):
            assert_scores_match(store, stored)
        assert store.describe()["lexical_chunks"] == sum(
            r.metadata["chunk_tokens"] == LEX_SIZE for rs in stored.values() for r in rs
        )
    with opener(tmp_path / "q", lexical=LEX, read_only=True) as store:
        assert_scores_match(store, stored)
        # Dense search is untouched by the sparse vectors beside it.
        record = stored["s0.txt"][2]
        assert store.search(record.vector, k=1)[0].id == record.id
        keys, _ = store.lexical_chunks(SparseEncoder().query("river"), 2)
        hits = store.evidence_hits(list(keys))
        assert all("river" in hits[key].text for key in keys)


def test_in_memory_local_mode_and_edge_agree(tmp_path: Path) -> None:
    with (
        QdrantStore(dimension=DIM, path=MEMORY, lexical=LEX) as memory,
        EdgeStore(dimension=DIM, path=tmp_path / "e", lexical=LEX) as edge,
    ):
        for _ in zip(edit_history(memory), edit_history(edge), strict=True):
            for text in QUERIES:
                query = SparseEncoder().query(text)
                a_keys, a_scores = memory.lexical_chunks(query, None)
                b_keys, b_scores = edge.lexical_chunks(query, None)
                assert dict(zip(a_keys, a_scores, strict=True)) == pytest.approx(
                    dict(zip(b_keys, b_scores, strict=True)), abs=1e-5
                )


def test_edge_stays_exact_once_its_sparse_index_is_built_and_after_edits_on_it(tmp_path: Path) -> None:
    import qdrant_edge as qe

    stored = {f"s{i}.txt": records(f"s{i}.txt", 0, n_lexical=20, n_small=10) for i in range(30)}
    with EdgeStore(dimension=DIM, path=tmp_path, lexical=LEX) as store:
        for source, members in stored.items():
            store.replace_source(source, "fp0", members)
    # Qdrant's indexing threshold lowered to 1 KB so that the optimizers build the segment's sparse (and HNSW) index
    # at this size, as they do for real corpora at Edge's default threshold.
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine),
        sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )
    shard = qe.EdgeShard.load(str(tmp_path / "tempscale"), config)
    try:
        assert shard.optimize()
        assert shard.info().indexed_vectors_count > 900  # the dense vectors and the sparse ones
    finally:
        shard.close()
    with EdgeStore(dimension=DIM, path=tmp_path, lexical=LEX) as store:
        assert_scores_match(store, stored)
        for i in range(0, 30, 3):
            stored[f"s{i}.txt"] = records(f"s{i}.txt", 1, n_lexical=15, n_small=5)
            store.replace_source(f"s{i}.txt", "fp1", stored[f"s{i}.txt"])
        store.delete_source("s1.txt")
        del stored["s1.txt"]
        assert_scores_match(store, stored)


def test_queries_without_terms_and_bad_queries(opener: Opener, tmp_path: Path) -> None:
    with opener(tmp_path / "q", lexical=LEX) as store:
        store.replace_source("a.txt", "fp", records("a.txt", 0))
        for query in (SparseEncoder().query("the of and"), SparseEncoder().query("🙂 !!")):
            keys, scores = store.lexical_chunks(query, None)
            assert keys.shape == scores.shape == (0,)
        assert store.lexical_chunks(SparseEncoder().query("river bank money"), 0)[0].shape == (0,)
        with pytest.raises(ValueError, match="one value per term"):
            store.lexical_chunks(([1, 2], [1.0]), None)
        with pytest.raises(ValueError, match="n must be"):
            store.lexical_chunks(SparseEncoder().query("river"), -1)
        with pytest.raises(TypeError, match="pair"):
            store.lexical_chunks("river", None)  # type: ignore[arg-type]


def test_dense_only_index_keeps_working_and_gains_the_channel_without_reembedding(
    opener: Opener, tmp_path: Path
) -> None:
    folder = tmp_path / "q"
    stored = {f"s{i}.txt": records(f"s{i}.txt", 0) for i in range(3)}
    with opener(folder) as store:
        for source, members in stored.items():
            store.replace_source(source, "fp0", members)
    with opener(folder, read_only=True) as store:
        assert store.lexical is None
        assert store.describe()["lexical_chunks"] is None
        record = stored["s1.txt"][0]
        assert store.search(record.vector, k=1)[0].id == record.id
        keys, scores = store.lexical_chunks(SparseEncoder().query("river bank"), None)
        assert keys.shape == scores.shape == (0,)
    with pytest.raises(IndexMismatchError, match="no lexical channel"):
        opener(folder, lexical=LEX)
    with opener(folder) as store:
        vectors_before = {p: v for members in store.scan_chunks(None).values() for p, v, _ in members}
        assert store.add_lexical(LEX) == 15
        assert store.lexical == LEX
        assert_scores_match(store, stored)
        # Nothing was re-embedded: the dense vectors are the stored ones.
        after = {p: v for members in store.scan_chunks(None).values() for p, v, _ in members}
        assert after.keys() == vectors_before.keys()
        assert all(np.array_equal(after[p], vectors_before[p]) for p in after)
        # Writes after the upgrade keep the channel in step.
        stored["s0.txt"] = records("s0.txt", 3)
        store.replace_source("s0.txt", "fp3", stored["s0.txt"])
        assert_scores_match(store, stored)
    with opener(folder, lexical=LEX, read_only=True) as store:
        assert_scores_match(store, stored)
    # Other settings (another chunk size): the channel is rebuilt and the old size leaves it.
    other = LexicalSettings(chunk_size=SMALL, pivot=3.0, k1=1.2, b=0.5)
    with opener(folder, lexical=LEX) as store:
        assert store.add_lexical(other) == 9
        for text in QUERIES:
            keys, scores = store.lexical_chunks(SparseEncoder().query(text), None)
            want = reference(stored, text, other)
            assert dict(zip(keys, scores, strict=True)) == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_open_store_passes_the_manifests_lexical_settings(tmp_path: Path) -> None:
    for engine in ("edge", "local"):
        manifest = IndexManifest.new(
            model="lexical-test",
            dimension=DIM,
            config=TempScaleConfig(),
            backend=QdrantSettings(engine=engine),  # type: ignore[arg-type]
            lexical=LEX,
        )
        folder = tmp_path / engine
        with open_store(folder, manifest) as store:
            assert isinstance(store, QdrantStore) and store.lexical == LEX
            store.replace_source("a.txt", "fp", records("a.txt", 0))
        with open_store(folder, read_only=True) as store:
            assert isinstance(store, QdrantStore) and store.lexical == LEX
            assert_scores_match(store, {"a.txt": records("a.txt", 0)})


def test_a_foreign_sparse_vector_without_idf_is_refused(tmp_path: Path) -> None:
    from qdrant_client import models

    with QdrantStore(dimension=DIM, path=tmp_path / "q") as store:
        store.client.create_vector_name(
            store.collection, "bm25", models.SparseVectorNameConfig(sparse=models.SparseVectorConfig())
        )
        with pytest.raises(IndexMismatchError, match="without the IDF modifier"):
            store.add_lexical(LEX)


# The child re-indexes 6 sources in a loop (version i for the i-th write) with the lexical channel, committing every 2
# writes and reopening every 7 (closing runs Edge's optimizers), until the test kills it with SIGKILL.
_CRASH_CHILD = textwrap.dedent(
    """
    import sys
    from tests.test_qdrant_lexical import LEX, records
    from tempscale_rag.stores.qdrant.edge import EdgeStore

    store = EdgeStore(dimension=16, path=sys.argv[1], lexical=LEX)
    i = 0
    while True:
        source = f"doc{i % 6}.txt"
        store.replace_source(source, f"fp{i}", records(source, i))
        if i % 2 == 0:
            store.commit()
        if i % 7 == 6:
            store.close()
            store = EdgeStore(dimension=16, path=sys.argv[1], lexical=LEX)
        print(i, flush=True)
        i += 1
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_edge_kill_9_then_rerun_keeps_sparse_vectors_consistent(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    crashed = tmp_path / "crashed"
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, str(crashed)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )
    lines = 0
    try:
        assert child.stdout is not None
        for _line in child.stdout:
            lines += 1
            if lines >= 15 + int.from_bytes(os.urandom(1), "little") % 15:
                break
        time.sleep(float(np.random.default_rng().uniform(0, 0.05)))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert lines >= 15, "the looping writer died before it was killed"

    with EdgeStore(dimension=DIM, path=crashed, lexical=LEX) as store:
        # Whatever the moment of the kill, the channel is exactly BM25 over the chunks that are stored.
        listed = store.sources()
        stored: dict[str, list[ChunkRecord]] = {}
        for source, members in store.scan_chunks(None).items():
            hits = store.evidence_hits([point for point, _, _ in members])
            stored[source] = [
                ChunkRecord.create(
                    text=hits[p].text,
                    vector=v,
                    source=source,
                    position=hits[p].position,
                    token_length=hits[p].token_length,
                    bucket="b",
                    metadata=hits[p].metadata,
                )
                for p, v, _ in members
            ]
        assert_scores_match(store, stored)
        # The re-run, as the indexer does it, then the clean state's scores.
        wanted = {f"doc{k}.txt": 500 + k for k in range(6)}
        for source, version in wanted.items():
            if listed.get(source) != f"fp{version}":
                store.replace_source(source, f"fp{version}", records(source, version))
        for source in set(store.scan_chunks(None)) - set(wanted):
            store.delete_source(source)
    with EdgeStore(dimension=DIM, path=crashed, lexical=LEX, read_only=True) as store:
        assert_scores_match(store, {source: records(source, version) for source, version in wanted.items()})


def test_index_api_add_lexical_then_hybrid_search_on_edge(tmp_path: Path) -> None:
    """End to end with the bundled model: a dense-only Edge index gains the channel, then searches hybrid."""
    from tempscale_rag.config import ChunkingConfig
    from tempscale_rag.index.index import Index

    docs = {
        "rivers.txt": "The river bank flooded after the storm; fishermen moved their boats to the harbour. " * 5,
        "finance.txt": "The bank approved the loan, and interest rates shaped the money market. " * 5,
        "passkey.txt": "Grass is green. The sky is blue. " * 12 + "The pass key is 71432. " + "Grass is green. " * 8,
    }
    backend = QdrantSettings(engine="edge")
    with Index.create(tmp_path, backend=backend, chunking=ChunkingConfig(sizes=(48, 128)), lexical=False) as index:
        index.add(docs)
        assert index.manifest is not None and index.manifest.lexical is None
        assert index.search("what is the pass key 71432", k=1, retrieval="dense")[0].source == "passkey.txt"
        settings = index.add_lexical()
        assert settings == LexicalSettings.for_chunks(128) and index.manifest.lexical == settings
        store = index._require_store()
        assert isinstance(store, EdgeStore) and store.lexical == settings
        texts = {
            point: hit.text
            for members in store.scan_chunks(None).values()
            for point, _, size in members
            if size == 128
            for hit in [store.evidence_hits([point])[point]]
        }
        bm25 = PivotBM25(ANALYZER.terms_many(list(texts.values())), settings.pivot, settings.k1, settings.b)
        want = dict(zip(texts, bm25.scores(ANALYZER.terms("pass key 71432")).tolist(), strict=True))
        hits = index.search("pass key 71432", k=2, retrieval="lexical")
        assert [h.score for h in hits] == pytest.approx(sorted(filter(None, want.values()), reverse=True)[:2], rel=1e-5)
        assert hits[0].source == "passkey.txt"
        assert index.search("what is the pass key 71432", k=1)[0].source == "passkey.txt"
        assert index.search_documents("bank loan money", k=1)[0].source == "finance.txt"
