"""Which channels an index searches with, and giving a dense-only index its lexical channel (`Index`'s helpers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import ChunkingConfig, LexicalSettings
from tempscale_rag.ranking.hybrid import Fusion, check_retrieval, has_lexical
from tempscale_rag.ranking.lexical import SparseEncoder, SparseVector
from tempscale_rag.stores import IndexManifest, ManifestKeeper, VectorStore, write_manifest


def fusion_in_force(
    manifest: IndexManifest, store: VectorStore, retrieval: str | None, query: str | npt.ArrayLike, folder: Path
) -> Fusion:
    """The index's fusion settings with `retrieval` (None: the recorded one) in force.

    Hybrid search falls back to dense where lexical search cannot run: an index without a lexical channel, or a
    vector query (it has no terms).

    Raises:
        ValueError: For an unknown `retrieval`, or `lexical` on an index without the channel or with a vector query.
    """
    chunking = manifest.chunking or ChunkingConfig(retrieval="dense")
    wanted = check_retrieval(retrieval) if retrieval is not None else chunking.retrieval
    lexical = has_lexical(store)
    if wanted == "lexical" and not lexical:
        raise ValueError(
            f"the index at {folder} has no lexical channel (it was built before hybrid retrieval, or dense only): "
            "search it dense or hybrid, or add the channel with `tempscale-rag index --add-lexical`"
        )
    if wanted == "lexical" and not isinstance(query, str):
        raise ValueError("lexical search needs a text query, not a vector")
    if wanted == "hybrid" and (not lexical or not isinstance(query, str)):
        wanted = "dense"
    return Fusion(wanted, chunking.fusion, chunking.lexical_weight, chunking.fusion_depth)


def hybrid_inputs(
    manifest: IndexManifest,
    store: VectorStore,
    folder: Path,
    query: str | npt.ArrayLike,
    retrieval: str | None,
    encode: Callable[[str | npt.ArrayLike], npt.NDArray[np.float32]],
) -> tuple[Fusion, npt.NDArray[np.float32], list[SparseVector]]:
    """The fusion in force (`fusion_in_force`), the query as a (1, dimension) vector and as a sparse query.

    Lexical search loads no model: its vector is zeros. A vector query has no sparse form (its list is empty).

    Raises:
        ValueError: For an empty text query, and as `fusion_in_force`.
    """
    fusion = fusion_in_force(manifest, store, retrieval, query, folder)
    if isinstance(query, str) and not query.strip():
        raise ValueError("the query is empty; give some text to search for")
    if fusion.retrieval == "lexical":
        vector = np.zeros((1, manifest.dimension), dtype=np.float32)
    else:
        vector = encode(query)[None, :]
    sparse = [SparseEncoder().query(query)] if isinstance(query, str) else [([], [])]
    return fusion, vector, sparse


def add_lexical_channel(
    store: VectorStore, manifest: IndexManifest, folder: Path, settings: LexicalSettings | None
) -> LexicalSettings:
    """`Index.add_lexical` for an index without a channel: the store builds it, then the manifest records it.

    Raises:
        ValueError: If the index records no chunk sizes, `settings` names a size it does not have, or the backend
            cannot add a channel.
    """
    if manifest.chunking is None:
        raise ValueError(
            f"the index at {folder} records no chunk sizes (it predates them): rebuild it to search it hybrid"
        )
    settings = settings or LexicalSettings.for_chunks(max(manifest.chunking.sizes))
    if settings.chunk_size not in manifest.chunking.sizes:
        raise ValueError(
            f"the index has no chunks of size {settings.chunk_size} (its sizes are "
            f"{','.join(map(str, manifest.chunking.sizes))})"
        )
    adder: Any = getattr(store, "add_lexical", None)
    if not callable(adder):
        raise ValueError(
            f"a {type(store).__name__} cannot add a lexical channel to an existing index: rebuild the index"
        )
    adder(settings)
    keeper = store.owner
    if isinstance(keeper, ManifestKeeper):
        # The store holds the channel first: a crash before this line leaves a dense manifest, and a re-run builds
        # the channel again.
        keeper.manifest = keeper.manifest.model_copy(update={"lexical": settings}).touched()
        write_manifest(folder, keeper.manifest)
    return settings
