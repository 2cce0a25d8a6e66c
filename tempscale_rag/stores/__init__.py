"""Vector stores for tempscale-rag indexes: one interface (`VectorStore`), one package per backend.

Stores do storage and chunk search; document ranking lives in `tempscale_rag.ranking`, which drives every backend.

- `base.py`: `VectorStore`, the records (`ChunkRecord`, `SearchHit`, `DocumentHit`) and the input checks.
- `errors.py`: the errors.
- `manifest.py`: `IndexManifest` (model, dimension, config, backend) and the compatibility policy.
- `faiss/`: `FaissStore`, the embedded default (SQLite + a derived FAISS index), and its repair.
- `qdrant/`: `QdrantStore`, a Qdrant server or qdrant-client's local mode; `EdgeStore`, embedded Qdrant Edge.

Use `open_store` to get a store with its manifest checked and maintained::

    manifest = IndexManifest.new(model=name, dimension=384, config=config)      # FAISS flat by default
    with open_store("tempscale-index", manifest) as store:                      # creates or reopens for writing
        if store.sources().get(path) != fingerprint:
            store.replace_source(path, fingerprint, records)

    with open_store("tempscale-index", read_only=True) as store:                # searching
        check_compatible(manifest_of(store), name, 384, where="tempscale-index")
        hits = store.search(query_vector, k=10)

The backends are imported on first use, so importing this package loads neither faiss nor qdrant-client.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempscale_rag.stores.base import ChunkRecord, DocumentHit, ProgressCallback, SearchHit, VectorStore, make_chunk_id
from tempscale_rag.stores.errors import (
    IndexCorruptError,
    IndexMismatchError,
    IndexNotFoundError,
    StoreUnavailableError,
)
from tempscale_rag.stores.manifest import (
    MANIFEST_NAME,
    FaissSettings,
    IndexConfigWarning,
    IndexManifest,
    QdrantSettings,
    check_compatible,
    check_config_compatible,
    check_manifest_matches,
    manifest_path,
    read_manifest,
    write_manifest,
)

if TYPE_CHECKING:
    from tempscale_rag.stores.faiss import FaissStore
    from tempscale_rag.stores.qdrant import QdrantStore

__all__ = [
    "MANIFEST_NAME",
    "ChunkRecord",
    "DocumentHit",
    "FaissSettings",
    "FaissStore",
    "IndexConfigWarning",
    "IndexCorruptError",
    "IndexManifest",
    "IndexMismatchError",
    "IndexNotFoundError",
    "ManifestKeeper",
    "ProgressCallback",
    "QdrantSettings",
    "QdrantStore",
    "SearchHit",
    "StoreUnavailableError",
    "VectorStore",
    "check_compatible",
    "check_config_compatible",
    "check_manifest_matches",
    "make_chunk_id",
    "manifest_of",
    "open_store",
    "read_manifest",
    "write_manifest",
]

logger = logging.getLogger(__name__)

_LAZY = {
    "FaissStore": "tempscale_rag.stores.faiss",
    "QdrantStore": "tempscale_rag.stores.qdrant",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ManifestKeeper:
    """The owner `open_store` gives a store: keeps `manifest.json` current and adds its fields to `describe()`.

    Args:
        folder: The index folder.
        manifest: The index's manifest.
    """

    def __init__(self, folder: Path, manifest: IndexManifest) -> None:
        self.folder = folder
        self.manifest = manifest

    def committed(self) -> None:
        """Refresh the manifest's `updated_at` (atomically rewritten)."""
        self.manifest = self.manifest.touched()
        write_manifest(self.folder, self.manifest)

    def describe(self) -> dict[str, Any]:
        """The manifest fields worth showing in `describe()`."""
        return {
            "model": self.manifest.model,
            "created_at": self.manifest.created_at.isoformat(),
            "updated_at": self.manifest.updated_at.isoformat(),
            "package_version": self.manifest.package_version,
        }


def manifest_of(store: VectorStore) -> IndexManifest:
    """The manifest of the index folder `store` was opened for by `open_store` (kept current by its commits).

    Raises:
        ValueError: If `store` was not opened by `open_store`.
    """
    owner = store.owner
    if not isinstance(owner, ManifestKeeper):
        raise ValueError(f"this {type(store).__name__} was not opened with open_store: it has no index manifest")
    return owner.manifest


