"""The FAISS store's lexical (BM25) channel: exact against `PivotBM25`, in step with the chunks through every write,
`kill -9` and repair, and added to a dense-only store without re-embedding.

Vectors are small random unit vectors (the model is not the point here); texts are real words, so the real analyser
(stop words, Snowball stemming) runs.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.config import LexicalSettings, TempScaleConfig
from tempscale_rag.ranking.lexical import LexicalAnalyzer, PivotBM25, SparseEncoder
from tempscale_rag.stores import ChunkRecord, IndexCorruptError, IndexManifest, IndexMismatchError, open_store
from tempscale_rag.stores.faiss import DB_NAME, FaissStore
from tempscale_rag.stores.faiss.repair import repair_faiss_index

REPO_ROOT = Path(__file__).resolve().parents[1]
DIM = 16
SIZE = 64
OTHER = 16
SETTINGS = LexicalSettings(chunk_size=SIZE, pivot=12.0, document_pivot=40.0)
_VOCABULARY = (
    "budget remote control design buttons rubber cheaper marketing trend fruit vegetables meeting decided project "
    "manager industrial designer running runs runner river bank money loan quickly fox lazy dog jumps the of and "
    "is was to über straße café 東京 données"
)
WORDS = _VOCABULARY.split()
QUERIES = [
    "remote control budget",
    "running runner river bank",
    "the fox jumps over the lazy dog and the dog runs",
    "marketing trend: fruit, vegetables, fruit!",
    "über café données 東京",
    "industrial designer decided rubber buttons are cheaper for the project manager meeting",
]


def texts_for(source: str, version: int, n: int = 6) -> list[str]:
    """Deterministic chunk texts of one version of a file (some empty, some stop words only)."""
    rng = np.random.default_rng(_seed(source, version))
    texts = [" ".join(rng.choice(WORDS, int(rng.integers(0, 40)))) for _ in range(n)]
    texts[-1] = "the of and is" if version % 3 == 0 else texts[-1]
    return texts


def _seed(source: str, version: int) -> int:
    return sum(ord(c) * (i + 1) for i, c in enumerate(source)) * 1009 + version


def records(source: str, version: int, n: int = 6) -> list[ChunkRecord]:
    """Chunks of two sizes (even positions are lexical), unit vectors from the same seed as the texts."""
    rng = np.random.default_rng(_seed(source, version) + 7)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ChunkRecord.create(
            text=text,
            vector=vectors[i],
            source=source,
            position=i,
            token_length=10,
            bucket="b",
            metadata={"chunk_tokens": SIZE if i % 2 == 0 else OTHER},
        )
        for i, text in enumerate(texts_for(source, version, n))
    ]


def lexical_texts(store: FaissStore) -> dict[int, str]:
    """The stored chunks of the lexical size, by FAISS id, read straight from the database."""
    return {vid: text for vid, (text, _) in lexical_rows(store).items()}


def lexical_rows(store: FaissStore) -> dict[int, tuple[str, str]]:
    """(text, source) of the stored chunks of the lexical size, by FAISS id, read straight from the database."""
    db = sqlite3.connect(f"{(store.folder / DB_NAME).resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT vid, text, source FROM chunks WHERE json_extract(metadata, '$.chunk_tokens') = ?", (SIZE,)
        ).fetchall()
    finally:
        db.close()
    return {int(vid): (str(text), str(source)) for vid, text, source in rows}


def assert_documents_match_reference(store: FaissStore, settings: LexicalSettings = SETTINGS) -> None:
    """`lexical_documents` equals `PivotBM25` over documents whose terms are their lexical chunks' terms."""
    analyzer = LexicalAnalyzer()
    terms_of: dict[str, list[str]] = {}
    for text, source in lexical_rows(store).values():
        terms_of.setdefault(source, []).extend(analyzer.terms(text))
    sources = sorted(terms_of)
    assert settings.document_pivot is not None
    assert store.describe()["lexical"]["documents"] == len(sources)
    reference = PivotBM25([terms_of[s] for s in sources], settings.document_pivot, settings.k1, settings.b)
    for query in QUERIES:
        expected = reference.scores(analyzer.terms(query)) if sources else np.zeros(0, np.float32)
        want = {s: float(v) for s, v in zip(sources, expected.tolist(), strict=True) if v > 0}
        got_sources, got_scores = store.lexical_documents(SparseEncoder().query(query), None)
        assert sorted(got_sources.tolist()) == sorted(want), query
        np.testing.assert_allclose(got_scores, [want[s] for s in got_sources.tolist()], rtol=1e-5, atol=1e-6)
        pairs = list(zip((-got_scores).tolist(), got_sources.tolist(), strict=True))
        assert pairs == sorted(pairs)  # best first, ties by source
        assert store.lexical_documents(SparseEncoder().query(query), 2)[0].tolist() == got_sources[:2].tolist()


