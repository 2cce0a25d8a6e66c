"""The lexical analyser, exact BM25 and score fusion (tempscale_rag.ranking.lexical / fusion)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tempscale_rag.ranking.fusion import RRF_K, fuse, fuse_arrays, normalise
from tempscale_rag.ranking.lexical import BM25Scorer, LexicalAnalyzer, word_windows


def test_analyser_lowercases_drops_stop_words_and_stems() -> None:
    terms = LexicalAnalyzer().terms("The Cats were RUNNING to the termination clauses, a b!")
    assert terms == ["cat", "were", "run", "termin", "claus"]


@pytest.mark.parametrize("text", ["", "   \n\t", "the and of", "🤖 !!! ... ---", "a b c"])
def test_texts_without_terms_give_none(text: str) -> None:
    assert LexicalAnalyzer().terms(text) == []


def test_other_scripts_are_tokenised_not_refused() -> None:
    assert LexicalAnalyzer().terms("Привет мир, это тест") == ["привет", "мир", "это", "тест"]
    assert LexicalAnalyzer().terms("東京は日本の首都です") != []


def test_analyser_rejects_non_text() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        LexicalAnalyzer().terms(None)  # type: ignore[arg-type]


def _lucene_bm25(query: list[str], docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Lucene's BM25 written out: idf = ln(1 + (N - df + .5) / (df + .5)) times tf / (tf + k1 (1 - b + b dl/avgdl))."""
    n = len(docs)
    avgdl = sum(map(len, docs)) / n
    out = []
    for doc in docs:
        total = 0.0
        for term in query:  # a repeated query term counts again, as in Lucene
            df = sum(term in d for d in docs)
            tf = doc.count(term)
            if tf == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            total += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        out.append(total)
    return out


def test_bm25_equals_the_lucene_formula() -> None:
    docs = [["cat", "sat", "mat"], ["dog", "dog", "ran"], ["cat", "dog"], ["bird"], []]
    scorer = BM25Scorer(docs)
    for query in (["cat"], ["dog"], ["cat", "dog"], ["dog", "dog", "bird"], ["zebra"]):
        np.testing.assert_allclose(scorer.scores(query), _lucene_bm25(query, docs), rtol=1e-5, atol=1e-6)
    assert not scorer.scores([]).any()


def test_word_windows_cover_the_text() -> None:
    text = " ".join(f"w{i}" for i in range(10))
    assert word_windows(text, 4) == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]
    assert word_windows("  ", 4) == [""]
    with pytest.raises(ValueError, match=">= 1"):
        word_windows(text, 0)


def test_dbsf_is_mean_minus_three_sd_over_six_sd() -> None:
    s = np.array([1.0, 2.0, 4.0, 9.0])
    mean, sd = s.mean(), s.std()
    np.testing.assert_allclose(normalise(s, "dbsf"), (s - (mean - 3 * sd)) / (6 * sd))
    np.testing.assert_allclose(normalise(s, "minmax"), (s - 1) / 8)
    np.testing.assert_allclose(normalise(s, "rrf"), 1 / (RRF_K + np.array([4, 3, 2, 1])))
    assert (normalise(np.ones(3), "dbsf") == 0.5).all()


def test_fusion_lets_each_channel_rescue_the_other() -> None:
    dense = np.array([0.60, 0.59, 0.58, 0.20])  # cosines: 0 and 1 near-tied
    lexical = np.array([0.0, 25.0, 1.0, 0.0])  # BM25: only 1 matches strongly
    fused = fuse_arrays([dense, lexical])
    assert int(np.argmax(fused)) == 1
    assert int(np.argmax(fuse_arrays([dense, lexical], weights=[1.0, 0.0]))) == 0


def test_fuse_by_key_gives_missing_candidates_the_list_minimum() -> None:
    fused = fuse([{"a": 0.9, "b": 0.5}, {"b": 12.0, "c": 3.0}], method="minmax")
    # a: dense 1, lexical floor (3 -> 0) = 1; b: 0 + 1 = 1; c: dense floor (0.5 -> 0) + 0 = 0
    assert fused == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.0})
    assert fuse([{}, {}]) == {}


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")]])
def test_bad_weights_are_refused(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        fuse_arrays([np.ones(2), np.ones(2)], weights=weights)


def test_unknown_method_and_ragged_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse_arrays([np.ones(2)], method="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one length"):
        fuse_arrays([np.ones(2), np.ones(3)])


def test_sparse_vectors_under_qdrant_idf_score_exactly_bm25() -> None:
    from qdrant_client import QdrantClient, models

    from tempscale_rag.ranking.lexical import SparseEncoder, qdrant_sparse_params

    texts = [
        "Either party may terminate the supply agreement with ninety days written notice.",
        "The supplier shall deliver the goods within thirty days of each purchase order.",
        "Termination for breach requires notice and thirty days to cure the breach.",
        "Simmer the lentils for twenty minutes, then add the cumin and the lemon.",
        "",
    ]
    analyzer = LexicalAnalyzer()
    terms = analyzer.terms_many(texts)
    encoder = SparseEncoder(avg_len=sum(map(len, terms)) / len(terms))
    client = QdrantClient(":memory:")
    client.create_collection("c", vectors_config={}, sparse_vectors_config={"bm25": qdrant_sparse_params()})
    client.upsert(
        "c",
        [
            models.PointStruct(id=i, vector={"bm25": models.SparseVector(indices=ids, values=values)})
            for i, (ids, values) in enumerate(map(encoder.document, texts))
        ],
    )
    reference = BM25Scorer(terms)
    for query in ("termination notice", "thirty days notice of breach", "lentils", "days days"):
        ids, values = encoder.query(query)
        hits = client.query_points(
            "c", query=models.SparseVector(indices=ids, values=values), using="bm25", limit=10
        ).points
        got = {hit.id: hit.score for hit in hits}
        expected = reference.scores(analyzer.terms(query))
        for i, score in enumerate(expected):
            assert got.get(i, 0.0) == pytest.approx(float(score), rel=1e-4, abs=1e-6), (query, i)


def test_sparse_encoder_validates_its_parameters() -> None:
    from tempscale_rag.ranking.lexical import SparseEncoder

    for kwargs in ({"avg_len": 0}, {"k1": float("nan")}, {"b": 1.5}):
        with pytest.raises(ValueError):
            SparseEncoder(**kwargs)  # type: ignore[arg-type]
    assert SparseEncoder().query("the of and") == ([], [])
