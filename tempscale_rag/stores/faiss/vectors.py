"""The in-memory FAISS index of a store: queued changes, rebuilds, the GPU search copy and raw searches.

The index is an `IndexIDMap` over an inner-product `IndexFlatIP` (exact) or `IndexHNSWFlat`; its ids are the chunks'
SQLite `vid`s. Changes are queued after each committed transaction and applied in batches at the next search or
commit. HNSW graphs cannot remove nodes, so a removal there means one rebuild from the database.

A flat index can be released (`release`): the store then writes only the database (and `vectors.faiss` from it,
streamed) and loads the index again at its next search. Indexing a big file releases it, so that the process never
holds the file's vectors (a 50 MB text file at the default four chunk sizes: about 600,000 vectors, 0.9 GB).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from tempscale_rag.stores.manifest import FaissSettings

# faiss GPU flat search supports k up to 2048.
_GPU_MAX_K = 2048


def faiss_gpu_count() -> int:
    """Number of GPUs the installed faiss can use (0 for faiss-cpu); checked at run time, never at import."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return int(get_num_gpus()) if callable(get_num_gpus) else 0


def resolve_gpu(use_gpu: bool | None, settings: FaissSettings) -> bool:
    """Whether to search on the GPU: `use_gpu` None means when available (faiss with GPUs, a flat index).

    Raises:
        ValueError: If `use_gpu` is True and the GPU cannot be used.
    """
    if use_gpu is False:
        return False
    available = faiss_gpu_count() > 0 and settings.index == "flat"
    if use_gpu and not available:
        raise ValueError(
            "use_gpu=True needs faiss with GPU support (a faiss-gpu package, faiss.get_num_gpus() > 0) and a "
            f"flat index; this faiss sees {faiss_gpu_count()} GPUs and the index is {settings.index!r}"
        )
    return available


def new_index(settings: FaissSettings, dimension: int) -> Any:
    """An empty `IndexIDMap` of the kind `settings` asks for."""
    inner: Any
    if settings.index == "flat":
        inner = faiss.IndexFlatIP(dimension)
    else:
        inner = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = settings.hnsw_ef_construction
        inner.hnsw.efSearch = settings.hnsw_ef_search
    return faiss.IndexIDMap(inner)


def loaded_index_problem(index: Any, settings: FaissSettings, dimension: int, count: int) -> str | None:
    """Why an index read from `vectors.faiss` does not fit the store (kind, metric, dimension, size), or None."""
    if not isinstance(index, faiss.IndexIDMap):
        return f"it holds a {type(index).__name__}, not an IndexIDMap"
    inner = faiss.downcast_index(index.index)
    expected = faiss.IndexFlatIP if settings.index == "flat" else faiss.IndexHNSWFlat
    if not isinstance(inner, expected) or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
        return f"it holds a {type(inner).__name__}, expected an inner-product {expected.__name__}"
    if index.d != dimension:
        return f"its dimension is {index.d}, expected {dimension}"
    if index.ntotal != count:
        return f"it holds {index.ntotal} vectors, the database {count}"
    return None


