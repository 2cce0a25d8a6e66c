"""Hybrid search on every backend equals a brute-force reference: every chunk scored by each channel, then fused.

The reference scores every stored chunk densely (`score_documents` over all chunks for documents) and lexically
(`PivotBM25` over the lexical-size chunk texts, each document by its best chunk), takes each channel's best `depth`,
and fuses them with `fuse_ranked`; FAISS flat, Qdrant local mode and Qdrant Edge (exact) must give the same
documents and chunks with the same fused scores. A dense-only store gives the dense ranking.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.config import LexicalSettings
from tempscale_rag.ranking.documents import ChunkGroups, DocumentScoring, score_documents
from tempscale_rag.ranking.hybrid import (
    Fusion,
    fuse_ranked,
    has_whole_documents,
    search_chunks_hybrid,
    search_documents_hybrid,
)
from tempscale_rag.ranking.lexical import LexicalAnalyzer, PivotBM25, SparseEncoder
from tempscale_rag.stores import ChunkRecord, VectorStore
from tempscale_rag.stores.base import SearchHit
from tempscale_rag.stores.faiss import FaissStore
from tempscale_rag.stores.qdrant import MEMORY, QdrantStore
from tempscale_rag.stores.qdrant.edge import EdgeStore

DIM, SMALL, LARGE = 32, 16, 48
LEXICAL = LexicalSettings.for_chunks(LARGE)
WORDS = [
    "budget",
    "remote",
    "control",
    "design",
    "rubber",
    "case",
    "button",
    "battery",
    "meeting",
    "agenda",
    "marketing",
    "designer",
    "project",
    "manager",
    "scroll",
    "wheel",
    "speech",
    "recognition",
    "price",
    "target",
    "market",
    "fashion",
    "trend",
    "colour",
    "plastic",
    "voice",
    "kinetic",
    "energy",
    "chip",
    "interface",
    "prototype",
    "evaluation",
    "fruit",
    "vegetable",
    "spongy",
    "material",
    "logo",
    "yellow",
    "banana",
    "finance",
    "cost",
]
QUERIES = [
    "what did the designer say about the rubber case and the battery",
    "marketing target market fashion trend",
    "the and of",  # stop words only: no lexical terms, the dense ranking
    "speech recognition chip cost",
]
SCORING = DocumentScoring("softmax", softmax_temperature=0.03)


def _records() -> dict[str, list[ChunkRecord]]:
    rng = np.random.default_rng(5)
    out: dict[str, list[ChunkRecord]] = {}
    for d in range(12):
        source = f"docs/meeting{d:02d}.txt"
        records = []
        for size, count in ((SMALL, 6), (LARGE, 3)):
            for _ in range(count):
                words = rng.choice(WORDS, size=size // 2 + int(rng.integers(0, size // 2)))
                vector = rng.standard_normal(DIM).astype(np.float32)
                records.append(
                    ChunkRecord.create(
                        text=" ".join(words),
                        vector=vector / np.linalg.norm(vector),
                        source=source,
                        position=len(records),
                        token_length=size,
                        bucket=str(size),
                        metadata={"chunk_tokens": size},
                    )
                )
        out[source] = records
    return out


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[ChunkRecord]]:
    return _records()


@pytest.fixture
def stores(tmp_path: Path, corpus: dict[str, list[ChunkRecord]]) -> Iterator[dict[str, VectorStore]]:
    opened: dict[str, VectorStore] = {
        "faiss-flat": FaissStore(tmp_path / "faiss", dimension=DIM, create=True, lexical=LEXICAL),
        "qdrant-memory-dot": QdrantStore(dimension=DIM, path=MEMORY, distance="dot", lexical=LEXICAL),
        "qdrant-edge-dot-exact": EdgeStore(
            dimension=DIM, path=tmp_path / "edge", distance="dot", exact=True, lexical=LEXICAL
        ),
    }
    for store in opened.values():
        for source, records in corpus.items():
            store.replace_source(source, f"sha-{source}", records)
        store.commit()
    yield opened
    for store in opened.values():
        store.close()


def _reference(
    corpus: dict[str, list[ChunkRecord]],
    query_vector: np.ndarray,
    text: str,
    fusion: Fusion,
    k: int,
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(documents, chunks) of the brute-force hybrid ranking: (source, fused score) and (chunk id, fused score).

    Documents fuse three lists: dense, best lexical chunk, and whole-document BM25 over each document's lexical
    chunk terms.
    """
    records = [r for rs in corpus.values() for r in rs]
    vectors = np.stack([r.vector for r in records])
    cosines = vectors @ query_vector
    groups = ChunkGroups.build([r.source for r in records], [r.metadata["chunk_tokens"] for r in records])
    documents = score_documents(cosines[None, :], groups, SCORING)[0]
    dense_docs = sorted(zip(groups.documents, documents.tolist(), strict=True), key=lambda p: -p[1])
    analyzer = LexicalAnalyzer()
    lexical_records = [r for r in records if r.metadata["chunk_tokens"] == LEXICAL.chunk_size]
    bm25 = PivotBM25(analyzer.terms_many([r.text for r in lexical_records]), LEXICAL.pivot, LEXICAL.k1, LEXICAL.b)
    chunk_scores = bm25.scores(analyzer.terms(text))
    best: dict[str, float] = {}
    for record, score in zip(lexical_records, chunk_scores.tolist(), strict=True):
        if score > 0 and score > best.get(record.source, 0.0):
            best[record.source] = score
    lexical_docs = sorted(best.items(), key=lambda p: -p[1])
    whole_docs: list[tuple[str, float]] = []
    if LEXICAL.document_pivot is not None:
        sources = sorted({r.source for r in lexical_records})
        terms = {s: [t for r in lexical_records if r.source == s for t in analyzer.terms(r.text)] for s in sources}
        scorer = PivotBM25([terms[s] for s in sources], LEXICAL.document_pivot, LEXICAL.k1, LEXICAL.b)
        scored = zip(sources, scorer.scores(analyzer.terms(text)).tolist(), strict=True)
        whole_docs = sorted(((s, v) for s, v in scored if v > 0), key=lambda p: (-p[1], p[0]))
    depth = max(k, fusion.depth)
    wide = Fusion(fusion.retrieval, fusion.method, fusion.lexical_weight, depth)
    fused_docs = [(str(d), s) for d, s in fuse_ranked(dense_docs, lexical_docs, wide, whole_docs)[:k]]
    dense_chunks = sorted(((r.id, float(c)) for r, c in zip(records, cosines, strict=True)), key=lambda p: -p[1])
    lexical_chunks = sorted(
        ((r.id, float(s)) for r, s in zip(lexical_records, chunk_scores, strict=True) if s > 0), key=lambda p: -p[1]
    )
    fused_chunks = [(str(c), s) for c, s in fuse_ranked(dense_chunks, lexical_chunks, wide)[:k]]
    return fused_docs, fused_chunks


