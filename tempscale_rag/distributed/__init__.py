"""Scale-out on Ray: the same engine, the same stores and the same manifest, over many processes, GPUs and machines.

- `settings.py`: `RaySettings`, where the cluster is and how large the actor pool is (no Ray import).
- `cluster.py`: importing Ray lazily (the `[ray]` extra) and connecting to or starting a cluster.
- `embedding.py`: `EncoderActor` (one `TempScaleEncoder` per actor, loaded once), `RayEmbedder` (an actor pool that
  embeds batches of texts, fault tolerant) and `embed_dataset` (a vector column for a user's own `ray.data.Dataset`).
- `indexing.py`: `RayIndexer`, `FolderIndexer` spread over a cluster: reading and chunking as Ray tasks, embedding in
  the actor pool, one writer (the driver) committing to the store in batches. It builds the index the single-process
  `FolderIndexer` builds; `Index.index_folder(paths, ray=RaySettings())` and `tempscale-rag index --ray` use it.

Ray is an optional dependency: `pip install 'tempscale-rag[ray]'`. Nothing here imports it until it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tempscale_rag.distributed.settings import RaySettings

if TYPE_CHECKING:
    from tempscale_rag.distributed.embedding import EncoderActor, RayEmbedder, embed_dataset
    from tempscale_rag.distributed.indexing import RayIndexer

__all__ = ["EncoderActor", "RayEmbedder", "RayIndexer", "RaySettings", "embed_dataset"]

_LAZY = {
    "EncoderActor": "tempscale_rag.distributed.embedding",
    "RayEmbedder": "tempscale_rag.distributed.embedding",
    "embed_dataset": "tempscale_rag.distributed.embedding",
    "RayIndexer": "tempscale_rag.distributed.indexing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
