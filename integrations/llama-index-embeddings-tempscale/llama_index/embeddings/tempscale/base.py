"""`TempScaleEmbedding`: a LlamaIndex embedding model backed by the tempscale-rag engine.

The engine (`tempscale_rag.TempScaleEncoder`) tokenises, routes each text to an attention temperature by its token
length, batches by a padded-token budget and reports truncation. This class only maps LlamaIndex's calls onto it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import ConfigDict, Field
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent, EmbeddingStartEvent
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.utils import get_tqdm_iterable

from tempscale_rag import BUNDLED_MODEL, TempScaleEncoder
from tempscale_rag.adapters import EngineFields

DEFAULT_TEMPSCALE_BATCH_SIZE = 256
"""Texts per engine call on the CPU. High because the engine forms its own batches by tokens, whatever this slice is."""

DEFAULT_GPU_BATCH_SIZE = 65_536
"""Texts per engine call when the engine runs on a GPU. Every call ends with partial batches (one per temperature and
padded shape) and restarts the tokenizer pipeline: on an H200, 32,000 chunks took 2.12 s in four calls of 8,192 and
1.71 s in one. 65,536 mixed-length chunks are about 15M tokens, seconds of GPU work, so that tail costs a few percent
(`benchmarks/adapters_gpu.py`); an `IngestionPipeline` run usually fits in one call."""

dispatcher = get_dispatcher(__name__)


class TempScaleEmbedding(EngineFields, BaseEmbedding):
    """LlamaIndex embeddings with length-routed attention temperature (TempScale) on a sentence-transformers model.

    Every call goes to one `TempScaleEncoder`: it batches by tokens (so `embed_batch_size` only sets how many texts
    LlamaIndex hands over per call), gives each text the temperature of its token-length bucket, and reports what it
    truncated (`last_report`). The engine fields are frozen, because the engine is built from them once; for other
    settings build a new object, e.g. `TempScaleEmbedding.from_encoder(embedding.encoder, temperature=0.8)`, which
    shares the loaded model.

    Args:
        model_name: A sentence-transformers model name or local path; None for the bundled all-MiniLM-L6-v2.
        encoder: An already built engine whose loaded model should be shared instead of loading the model again. Used
            as is when the fields describe its configuration, else a variant of it with the fields' settings (sharing
            the model when `model_name`, `device` and `dtype` agree).
        **kwargs: The fields below, and `BaseEmbedding`'s (`embed_batch_size`, `callback_manager`, `num_workers`,
            `embeddings_cache`).

    Raises:
        ValueError: For an unknown field, an invalid configuration (tau <= 0 or NaN, overlapping or unsorted buckets,
            an unreadable calibration file) or a model that cannot be loaded.

    Examples:
        ```python
        from llama_index.core import Settings, VectorStoreIndex
        from llama_index.embeddings.tempscale import TempScaleEmbedding

        Settings.embed_model = TempScaleEmbedding(buckets="0-128:1.0,128-256:0.9,256-:0.8", device="cpu")
        index = VectorStoreIndex.from_documents(documents)
        ```
    """

    model_config = ConfigDict(extra="forbid")

    embed_batch_size: int = Field(
        default=DEFAULT_TEMPSCALE_BATCH_SIZE,
        gt=0,
        le=65536,
        description="Texts per engine call (default 256 on the CPU, 8192 when the engine runs on a GPU); the engine "
        "batches them by tokens, so a high value costs nothing.",
    )

    show_progress_bar: bool = Field(
        default=False, description="Show the engine's progress bar over forward batches on stderr."
    )

    def __init__(
        self, model_name: str | None = None, *, encoder: TempScaleEncoder | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model_name=BUNDLED_MODEL if model_name is None else model_name, **kwargs)
        self._attach_engine(encoder)
        if "embed_batch_size" not in kwargs and self._encoder.device.type == "cuda":
            # LlamaIndex hands over `embed_batch_size` texts per call: too few to keep a GPU busy at 256.
            self.embed_batch_size = DEFAULT_GPU_BATCH_SIZE

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex stores with serialised components."""
        return "TempScaleEmbedding"

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """Embed nodes, as a transformation of an `IngestionPipeline` does: `BaseEmbedding.__call__`'s flow.

        The one difference: each vector is set on its node without pydantic re-validating its floats (nodes validate
        assignments; that took 0.58 s per 32,000 MiniLM vectors on a laptop core, more than a third of what an H200
        takes to embed them). The vectors are lists of Python floats from the engine, what validation would produce.

        Args:
            nodes: The nodes; each one's `embedding` is set from its content in `MetadataMode.EMBED`.
            **kwargs: Passed to `get_text_embedding_batch` (e.g. `show_progress`).

        Returns:
            The same nodes.
        """
        embeddings = self.get_text_embedding_batch(
            [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes], **kwargs
        )
        for node, embedding in zip(nodes, embeddings, strict=True):
            node.__dict__["embedding"] = embedding
            node.__pydantic_fields_set__.add("embedding")
        return nodes

    @dispatcher.span
    def get_text_embedding_batch(self, texts: list[str], show_progress: bool = False, **kwargs: Any) -> list[Embedding]:
        """Embed `texts` in engine calls of `embed_batch_size`, with LlamaIndex's callback and instrumentation events.

        The same flow as `BaseEmbedding.get_text_embedding_batch` (rate limiter, embeddings cache, start/end events),
        except that the end event is built without pydantic re-validating every float of the vectors just made:
        validation cost about as much as the GPU forward pass itself (0.19 s per 8,192 MiniLM vectors on a laptop
        core), which held the LlamaIndex path to half the engine's speed on an H200.
        """
        results: list[Embedding] = []
        model_dict = self.to_payload()
        step = self.embed_batch_size
        starts = get_tqdm_iterable(range(0, len(texts), step), show_progress, "Generating embeddings")
        for start in starts:
            batch = list(texts[start : start + step])
            dispatcher.event(EmbeddingStartEvent(model_dict=model_dict))
            with self.callback_manager.event(
                CBEventType.EMBEDDING, payload={EventPayload.SERIALIZED: model_dict}
            ) as event:
                if self.rate_limiter is not None:
                    self.rate_limiter.acquire()
                if self.embeddings_cache is not None:
                    embeddings = self._get_text_embeddings_cached(batch)
                else:
                    embeddings = self._get_text_embeddings(batch)
                results.extend(embeddings)
                event.on_end(payload={EventPayload.CHUNKS: batch, EventPayload.EMBEDDINGS: embeddings})
            dispatcher.event(EmbeddingEndEvent.model_construct(chunks=batch, embeddings=embeddings))
        return results

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], query=True)[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], query=False)[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts, query=False)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    def _embed(self, texts: list[str], *, query: bool) -> list[Embedding]:
        return self._embed_lists(texts, query=query, show_progress=self.show_progress_bar)
