"""`TempScaleEmbeddings`: LangChain embeddings backed by the tempscale-rag engine.

The engine (`tempscale_rag.TempScaleEncoder`) tokenises, routes each text to an attention temperature by its token
length, batches by a padded-token budget and reports truncation. This class only maps LangChain's calls onto it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field

from tempscale_rag import BUNDLED_MODEL, TempScaleEncoder
from tempscale_rag.adapters import EngineFields


class TempScaleEmbeddings(EngineFields, Embeddings):
    """LangChain embeddings with length-routed attention temperature (TempScale) on a sentence-transformers model.

    Every call goes to one `TempScaleEncoder`, loaded once when this object is built: it batches by tokens, gives each
    text the temperature of its token-length bucket, and reports what it truncated (`last_report`). The engine fields
    are frozen, because the engine is built from them once; for other settings build a new object, e.g.
    `TempScaleEmbeddings.from_encoder(embeddings.encoder, temperature=0.8)`, which shares the loaded model.

    Args:
        encoder: An already built engine whose loaded model should be shared instead of loading the model again. Used
            as is when the fields describe its configuration, else a variant of it with the fields' settings (sharing
            the model when `model_name`, `device` and `dtype` agree).
        **kwargs: The fields below.

    Raises:
        ValueError: For an unknown field, an invalid configuration (tau <= 0 or NaN, overlapping or unsorted buckets,
            an unreadable calibration file) or a model that cannot be loaded.

    Examples:
        ```python
        from langchain_qdrant import QdrantVectorStore
        from langchain_tempscale import TempScaleEmbeddings

        embeddings = TempScaleEmbeddings(buckets="0-128:1.0,128-256:0.9,256-:0.8", device="cpu")
        store = QdrantVectorStore.from_texts(texts, embeddings, location=":memory:", collection_name="docs")
        store.similarity_search("what is the notice period?", k=1)
        ```
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    show_progress: bool = Field(default=False, description="Show the engine's progress bar over forward batches.")

    def __init__(self, *, encoder: TempScaleEncoder | None = None, **kwargs: Any) -> None:
        if kwargs.get("model_name", "") is None:
            kwargs["model_name"] = BUNDLED_MODEL
        super().__init__(**kwargs)
        self._attach_engine(encoder)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (`text_instruction` prepended), in input order.

        Args:
            texts: The documents. The whole list goes to the engine, which batches it by tokens.

        Returns:
            One list of floats per document.
        """
        return self._embed(texts, query=False)

    def embed_query(self, text: str) -> list[float]:
        """Embed a query (`query_instruction` prepended, `query_temperature` applied when set).

        Args:
            text: The query.

        Returns:
            Its vector as a list of floats.
        """
        return self._embed([text], query=True)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents in a worker thread, so the event loop keeps running.

        Args:
            texts: The documents.

        Returns:
            One list of floats per document.
        """
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Embed a query in a worker thread, so the event loop keeps running.

        Args:
            text: The query.

        Returns:
            Its vector as a list of floats.
        """
        return await asyncio.to_thread(self.embed_query, text)

    def _embed(self, texts: list[str], *, query: bool) -> list[list[float]]:
        return self._embed_lists(texts, query=query, show_progress=self.show_progress)
