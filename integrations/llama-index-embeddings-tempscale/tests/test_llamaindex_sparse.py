"""TempScaleSparseEncoder in LlamaIndex's QdrantVectorStore(enable_hybrid=True), end to end (Qdrant local mode)."""

from __future__ import annotations

from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.embeddings.tempscale import TempScaleEmbedding, TempScaleSparseEncoder
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

TEXTS = [
    "Either party may terminate the supply agreement with ninety days written notice.",
    "Part XK-4471 is the replacement gasket for the pump housing.",
    "Clean the bicycle chain with a degreaser, then apply one drop of lubricant per roller.",
    "Simmer the red lentils with cumin for twenty minutes.",
]


def test_hybrid_query_finds_an_exact_part_number_and_a_paraphrase() -> None:
    sparse = TempScaleSparseEncoder(avg_len=12)
    store = QdrantVectorStore(
        client=QdrantClient(":memory:"),
        collection_name="docs",
        enable_hybrid=True,
        sparse_doc_fn=sparse.documents,
        sparse_query_fn=sparse.queries,
        sparse_config=sparse.qdrant_params(),
    )
    index = VectorStoreIndex(
        [TextNode(text=t) for t in TEXTS],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=TempScaleEmbedding(device="cpu"),
    )
    retriever = index.as_retriever(similarity_top_k=1, sparse_top_k=2, vector_store_query_mode="hybrid")
    assert retriever.retrieve("xk-4471")[0].node.get_content() == TEXTS[1]
    assert retriever.retrieve("how much notice to terminate the agreement?")[0].node.get_content() == TEXTS[0]
    # The sparse channel alone (BM25 through Qdrant's IDF modifier) ranks by the exact term.
    sparse_only = index.as_retriever(similarity_top_k=1, sparse_top_k=1, vector_store_query_mode="sparse")
    assert sparse_only.retrieve("gasket")[0].node.get_content() == TEXTS[1]
    assert sparse_only.retrieve("lentils")[0].node.get_content() == TEXTS[3]
    info = store.client.get_collection("docs")
    assert info.config.params.sparse_vectors is not None
    assert all(p.modifier is not None for p in info.config.params.sparse_vectors.values())


def test_encoder_returns_llamaindex_columns() -> None:
    ids, values = TempScaleSparseEncoder().documents(["chain oil", "the of"])
    assert len(ids) == len(values) == 2 and ids[1] == [] and len(ids[0]) == 2