@pytest.mark.parametrize("retrieval", ["hybrid", "lexical", "dense"])
def test_hybrid_equals_the_brute_force_reference_on_every_backend(
    stores: dict[str, VectorStore], corpus: dict[str, list[ChunkRecord]], retrieval: str
) -> None:
    rng = np.random.default_rng(11)
    fusion = Fusion(retrieval, depth=8)  # type: ignore[arg-type]
    k = 5
    for text in QUERIES:
        vector = rng.standard_normal(DIM).astype(np.float32)
        vector /= np.linalg.norm(vector)
        for name, store in stores.items():
            assert has_whole_documents(store), name
            want_docs, want_chunks = _reference(corpus, vector, text, fusion, k)
            sparse = [SparseEncoder().query(text)]
            docs = search_documents_hybrid(store, vector[None, :], sparse, k, SCORING, 2, fusion)[0]  # type: ignore[arg-type]
            assert [d.source for d in docs] == [d for d, _ in want_docs], f"{name}: {text!r}"
            np.testing.assert_allclose([d.score for d in docs], [s for _, s in want_docs], rtol=1e-4, atol=1e-5)
            assert all(d.chunks for d in docs), name  # every document comes with evidence
            chunks = search_chunks_hybrid(store, vector[None, :], sparse, k, fusion)[0]  # type: ignore[arg-type]
            assert [c.id for c in chunks] == [c for c, _ in want_chunks], f"{name}: {text!r}"
            np.testing.assert_allclose([c.score for c in chunks], [s for _, s in want_chunks], rtol=1e-4, atol=1e-5)


def test_a_dense_only_store_searches_dense_and_refuses_lexical(tmp_path: Path) -> None:
    records = _records()
    store = FaissStore(tmp_path / "dense", dimension=DIM, create=True)
    for source, rs in records.items():
        store.replace_source(source, f"sha-{source}", rs)
    vector = records["docs/meeting00.txt"][0].vector
    sparse = [SparseEncoder().query(QUERIES[0])]
    hybrid = search_documents_hybrid(store, vector[None, :], sparse, 3, SCORING, 1, Fusion())[0]  # type: ignore[arg-type]
    dense = search_documents_hybrid(store, vector[None, :], sparse, 3, SCORING, 1, Fusion("dense"))[0]  # type: ignore[arg-type]
    assert [(d.source, d.score) for d in hybrid] == [(d.source, d.score) for d in dense]
    with pytest.raises(ValueError, match="no lexical channel"):
        search_documents_hybrid(store, vector[None, :], sparse, 3, SCORING, 1, Fusion("lexical"))  # type: ignore[arg-type]
    store.close()


def test_fused_chunks_skip_keys_whose_records_are_gone() -> None:
    """A chunk deleted by a writer after the search (no record) is replaced by the next fused key, not dropped."""
    from tempscale_rag.ranking.hybrid import _fused_hits

    class Records:
        def __init__(self) -> None:
            self.asked: list[list[int]] = []

        def evidence_hits(self, keys: list[int]) -> dict[int, SearchHit]:
            self.asked.append(list(keys))
            return {key: SearchHit(str(key), 0.0, f"text {key}", "a.txt", key, 3, "b") for key in keys if key % 2}

    store = Records()
    fused = [(key, 10.0 - key) for key in range(10)]
    hits = _fused_hits(store, fused, 3)  # type: ignore[arg-type]
    assert [(h.id, h.score) for h in hits] == [("1", 9.0), ("3", 7.0), ("5", 5.0)]
    assert store.asked == [[0, 1, 2], [3, 4], [5]]  # only as many records as still wanted, never the whole list
    assert _fused_hits(store, fused[:2], 3) == [hits[0]]  # type: ignore[arg-type]
