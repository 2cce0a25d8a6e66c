"""A LlamaIndex retriever over a tempscale-rag `Index` (offline: bundled model, FAISS, no LLM).

`TempScaleEmbedding` is an embedding class for LlamaIndex's own indexes (see `llamaindex_pipeline.py`). This example
goes the other way: the index that `tempscale-rag index` builds (every file chunked at several sizes, each size at
its own temperature, queries at the index's recorded query tau, documents ranked from their chunks) becomes a
LlamaIndex `BaseRetriever`, usable in a `RetrieverQueryEngine` or any pipeline that takes a retriever.

Run: python examples/llamaindex_index_retriever.py [INDEX_FOLDER]
     (without a folder, examples/docs is indexed into a temporary folder first)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from tempscale_rag import Index

DOCS = Path(__file__).resolve().parent / "docs"
QUESTIONS = [
    "How does lower seawater pH affect coral calcification?",
    "How long do I simmer the red lentils until they break down?",
]


class TempScaleIndexRetriever(BaseRetriever):
    """Chunks (or, with `documents=True`, whole files) of a tempscale-rag `Index`, best first.

    Args:
        index: An open `Index`; queries are encoded with its recorded settings.
        k: How many results.
        documents: Rank files (`Index.search_documents`) instead of chunks (`Index.search`); each node's text is the
            file's best chunk.
    """

    def __init__(self, index: Index, k: int = 4, documents: bool = False) -> None:
        self._index = index
        self._k = k
        self._documents = documents
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = query_bundle.query_str
        if self._documents:
            return [
                NodeWithScore(
                    node=TextNode(
                        text=doc.chunks[0].text if doc.chunks else "",
                        metadata={"source": doc.source, "chunks": len(doc.chunks)},
                    ),
                    score=doc.score,
                )
                for doc in self._index.search_documents(query, k=self._k)
            ]
        return [
            NodeWithScore(
                node=TextNode(
                    id_=hit.id,
                    text=hit.text,
                    metadata={
                        "source": hit.source,
                        "position": hit.position,
                        "chunk_tokens": hit.metadata.get("chunk_tokens"),
                    },
                ),
                score=hit.score,
            )
            for hit in self._index.search(query, k=self._k)
        ]


def ask(index: Index) -> None:
    chunks = TempScaleIndexRetriever(index, k=2)
    files = TempScaleIndexRetriever(index, k=2, documents=True)
    for question in QUESTIONS:
        print(f"\nQ: {question}")
        for hit in chunks.retrieve(question):
            print(f"  chunk {hit.score:.3f}  {Path(hit.node.metadata['source']).name}: {hit.node.get_content()[:90]!r}")
        for hit in files.retrieve(question):
            print(f"  file  {hit.score:.3f}  {Path(hit.node.metadata['source']).name}")


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
