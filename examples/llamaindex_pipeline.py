"""LlamaIndex retrieval over examples/docs with TempScale embeddings (offline: bundled model, no LLM).

1. Whole documents in a VectorStoreIndex: LlamaIndex's default 1024-token chunks exceed MiniLM's 512-token window,
   and the embedding's `last_report` says how much was cut.
2. An IngestionPipeline (SentenceSplitter -> TempScaleEmbedding) into a FAISS inner-product index, then questions.

Run: python examples/llamaindex_pipeline.py
"""

from __future__ import annotations

from pathlib import Path

import faiss
from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.embeddings.tempscale import TempScaleEmbedding
from llama_index.vector_stores.faiss import FaissVectorStore

DOCS = Path(__file__).resolve().parent / "docs"
QUESTIONS = [
    "Who will own the migration of the billing service, and by when?",
    "How much notice is needed to terminate the supply agreement?",
    "How does lower seawater pH affect coral calcification?",
    "How long do I simmer the red lentils until they break down?",
    "How often should I oil my bike chain?",
]


def main() -> None:
    documents = SimpleDirectoryReader(str(DOCS)).load_data()
    for doc in documents:  # embed the text, not the absolute path LlamaIndex would prepend to it
        doc.excluded_embed_metadata_keys = [*doc.excluded_embed_metadata_keys, "file_path"]
    # Short texts (queries) keep tau = 1; longer ones get a lower temperature by token-length bucket.
    embed_model = TempScaleEmbedding(buckets="0-128:1.0,128-256:0.9,256-:0.8")
    print(f"model {embed_model.model_name}, {embed_model.dimension} dims, on {embed_model.encoder.device}")

    print("\n== 1. whole documents ==")
    index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)
    report = embed_model.last_report
    print(
        f"{report.inputs} documents, {report.truncated_inputs} longer than the {report.window}-token window "
        f"({report.dropped_tokens} tokens not embedded); buckets: "
        + ", ".join(f"{b.bucket} tau={b.taus} x{b.inputs}" for b in report.buckets.values())
    )
    retriever = index.as_retriever(similarity_top_k=1)
    for question in QUESTIONS:
        hit = retriever.retrieve(question)[0]
        print(f"  {hit.score:.3f}  {hit.node.metadata['file_name']:<34} <- {question}")

    print("\n== 2. IngestionPipeline (SentenceSplitter, 128-token chunks) -> FAISS ==")
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=16), embed_model])
    nodes = pipeline.run(documents=documents)
    report = embed_model.last_report
    print(f"{len(nodes)} chunks embedded, {report.truncated_inputs} truncated, {report.tokens} tokens")
    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(embed_model.dimension))
    index = VectorStoreIndex(
        nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model
    )
    retriever = index.as_retriever(similarity_top_k=1)
    for question in QUESTIONS:
        hit = retriever.retrieve(question)[0]
        snippet = " ".join(hit.node.get_content().split())[:110]
        print(f"\nQ: {question}\n  {hit.score:.3f}  {hit.node.metadata['file_name']}: {snippet}...")


if __name__ == "__main__":
    main()