class FaissVectors:
    """A store's FAISS index with its queue of changes and, optionally, a GPU copy for searching.

    Args:
        index: The CPU index (the master).
        settings: The store's FAISS settings.
        rebuild: Builds a fresh index from the database (used after an HNSW removal).
        use_gpu: Search on all GPUs (flat indexes only).
    """

    def __init__(self, index: Any, settings: FaissSettings, rebuild: Callable[[], Any], *, use_gpu: bool) -> None:
        self.index = index
        self._settings = settings
        self._rebuild = rebuild
        self.use_gpu = use_gpu
        self._gpu_index: Any = None
        self._gpu_id_map: npt.NDArray[np.int64] | None = None
        self._pending_ids: list[npt.NDArray[np.int64]] = []
        self._pending_vectors: list[npt.NDArray[np.float32]] = []
        self._pending_removals: list[int] = []
        self._needs_rebuild = False
        self._released = False
        self._released_total = 0
        self.dimension = int(index.d)  # for writing vectors.faiss from the database while released

    @property
    def released(self) -> bool:
        """Whether the index was released (`release`): the store must `restore` one before using it."""
        return self._released

    @property
    def ntotal(self) -> int:
        """Vectors in the index (queued changes not applied); while released, in the database."""
        return self._released_total if self._released else int(self.index.ntotal)

    def release(self, total: int) -> None:
        """Drop the index and its queue: the database holds every change; `restore` gives it an index again.

        Args:
            total: The vectors in the database (`ntotal` while released).

        Raises:
            ValueError: If the index is not flat (an HNSW graph cannot be written without building it).
        """
        if self._settings.index != "flat":
            raise ValueError("only a flat index can be released")
        self.index = None
        self._released = True
        self._released_total = total
        self._needs_rebuild = False
        self._pending_ids.clear()
        self._pending_vectors.clear()
        self._pending_removals.clear()
        self._gpu_index = None
        self._gpu_id_map = None

    def count_released(self, added: int, removed: int) -> None:
        """While released: count a committed change of the database (nothing is kept of it)."""
        self._released_total += added - removed

    def restore(self, index: Any) -> None:
        """Use `index` (current with the database) after a `release`."""
        self.index = index
        self._released = False

    @property
    def gpu_index(self) -> Any:
        """The GPU copy searches go to, or None before the first GPU search (and after a change)."""
        return self._gpu_index

    def queue(self, removed: list[int], added_ids: list[int], added_vectors: list[npt.NDArray[np.float32]]) -> None:
        """Queue one committed transaction's changes (none while released: the index is loaded from the database)."""
        if self._released:
            self.count_released(len(added_ids), len(removed))
            return
        if removed:
            self._queue_removals(removed)
        if added_ids:
            self._pending_ids.append(np.asarray(added_ids, dtype=np.int64))
            self._pending_vectors.append(np.stack(added_vectors))

    def rebuild_later(self) -> None:
        """Rebuild the index from the database at the next search or commit (it missed part of a committed change)."""
        if self._released:
            return  # it is loaded from the database anyway
        self._needs_rebuild = True
        self._pending_ids.clear()
        self._pending_vectors.clear()
        self._pending_removals.clear()

    def _queue_removals(self, vids: list[int]) -> None:
        if self._settings.index == "hnsw":
            # HNSW graphs cannot remove nodes (faiss raises); rebuild once, at the next search or commit.
            self._needs_rebuild = True
            self._pending_ids.clear()
            self._pending_vectors.clear()
            return
        # Earlier additions go in first so that every queued removal refers to an id already in the index.
        self._flush_additions()
        self._pending_removals.extend(vids)

    def _flush_additions(self) -> None:
        if self._pending_ids and not self._needs_rebuild:
            self.index.add_with_ids(np.concatenate(self._pending_vectors), np.concatenate(self._pending_ids))
            self._gpu_index = None
        self._pending_ids.clear()
        self._pending_vectors.clear()

    def sync(self) -> None:
        """Apply queued removals and additions (or the pending rebuild) to the index.

        Raises:
            RuntimeError: If the index is released.
        """
        if self._released:
            raise RuntimeError("the FAISS index is released; restore it first")
        if self._needs_rebuild:
            self.index = self._rebuild()
            self._needs_rebuild = False
            self._pending_ids.clear()
            self._pending_vectors.clear()
            self._pending_removals.clear()
            self._gpu_index = None
            return
        if self._pending_removals:
            selector = faiss.IDSelectorBatch(np.asarray(self._pending_removals, dtype=np.int64))
            self.index.remove_ids(selector)
            self._pending_removals.clear()
            self._gpu_index = None
        self._flush_additions()

    def search(self, queries: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The `k` best ids (vids, -1 padded) and their scores per query, on the GPU copy when enabled."""
        if self.use_gpu and k <= _GPU_MAX_K:
            if self._gpu_index is None:
                self._gpu_index = faiss.index_cpu_to_all_gpus(faiss.downcast_index(self.index.index))
                self._gpu_id_map = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            scores, positions = self._gpu_index.search(queries, k)
            id_map = self._gpu_id_map
            if id_map is None:
                raise RuntimeError("GPU id map missing")
            ids = np.where(positions >= 0, id_map[np.clip(positions, 0, None)], -1)
            return scores, ids
        if self._settings.index == "hnsw":
            hnsw: Any = faiss.downcast_index(self.index.index)
            hnsw.hnsw.efSearch = max(self._settings.hnsw_ef_search, k)
        scores, ids = self.index.search(queries, k)
        return scores, ids

    def id_map(self) -> npt.NDArray[np.int64]:
        """The vid of each stored vector, in storage order."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def storage_matrix(self, dimension: int) -> npt.NDArray[np.float32]:
        """The vectors as an (ntotal, dimension) view (no copy), in storage order; valid until the index changes."""
        inner: Any = faiss.downcast_index(self.index.index)
        flat = inner if isinstance(inner, faiss.IndexFlat) else faiss.downcast_index(inner.storage)
        total = int(flat.ntotal)
        if total == 0:
            return np.zeros((0, dimension), dtype=np.float32)
        data = faiss.rev_swig_ptr(flat.get_xb(), total * dimension)  # type: ignore[attr-defined]
        return np.asarray(data).reshape(total, dimension)

    def drop_gpu_copy(self) -> None:
        """Release the GPU copy (the next GPU search makes a new one)."""
        self._gpu_index = None


def hnsw_summary(settings: FaissSettings) -> dict[str, Any]:
    """The HNSW parameters for `describe()` (`{"hnsw": {...}}`), empty for a flat index."""
    if settings.index != "hnsw":
        return {}
    return {
        "hnsw": {
            "m": settings.hnsw_m,
            "ef_construction": settings.hnsw_ef_construction,
            "ef_search": settings.hnsw_ef_search,
        }
    }
