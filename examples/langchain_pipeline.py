"""LangChain retrieval over examples/docs with TempScale embeddings (offline: bundled model, Qdrant local mode).

The documents are split with RecursiveCharacterTextSplitter, embedded by `TempScaleEmbeddings` and stored in an
in-memory Qdrant collection; a retriever then answers a few questions. Queries and documents can get their own
instructions and temperatures (`query_instruction`, `text_instruction`, `query_temperature`).

Run: python examples/langchain_pipeline.py
"""

from __future__ import annotations

from pathlib import Path

from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore
from langchain_tempscale import TempScaleEmbeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter

DOCS = Path(__file__).resolve().parent / "docs"
QUESTIONS = [
    "Who will own the migration of the billing service, and by when?",
    "How much notice is needed to terminate the supply agreement?",
    "How does lower seawater pH affect coral calcification?",
    "How long do I simmer the red lentils until they break down?",
    "How often should I oil my bike chain?",
]


def main() -> None:
    files = sorted(p for p in DOCS.iterdir() if p.suffix in {".md", ".txt"})
    documents = [Document(page_content=p.read_text(encoding="utf-8"), metadata={"source": p.name}) for p in files]
    chunks = RecursiveCharacterTextSplitter(chunk_size=600, chunk_overlap=60).split_documents(documents)

    embeddings = TempScaleEmbeddings(buckets="0-128:1.0,128-256:0.9,256-:0.8")
    print(f"model {embeddings.model_name}, {embeddings.dimension} dims, on {embeddings.encoder.device}")

    store = QdrantVectorStore.from_documents(chunks, embeddings, location=":memory:", collection_name="examples")
    report = embeddings.last_report
    print(
        f"{report.inputs} chunks from {len(files)} files embedded in {report.seconds:.2f} s, "
        f"{report.truncated_inputs} truncated; buckets: "
        + ", ".join(f"{b.bucket} tau={b.taus} x{b.inputs}" for b in report.buckets.values())
    )

    for question in QUESTIONS:
        (best, score), *_ = store.similarity_search_with_score(question, k=2)
        snippet = " ".join(best.page_content.split())[:110]
        print(f"\nQ: {question}\n  {score:.3f}  {best.metadata['source']}: {snippet}...")

    retriever = store.as_retriever(search_kwargs={"k": 1})
    answer = retriever.invoke("What happens to confidential information when the contract ends?")[0]
    print(f"\nretriever.invoke -> {answer.metadata['source']}: {' '.join(answer.page_content.split())[:110]}...")
    store.client.close()


if __name__ == "__main__":
    main()
