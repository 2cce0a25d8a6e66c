"""A LangChain retriever over a tempscale-rag `Index` (offline: bundled model, FAISS).

`TempScaleEmbeddings` is an embedding class for LangChain's own vector stores (see `langchain_pipeline.py`). This
example goes the other way: the index that `tempscale-rag index` builds (every file chunked at several sizes, each
size at its own temperature, queries at the index's recorded query tau, documents ranked from their chunks) becomes a
LangChain `BaseRetriever`, so a chain gets exactly what `tempscale-rag search` returns.

Run: python examples/langchain_index_retriever.py [INDEX_FOLDER]
     (without a folder, examples/docs is indexed into a temporary folder first)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from tempscale_rag import Index

DOCS = Path(__file__).resolve().parent / "docs"
QUESTIONS = [
    "How much notice is needed to terminate the supply agreement?",
    "How often should I oil my bike chain?",
]


class TempScaleIndexRetriever(BaseRetriever):
    """Chunks (or, with `documents=True`, whole files) of a tempscale-rag `Index`, best first.

    Attributes:
        index: An open `Index`; queries are encoded with its recorded settings.
        k: How many results.
        documents: Rank files (`Index.search_documents`) instead of chunks (`Index.search`); each result's
            `page_content` is the file's best chunk.
    """

    index: Any
    k: int = 4
    documents: bool = False

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        if self.documents:
            return [
                Document(
                    page_content=doc.chunks[0].text if doc.chunks else "",
                    metadata={"source": doc.source, "score": doc.score, "chunks": [c.text for c in doc.chunks]},
                )
                for doc in self.index.search_documents(query, k=self.k)
            ]
        return [
            Document(
                page_content=hit.text,
                id=hit.id,
                metadata={
                    "source": hit.source,
                    "score": hit.score,
                    "position": hit.position,
                    "chunk_tokens": hit.metadata.get("chunk_tokens"),
                },
            )
            for hit in self.index.search(query, k=self.k)
        ]


def ask(index: Index) -> None:
    chunks = TempScaleIndexRetriever(index=index, k=2)
    files = TempScaleIndexRetriever(index=index, k=2, documents=True)
    for question in QUESTIONS:
        print(f"\nQ: {question}")
        for doc in chunks.invoke(question):
            print(
                f"  chunk {doc.metadata['score']:.3f}  {Path(doc.metadata['source']).name}: {doc.page_content[:90]!r}"
            )
        for doc in files.invoke(question):
            print(f"  file  {doc.metadata['score']:.3f}  {Path(doc.metadata['source']).name}")


def main(folder: str | None = None) -> None:
    if folder is not None:
        with Index.open(folder) as index:
            ask(index)
        return
    with tempfile.TemporaryDirectory() as tmp, Index.create(Path(tmp) / "index") as index:
        summary = index.index_folder([DOCS])
        print(f"indexed {summary.files_indexed} files, {summary.chunks} chunks")
        ask(index)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