def assert_matches_reference(store: FaissStore, settings: LexicalSettings = SETTINGS) -> None:
    """`lexical_chunks` equals `PivotBM25` over the stored lexical chunks, for every query, in order and top-n."""
    texts = lexical_texts(store)
    vids = np.array(sorted(texts), dtype=np.int64)
    analyzer = LexicalAnalyzer()
    encoder = SparseEncoder()
    reference = PivotBM25([analyzer.terms(texts[v]) for v in vids.tolist()], settings.pivot, settings.k1, settings.b)
    assert store.describe()["lexical"]["chunks"] == len(vids)
    for query in QUERIES:
        expected = reference.scores(analyzer.terms(query)) if len(vids) else np.zeros(0, np.float32)
        hit = expected > 0
        keys, scores = store.lexical_chunks(encoder.query(query), None)
        assert keys.dtype == np.int64 and scores.dtype == np.float32
        assert sorted(keys.tolist()) == vids[hit].tolist(), query
        want = dict(zip(vids[hit].tolist(), expected[hit].tolist(), strict=True))
        np.testing.assert_allclose(scores, [want[k] for k in keys.tolist()], rtol=1e-5, atol=1e-6)
        # Best first, ties by key.
        assert all(
            (a > b) or (a == b and ka < kb) for a, b, ka, kb in zip(scores, scores[1:], keys, keys[1:], strict=False)
        )
        for n in (1, 3):
            top_keys, top_scores = store.lexical_chunks(encoder.query(query), n)
            assert top_keys.tolist() == keys[:n].tolist() and top_scores.tolist() == scores[:n].tolist()
    if settings.document_pivot is not None:
        assert_documents_match_reference(store, settings)


