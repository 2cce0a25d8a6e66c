import numpy as np
import pytest

from tempscale_rag.ranking.documents import (
    DOC_SCORES,
    ChunkGroups,
    DocumentScoring,
    group_vectors,
    score_documents,
)

from .conftest import reference_group_score


def _reference(docs, sizes, vectors, query, scoring):
    """Brute force: loops over documents and sizes, straight from the definitions."""
    out = {}
    for d in dict.fromkeys(docs):
        per_size = []
        for s in sorted({s for dd, s in zip(docs, sizes, strict=True) if dd == d}):
            idx = [i for i, (dd, ss) in enumerate(zip(docs, sizes, strict=True)) if dd == d and ss == s]
            per_size.append(reference_group_score(scoring, query, vectors[idx]))
        out[d] = sum(per_size) / len(per_size)
    return out


@pytest.mark.parametrize("method", DOC_SCORES)
def test_score_documents_matches_brute_force(method):
    rng = np.random.default_rng(0)
    n = 200
    docs = [f"doc{int(i)}" for i in rng.integers(0, 17, n)]
    sizes = [int(s) for s in rng.choice([64, 128, 256], n)]
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.normal(size=(3, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scoring = DocumentScoring(method=method, top_m=3, softmax_temperature=0.1)
    groups = ChunkGroups.build(docs, sizes)
    chunk_scores = queries @ vectors.T
    group_scores = queries @ group_vectors(vectors, groups).T
    got = score_documents(chunk_scores, groups, scoring, group_scores)
    assert got.shape == (3, groups.n_documents)
    for q in range(3):
        ref = _reference(docs, sizes, vectors, queries[q], scoring)
        for j, d in enumerate(groups.documents):
            assert got[q, j] == pytest.approx(ref[d], abs=1e-5), (method, d)


def test_single_size_max_is_best_chunk():
    groups = ChunkGroups.build(["a", "b", "a", "b"])
    got = score_documents(np.array([0.1, 0.5, 0.7, 0.2]), groups)
    assert groups.documents == ["a", "b"]
    np.testing.assert_allclose(got, [[0.7, 0.5]])


def test_mean_needs_group_scores_and_names_are_checked():
    groups = ChunkGroups.build(["a"])
    with pytest.raises(ValueError, match="mean vectors"):
        score_documents(np.array([0.3]), groups, DocumentScoring("mean"))
    with pytest.raises(ValueError, match="unknown document score"):
        DocumentScoring("best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_m"):
        DocumentScoring("topm", top_m=0)
    with pytest.raises(ValueError, match="softmax_temperature"):
        DocumentScoring("softmax", softmax_temperature=float("nan"))
    with pytest.raises(ValueError, match="no chunks"):
        ChunkGroups.build([])
