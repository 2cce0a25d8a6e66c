"""`TempScaleEmbeddings`: LangChain embeddings backed by the tempscale-rag engine.

The engine (`tempscale_rag.TempScaleEncoder`) tokenises, routes each text to an attention temperature by its token
length, batches by a padded-token budget and reports truncation. This class only maps LangChain's calls onto it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field, PrivateAttr

from tempscale_rag import BUNDLED_MODEL, EncodeReport, TempScaleConfig, TempScaleEncoder
from tempscale_rag.adapters import EngineFields, engine_for, fields_from_engine


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

    _encoder: TempScaleEncoder = PrivateAttr()
    _last_report: EncodeReport = PrivateAttr()

    def __init__(self, *, encoder: TempScaleEncoder | None = None, **kwargs: Any) -> None:
        if kwargs.get("model_name", "") is None:
            kwargs["model_name"] = BUNDLED_MODEL
        super().__init__(**kwargs)
        self._encoder = engine_for(self.engine_config(), encoder)
        self._last_report = EncodeReport(window=self._encoder.window, long_text=self._encoder.config.long_text)

    @classmethod
    def from_encoder(cls, encoder: TempScaleEncoder, **kwargs: Any) -> TempScaleEmbeddings:
        """Wrap an already built engine, sharing its loaded model.

        The engine's configuration becomes this object's fields, so `model_dump()` records exactly what it does.

        Args:
            encoder: The engine to use.
            **kwargs: Other fields. Engine fields given here (e.g. `temperature=0.8`) make a variant of the engine
                that still shares its loaded model.

        Returns:
            The embeddings object.
        """
        fields = fields_from_engine(encoder)
        # A new bucket source replaces the engine's: new buckets are not from its calibration file, and a new
        # calibration file must not be overridden by the engine's explicit buckets.
        if "buckets" in kwargs and "calibration_file" not in kwargs:
            fields["calibration_file"] = None
        if "calibration_file" in kwargs and "buckets" not in kwargs:
            fields["buckets"] = None
        fields.update(kwargs)
        return cls(encoder=encoder, **fields)

    @property
    def encoder(self) -> TempScaleEncoder:
        """The engine that computes the vectors (share it with `from_encoder`)."""
        return self._encoder

    @property
    def config(self) -> TempScaleConfig:
        """The resolved engine configuration (buckets from the calibration file included)."""
        return self._encoder.config

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return self._encoder.dimension

    @property
    def last_report(self) -> EncodeReport:
        """Routing and truncation report of this object's last call (`.to_dict()` for JSON)."""
        return self._last_report

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
        # encode_with_report returns this call's report, so concurrent async calls cannot swap reports.
        vectors, self._last_report = self._encoder.encode_with_report(
            texts, query=query, show_progress=self.show_progress
        )
        result: list[list[float]] = vectors.tolist()
        return result

