"""TempScaleSparseEmbeddings in langchain-qdrant's hybrid and sparse retrieval, end to end (Qdrant local mode)."""

from __future__ import annotations

import pytest
from langchain_qdrant import QdrantVectorStore, RetrievalMode, SparseVector
from langchain_tempscale import TempScaleEmbeddings, TempScaleSparseEmbeddings
from qdrant_client import QdrantClient, models

TEXTS = [
    "Either party may terminate the supply agreement with ninety days written notice.",
    "Part XK-4471 is the replacement gasket for the pump housing.",
    "Clean the bicycle chain with a degreaser, then apply one drop of lubricant per roller.",
    "Simmer the red lentils with cumin for twenty minutes.",
]


@pytest.fixture(scope="module")
def dense() -> TempScaleEmbeddings:
    return TempScaleEmbeddings(device="cpu")


def _store(mode: RetrievalMode, dense: TempScaleEmbeddings) -> QdrantVectorStore:
    client = QdrantClient(":memory:")
    client.create_collection(
        "docs",
        vectors_config={"dense": models.VectorParams(size=384, distance=models.Distance.COSINE)},
        sparse_vectors_config={"sparse": TempScaleSparseEmbeddings.qdrant_params()},  # type: ignore[dict-item]
    )
    store = QdrantVectorStore(
        client=client,
        collection_name="docs",
        embedding=dense if mode != RetrievalMode.SPARSE else None,
        sparse_embedding=TempScaleSparseEmbeddings(avg_len=12),
        retrieval_mode=mode,
        vector_name="dense",
        sparse_vector_name="sparse",
    )
    store.add_texts(TEXTS)
    return store


@pytest.mark.parametrize("mode", [RetrievalMode.SPARSE, RetrievalMode.HYBRID])
def test_an_exact_part_number_is_found(mode: RetrievalMode, dense: TempScaleEmbeddings) -> None:
    store = _store(mode, dense)
    assert store.similarity_search("xk-4471", k=1)[0].page_content == TEXTS[1]
    assert store.similarity_search("how much notice to terminate the agreement?", k=1)[0].page_content == TEXTS[0]


def test_vectors_are_langchain_sparse_vectors_with_unique_sorted_ids() -> None:
    sparse = TempScaleSparseEmbeddings()
    docs = sparse.embed_documents(["the chain chain needs oil", ""])
    assert all(isinstance(v, SparseVector) for v in docs)
    assert docs[0].indices == sorted(set(docs[0].indices)) and len(docs[0].indices) == 3
    assert docs[1] == SparseVector(indices=[], values=[])
    query = sparse.embed_query("chain chain")
    assert query.values == [2.0]


def test_non_text_is_refused() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        TempScaleSparseEmbeddings().embed_query(None)  # type: ignore[arg-type]