def open_store(
    folder: str | Path,
    manifest: IndexManifest | None = None,
    *,
    read_only: bool = False,
    create: bool = True,
    api_key: str | None = None,
    timeout: float = 10.0,
    batch_size: int = 256,
    retries: int = 3,
    use_gpu: bool | None = None,
    progress: ProgressCallback | None = None,
) -> VectorStore:
    """Open the index in `folder`, or create it, with its manifest checked before anything is touched.

    - `folder` holds a manifest: it is read (a missing backend file or a corrupt one raises), and when `manifest` is
      given, the request is checked against it with `check_manifest_matches` (model, dimension, store, backend
      identity, embedding settings); then the store described by the *stored* manifest is opened.
    - `folder` holds no manifest and `manifest` is given (writable, `create`): a new index is made. The folder must
      be missing or empty. For FAISS and local Qdrant the manifest is written first; for a Qdrant server the
      collection is created (and must be empty) first, so an unreachable server leaves no folder behind.
    - otherwise `IndexNotFoundError`.

    Writable stores update `manifest.json`'s `updated_at` on `commit()`/`close()` (through a `ManifestKeeper`, the
    store's `owner`).

    Args:
        folder: The index folder (holds `manifest.json`, and the data of FAISS and local Qdrant indexes).
        manifest: The index wanted (from `IndexManifest.new`); None opens whatever index is there.
        read_only: Open for searching only.
        create: Allow creating a new index.
        api_key: Qdrant server API key; defaults to the `QDRANT_API_KEY` environment variable. Never stored.
        timeout: Qdrant request timeout in seconds.
        batch_size: Qdrant points per upsert request.
        retries: Qdrant retries after a network failure.
        use_gpu: FAISS GPU use (None: when available, see `FaissStore`).
        progress: Called as `progress(done, total)` during Qdrant uploads.

    Returns:
        The store; `manifest_of(store)` is the index's manifest.

    Raises:
        IndexNotFoundError: No index in `folder` and none may be created.
        IndexCorruptError: The manifest or the store files are unreadable, or `folder` is a non-empty non-index.
        IndexMismatchError: The index differs from `manifest` in a refused way.
        StoreUnavailableError: The Qdrant server is unreachable or the index is locked by another writer.
    """
    folder = Path(folder)
    qdrant_options: dict[str, Any] = {
        "api_key": api_key if api_key is not None else os.environ.get("QDRANT_API_KEY") or None,
        "timeout": timeout,
        "batch_size": batch_size,
        "retries": retries,
        "progress": progress,
    }
    if manifest_path(folder).exists():
        stored = read_manifest(folder)
        if manifest is not None:
            check_manifest_matches(stored, manifest, writing=not read_only, where=folder)
        store = _open_backend(
            folder, stored, read_only=read_only, use_gpu=use_gpu, qdrant_options=qdrant_options, new=False
        )
        store.set_owner(ManifestKeeper(folder, stored))
        return store
    if manifest is None or read_only or not create:
        read_manifest(folder)  # raises IndexNotFoundError with the standard message
        raise IndexNotFoundError(f"{folder} is not a tempscale-rag index")  # pragma: no cover - read_manifest raised
    return _create(folder, manifest, use_gpu=use_gpu, qdrant_options=qdrant_options)


def _create(
    folder: Path, manifest: IndexManifest, *, use_gpu: bool | None, qdrant_options: dict[str, Any]
) -> VectorStore:
    """A new index in `folder` (see `open_store`)."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise IndexCorruptError(
            f"{folder} is not empty and holds no {MANIFEST_NAME}, so it is not a tempscale-rag index; "
            "a new index is only written into a new or empty folder: pick one with --out"
        )
    backend = manifest.backend
    remote = backend if isinstance(backend, QdrantSettings) and backend.url is not None else None
    if remote is None:
        folder.mkdir(parents=True, exist_ok=True)
        write_manifest(folder, manifest)
    store = _open_backend(folder, manifest, read_only=False, use_gpu=use_gpu, qdrant_options=qdrant_options, new=True)
    if remote is not None:
        try:
            existing = store.count()
            if existing:
                raise IndexMismatchError(
                    f"Qdrant collection {remote.collection!r} at {remote.url} "
                    f"already holds {existing} chunks that no manifest in {folder} describes: pick another "
                    "--collection, or delete that collection"
                )
            folder.mkdir(parents=True, exist_ok=True)
            write_manifest(folder, manifest)
        except BaseException:
            store.close(commit=False)
            raise
    store.set_owner(ManifestKeeper(folder, manifest))
    return store


def _open_backend(
    folder: Path,
    manifest: IndexManifest,
    *,
    read_only: bool,
    use_gpu: bool | None,
    qdrant_options: dict[str, Any],
    new: bool,
) -> VectorStore:
    backend = manifest.backend
    if isinstance(backend, FaissSettings):
        from tempscale_rag.stores.faiss import DB_NAME, FaissStore

        if not new and not read_only and not (folder / DB_NAME).exists():
            # Only an interrupted creation (manifest written, database not yet) or a deleted database lead here.
            logger.warning("index at %s has a manifest but no %s; starting an empty store there", folder, DB_NAME)
        return FaissStore(
            folder,
            dimension=manifest.dimension,
            settings=backend,
            create=not read_only,
            read_only=read_only,
            use_gpu=use_gpu,
            lexical=manifest.lexical,
        )
    if backend.url is None and backend.engine == "edge":
        from tempscale_rag.stores.qdrant.edge import EdgeStore

        return EdgeStore(
            dimension=manifest.dimension,
            path=str(backend.local_path(folder)),
            collection=backend.collection,
            distance=backend.distance,
            batch_size=qdrant_options["batch_size"],
            create=not read_only,
            read_only=read_only,
            progress=qdrant_options["progress"],
            lexical=manifest.lexical,
        )
    from tempscale_rag.stores.qdrant import QdrantStore

    return QdrantStore(
        dimension=manifest.dimension,
        collection=backend.collection,
        url=backend.url,
        path=backend.local_path(folder),
        distance=backend.distance,
        create=not read_only,
        read_only=read_only,
        lexical=manifest.lexical,
        **qdrant_options,
    )