def test_scores_equal_pivot_bm25_through_adds_reindex_upsert_delete_and_reopen(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    with FaissStore(folder, dimension=DIM, create=True, lexical=SETTINGS) as store:
        assert store.lexical == SETTINGS
        assert_matches_reference(store)  # empty store
        for k in range(8):
            store.replace_source(f"doc{k}.txt", f"fp{k}", records(f"doc{k}.txt", k))
        assert_matches_reference(store)
        store.check_integrity()

        # A changed file: some chunks identical (they keep their ids), others new, one fewer chunk.
        changed = records("doc2.txt", 2)[:3] + records("doc2.txt", 99, n=5)[3:]
        store.replace_source("doc2.txt", "fp2b", changed)
        assert_matches_reference(store)

        # upsert: a chunk id moved to another source, and new chunks of a source without fingerprint.
        moved = records("doc3.txt", 3)[0]
        store.upsert([dataclasses.replace(moved, source="doc4.txt"), *records("loose.txt", 5)])
        assert_matches_reference(store)

        # delete and prune (the indexer prunes with delete_source).
        assert store.delete_source("doc1.txt") == 6
        for k in (5, 6):
            store.delete_source(f"doc{k}.txt")
        assert_matches_reference(store)
        store.check_integrity()

        # Freed slots are reused: re-adding keeps the slot range about N.
        for k in (1, 5, 6):
            store.replace_source(f"doc{k}.txt", f"fp{k}", records(f"doc{k}.txt", 50 + k))
        assert_matches_reference(store)
        slots = store._connection().execute("SELECT MAX(slot) + 1, COUNT(*) FROM lexical_chunks").fetchone()
        assert slots[0] <= slots[1] + 3
        store.check_integrity()

    with FaissStore(folder, read_only=True) as store:
        assert store.lexical == SETTINGS
        assert_matches_reference(store)
        store.check_integrity()
    # A read-only open that asks for other settings than the database holds refuses, naming the repair.
    with pytest.raises(IndexMismatchError, match="repair"):
        FaissStore(folder, read_only=True, lexical=LexicalSettings(chunk_size=OTHER, pivot=5.0))


def test_bad_queries_and_dense_only_stores(tmp_path: Path) -> None:
    encoder = SparseEncoder()
    with FaissStore(tmp_path / "lex", dimension=DIM, create=True, lexical=SETTINGS) as store:
        store.replace_source("a.txt", "fp", records("a.txt", 1))
        for query in ("", "the of and is", "🤖 !!"):
            keys, scores = store.lexical_chunks(encoder.query(query), None)
            assert keys.shape == (0,) and scores.shape == (0,)
        assert store.lexical_chunks(encoder.query("budget remote"), 0)[0].shape == (0,)
        # A term no chunk holds scores nothing; repeated ids add their counts.
        ids, counts = encoder.query("budget")
        assert store.lexical_chunks(([123456789], [1.0]), None)[0].shape == (0,)
        once = store.lexical_chunks((ids * 2, counts * 2), None)
        twice = store.lexical_chunks((ids, [2 * c for c in counts]), None)
        assert once[0].tolist() == twice[0].tolist() and once[1].tolist() == twice[1].tolist()
        with pytest.raises(ValueError, match="one count per term id"):
            store.lexical_chunks(([1, 2], [1.0]), None)
        with pytest.raises(ValueError, match="32-bit"):
            store.lexical_chunks(([-1], [1.0]), None)
        with pytest.raises(ValueError, match="n must be"):
            store.lexical_chunks((ids, counts), -1)
    with FaissStore(tmp_path / "dense", dimension=DIM, create=True) as store:
        store.replace_source("a.txt", "fp", records("a.txt", 1))
        assert store.lexical is None and store.describe()["lexical"] is None
        assert store.lexical_chunks(encoder.query("budget remote"), None)[0].shape == (0,)
        store.check_integrity()


def test_add_lexical_equals_a_store_built_with_it_and_old_stores_keep_working(tmp_path: Path) -> None:
    def write(store: FaissStore) -> None:
        for k in range(6):
            store.replace_source(f"doc{k}.txt", f"fp{k}", records(f"doc{k}.txt", k))
        store.replace_source("doc1.txt", "fp1b", records("doc1.txt", 11))
        store.delete_source("doc3.txt")

    with FaissStore(tmp_path / "from-start", dimension=DIM, create=True, lexical=SETTINGS) as built:
        write(built)
    with FaissStore(tmp_path / "dense", dimension=DIM, create=True) as dense:
        write(dense)
        query = SparseEncoder().query("budget remote control running")
        hits_before = dense.search_many(records("doc0.txt", 0)[0].vector[None, :], k=5)
    # A dense-only store (as every index before the lexical channel) opens and searches, read-only too.
    with FaissStore(tmp_path / "dense", read_only=True) as dense:
        assert dense.lexical is None
        assert dense.lexical_chunks(query, None)[0].shape == (0,)
        assert [h.id for h in dense.search_many(records("doc0.txt", 0)[0].vector[None, :], k=5)[0]] == [
            h.id for h in hits_before[0]
        ]
        # Asked for a channel it lacks, a read-only open refuses rather than answering without it.
        with pytest.raises(IndexCorruptError, match="repair"):
            FaissStore(tmp_path / "dense", read_only=True, lexical=SETTINGS)
    with FaissStore(tmp_path / "dense") as dense:
        generation = dense.generation
        assert dense.add_lexical(SETTINGS) == len(lexical_texts(dense))
        assert dense.generation == generation  # the chunks and vectors are untouched
        assert_matches_reference(dense)
        dense.check_integrity()
    with (
        FaissStore(tmp_path / "dense", read_only=True) as upgraded,
        FaissStore(tmp_path / "from-start", read_only=True) as built,
    ):
        assert upgraded.describe()["lexical"] == built.describe()["lexical"]
        for text in QUERIES:
            q = SparseEncoder().query(text)
            got, want = upgraded.lexical_chunks(q, None), built.lexical_chunks(q, None)
            assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()

    # Another chunk size: a writable open with other settings rebuilds the channel from the stored texts.
    other = LexicalSettings(chunk_size=OTHER, pivot=5.0)
    with FaissStore(tmp_path / "dense", lexical=other) as store:
        assert store.lexical == other
        assert store.describe()["lexical"]["chunks"] == 3 * 5  # 5 sources of 6 chunks, half of them of size 16
        store.check_integrity()
    with pytest.raises(ValueError, match="analyser"), FaissStore(tmp_path / "dense") as store:
        store.add_lexical(LexicalSettings(analyzer="something-else", chunk_size=SIZE, pivot=10.0))


def test_open_store_passes_the_manifests_lexical_channel(tmp_path: Path) -> None:
    manifest = IndexManifest.new(model="m", dimension=DIM, config=TempScaleConfig(), lexical=SETTINGS)
    with open_store(tmp_path / "index", manifest) as store:
        assert isinstance(store, FaissStore) and store.lexical == SETTINGS
        store.replace_source("a.txt", "fp", records("a.txt", 1))
    with open_store(tmp_path / "index", read_only=True) as store:
        assert isinstance(store, FaissStore)
        assert_matches_reference(store)


def test_describe_integrity_check_and_repair(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    manifest = IndexManifest.new(model="m", dimension=DIM, config=TempScaleConfig(), lexical=SETTINGS)
    with open_store(folder, manifest) as store:
        assert isinstance(store, FaissStore)
        for k in range(40):
            store.replace_source(f"doc{k}.txt", f"fp{k}", records(f"doc{k}.txt", k, n=40))
        described = store.describe()["lexical"]
        assert described["chunks"] == 40 * 20 and described["chunk_size"] == SIZE
        assert 30 <= described["terms"] <= len(WORDS)
    tampering = [
        "DELETE FROM lexical_chunks WHERE vid = (SELECT MIN(vid) FROM lexical_chunks)",
        "UPDATE lexical_terms SET df = df + 1 WHERE term_id = (SELECT MIN(term_id) FROM lexical_terms)",
        "DELETE FROM lexical_postings WHERE term_id = (SELECT MIN(term_id) FROM lexical_postings)",
        "UPDATE meta SET value = '7' WHERE key = 'lexical_chunks'",
        "UPDATE chunks SET metadata = json_set(metadata, '$.chunk_tokens', 16) WHERE vid = "
        "(SELECT MIN(vid) FROM lexical_chunks)",
        "UPDATE lexical_blocks SET vids = zeroblob(8192)",
        "UPDATE lexical_document_postings SET tf = tf + 1 WHERE term_id = "
        "(SELECT MIN(term_id) FROM lexical_document_postings)",
        "DELETE FROM lexical_chunk_terms WHERE vid = (SELECT MIN(vid) FROM lexical_chunk_terms)",
        "UPDATE lexical_document_terms SET df = df + 1 WHERE term_id = (SELECT MAX(term_id) FROM "
        "lexical_document_terms)",
        "UPDATE lexical_documents SET length = length + 1 WHERE doc = (SELECT MIN(doc) FROM lexical_documents)",
    ]
    for statement in tampering:
        db = sqlite3.connect(folder / DB_NAME)
        db.execute(statement)
        db.commit()
        db.close()
        with FaissStore(folder, read_only=True) as store, pytest.raises(IndexCorruptError, match=r"lexical.*repair"):
            store.check_integrity()
        report = repair_faiss_index(folder, manifest)
        assert not report.database_damaged
        with FaissStore(folder, read_only=True) as store:
            store.check_integrity()
            assert_matches_reference(store)

    # Damaged pages: the repaired store holds the readable files' chunks with their lexical rows.
    db_path = folder / DB_NAME
    data = db_path.read_bytes()
    start = len(data) // 2 // 4096 * 4096
    db_path.write_bytes(data[:start] + bytes((i * 73 + 41) % 256 for i in range(4096)) + data[start + 4096 :])
    assert repair_faiss_index(folder, manifest).database_damaged
    with FaissStore(folder, read_only=True) as store:
        store.check_integrity()
        assert store.lexical == SETTINGS
        assert_matches_reference(store)


# --- kill -9 ----------------------------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from test_faiss_lexical import SETTINGS, records
    from tempscale_rag.stores.faiss import FaissStore

    def self_kill(folder, statement, nth):
        store = FaissStore(folder, dimension=16, create=True, lexical=SETTINGS)
        store.replace_source("doc.txt", "fp1", records("doc.txt", 1))
        store.replace_source("other.txt", "fp2", records("other.txt", 2))
        store.commit()
        seen = 0

        def kill(sql):
            nonlocal seen
            if sql.startswith(statement):
                seen += 1
                if seen == nth:
                    os.kill(os.getpid(), signal.SIGKILL)

        store._db.set_trace_callback(kill)
        store.replace_source("doc.txt", "fp3", records("doc.txt", 3))
        store.delete_source("other.txt")

    for n, (statement, nth) in enumerate([
        ("INSERT INTO lexical_chunks", 1),
        ("INSERT INTO lexical_postings", 5),
        ("UPDATE lexical_postings", 2),
        ("INSERT INTO lexical_terms", 3),
        ("UPDATE lexical_terms", 1),
        ("DELETE FROM lexical_postings", 1),
    ]):
        pid = os.fork()
        if pid == 0:
            self_kill(f"{sys.argv[1]}/self{n}", statement, nth)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("killed" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else "survived",
              flush=True)

    store = FaissStore(sys.argv[1] + "/loop", dimension=16, create=True, lexical=SETTINGS)
    i = 0
    while True:
        source = f"doc{i % 7}.txt"
        if i % 5 == 4:
            store.delete_source(source)
        else:
            store.replace_source(source, f"fp{i}", records(source, i, n=30))
        if i % 3 == 0:
            store.commit()
        print(i, flush=True)
        i += 1
    """
)


def _final_writes(store: FaissStore) -> None:
    """The re-run: every file at its final version (as `index` would leave them), one pruned."""
    for k in range(7):
        store.replace_source(f"doc{k}.txt", f"final{k}", records(f"doc{k}.txt", 1000 + k, n=30))
    store.delete_source("doc6.txt")


def _state(store: FaissStore) -> tuple[object, ...]:
    """What a user can observe, by chunk id: sources, chunks, dense hits and lexical results."""
    encoder = SparseEncoder()
    lexical = []
    for text in QUERIES:
        keys, scores = store.lexical_chunks(encoder.query(text), None)
        ids = store.evidence_hits(keys.tolist())
        lexical.append([(ids[k].id, round(float(s), 5)) for k, s in zip(keys.tolist(), scores.tolist(), strict=True)])
    dense = store.search_many(records("doc0.txt", 1000, n=30)[0].vector[None, :], k=10)
    return store.sources(), store.count(), [h.id for h in dense[0]], sorted(map(sorted, lexical))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and SIGKILL (POSIX)")
def test_kill_9_mid_write_then_a_rerun_leaves_chunks_vectors_and_postings_consistent(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    rng = np.random.default_rng()
    wanted = int(rng.integers(8, 25))
    try:
        assert child.stdout is not None
        for _ in range(6):
            assert child.stdout.readline().strip() == "killed", "a self-kill scenario did not die in its transaction"
        lines = 0
        for _line in child.stdout:
            lines += 1
            if lines >= wanted:
                break
        time.sleep(float(rng.uniform(0, 0.05)))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert lines >= wanted, "the looping writer died before it was killed"

    for n in range(6):
        with FaissStore(tmp_path / f"self{n}") as store:
            assert store.sources() == {"doc.txt": "fp1", "other.txt": "fp2"}, n
            store.check_integrity()
            assert_matches_reference(store)
    with FaissStore(tmp_path / "loop") as crashed:
        crashed.check_integrity()
        assert_matches_reference(crashed)
        assert crashed.count() == 30 * len(crashed.sources())
        _final_writes(crashed)
        crashed.check_integrity()
        with FaissStore(tmp_path / "clean", dimension=DIM, create=True, lexical=SETTINGS) as clean:
            _final_writes(clean)
            assert _state(crashed) == _state(clean)


@pytest.mark.parametrize("big_ids", [False, True])
def test_best_first_orders_by_score_then_id(big_ids: bool) -> None:
    """The packed-key sort (ids < 2**32) and the lexsort fallback agree with (-score, id) order, ties included."""
    from tempscale_rag.stores.faiss.lexical import _best_first

    rng = np.random.default_rng(3)
    scores = (rng.integers(1, 50, 5000) / 7.0).astype(np.float32)
    vids = rng.choice(10**6, 5000, replace=False).astype(np.int64) + (2**40 if big_ids else 1)
    keys, ranked = _best_first(scores, vids)
    order = sorted(range(len(vids)), key=lambda i: (-float(scores[i]), int(vids[i])))
    assert keys.tolist() == vids[order].tolist() and ranked.tolist() == scores[order].tolist()
