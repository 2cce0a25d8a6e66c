"""Move an embedded Qdrant index (Qdrant Edge, or qdrant-client's local mode) to a Qdrant server without re-embedding.

An embedded index stores exactly what a server index stores (`points.py`): the same three collections, point ids,
payloads, dense vectors, `bm25` sparse vectors and document points. `upload_index` opens the embedded index read-only,
creates the server index through `open_store` (so the collections get the schema `tempscale-rag index --qdrant-url`
gives them: vector size and distance, the `bm25` vector with the IDF modifier, the `source` payload index) and copies
every point by id, vectors and payloads as stored. The new index folder holds a manifest that is the old one with the
server as its backend, so `tempscale-rag search --out NEW_FOLDER` (or `Index.open(NEW_FOLDER)`) searches the server.

Order and re-runs: chunks first, then document points, then the sources' fingerprint points, so the server index never
vouches for a source whose chunks are not all there. Upserts by id are idempotent: an interrupted upload is finished
by running it again with the same arguments (the new folder's manifest then matches and the copy goes on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from qdrant_client import models

from tempscale_rag.stores import open_store
from tempscale_rag.stores.errors import IndexMismatchError
from tempscale_rag.stores.manifest import QdrantSettings, read_manifest
from tempscale_rag.stores.qdrant.connection import SCROLL_PAGE
from tempscale_rag.stores.qdrant.store import QdrantStore

UploadProgress = Callable[[str, int, int], None]
"""Called as `progress(what, done, total)` after each uploaded batch; `what` is "chunks", "documents" or "sources"."""


@dataclass(frozen=True)
class UploadReport:
    """What `upload_index` copied, and where.

    Attributes:
        folder: The new index folder (its manifest names the server and collection).
        location: The server URL (or the local-mode folder the copy went to).
        collection: The chunk collection (`<collection>__sources` and `<collection>__documents` beside it).
        chunks: Chunks copied (dense vectors, and the `bm25` sparse vector where the chunk has one).
        lexical_chunks: Chunks carrying the `bm25` vector; None for an index without the lexical channel.
        documents: Document points copied.
        sources: Files the new index vouches for (with their fingerprints).
    """

    folder: Path
    location: str
    collection: str
    chunks: int
    lexical_chunks: int | None
    documents: int
    sources: int


def upload_index(
    source: str | Path,
    target: str | Path,
    *,
    url: str | None = None,
    path: str | Path | None = None,
    collection: str | None = None,
    api_key: str | None = None,
    timeout: float = 10.0,
    batch_size: int = 256,
    progress: UploadProgress | None = None,
) -> UploadReport:
    """Copy the embedded Qdrant index in `source` to a Qdrant server, as the new index folder `target`.

    Args:
        source: The embedded index's folder (Qdrant Edge or local mode; its manifest says which).
        target: The new index folder: missing or empty, or the folder of an interrupted upload of the same index.
        url: The Qdrant server, e.g. `http://localhost:6333`.
        path: Instead of `url`, a qdrant-client local-mode folder (for a check without a server).
        collection: The collection on the server; None: the embedded index's own name.
        api_key: The server's API key (default: `QDRANT_API_KEY`); never stored.
        timeout: Per-request timeout in seconds.
        batch_size: Points per upsert request.
        progress: Called after each uploaded batch (`UploadProgress`).

    Returns:
        What was copied.

    Raises:
        ValueError: If `source` is not an embedded Qdrant index, `url` and `path` are not exactly one, or `target`
            is `source`.
        IndexNotFoundError: If `source` holds no index.
        StoreUnavailableError: If the server cannot be reached, or the embedded index is open elsewhere.
        IndexMismatchError: If the server collection already holds chunks that `target` does not describe, or a
            copied count differs from the embedded index's.
    """
    source_folder, target_folder = Path(source), Path(target)
    if (url is None) == (path is None):
        raise ValueError("give the Qdrant server's url (or, to try the upload without a server, a local-mode path)")
    manifest = read_manifest(source_folder)
    backend = manifest.backend
    if not isinstance(backend, QdrantSettings) or backend.url is not None:
        where = "a FAISS index" if not isinstance(backend, QdrantSettings) else f"already on {backend.url}"
        raise ValueError(
            f"{source_folder} is {where}; only an embedded Qdrant index (`tempscale-rag index --store qdrant`) is "
            "uploaded to a server this way"
        )
    if target_folder.resolve() == source_folder.resolve():
        raise ValueError("the new index folder must differ from the embedded index's folder (both hold a manifest)")
    destination = QdrantSettings(
        collection=collection or backend.collection,
        url=url,
        path=None if path is None else str(Path(path).expanduser().resolve()),
        distance=backend.distance,
    )
    wanted = manifest.model_copy(update={"backend": destination})
    reader = open_store(source_folder, read_only=True)
    try:
        writer = open_store(target_folder, wanted, api_key=api_key, timeout=timeout, batch_size=batch_size)
        try:
            if not isinstance(reader, QdrantStore) or not isinstance(writer, QdrantStore):  # pragma: no cover
                raise TypeError("both indexes must be Qdrant indexes")
            return _copy(reader, writer, target_folder, batch_size, progress)
        finally:
            writer.close()
    finally:
        reader.close()


def _copy(
    reader: QdrantStore,
    writer: QdrantStore,
    folder: Path,
    batch_size: int,
    progress: UploadProgress | None,
) -> UploadReport:
    pairs = (
        ("chunks", reader.collection, writer.collection),
        ("documents", reader.documents_collection, writer.documents_collection),
        ("sources", reader.sources_collection, writer.sources_collection),
    )
    copied: dict[str, int] = {}
    for what, source_collection, target_collection in pairs:
        total = _count(reader, source_collection)
        done = 0
        batch: list[models.PointStruct] = []
        for point in _points(reader, source_collection, with_vectors=what != "sources"):
            batch.append(point)
            if len(batch) >= batch_size:
                done += _upsert(writer, target_collection, batch)
                batch = []
                if progress is not None:
                    progress(what, done, total)
        if batch:
            done += _upsert(writer, target_collection, batch)
            if progress is not None:
                progress(what, done, total)
        copied[what] = done
        have = _count(writer, target_collection)
        if have != total:
            raise IndexMismatchError(
                f"the {what} collection {target_collection!r} at {writer.location} holds {have} points after the "
                f"upload, the embedded index {total}: points that this index does not describe were there already "
                "(upload into another --collection), or the embedded index changed during the upload (run it again)"
            )
    writer.commit()
    describe = writer.describe()
    return UploadReport(
        folder=folder,
        location=writer.location,
        collection=writer.collection,
        chunks=copied["chunks"],
        lexical_chunks=describe.get("lexical_chunks"),
        documents=copied["documents"],
        sources=len(writer.sources()),
    )


def _count(store: QdrantStore, collection: str) -> int:
    client = store.client
    return int(store._connection.call("count", lambda: client.count(collection, exact=True)).count)


def _points(store: QdrantStore, collection: str, *, with_vectors: bool) -> Iterator[models.PointStruct]:
    """Every point of `collection` as stored: id, every vector by name (dense and sparse), payload."""
    records = store._connection.scroll(
        f"read {collection}", collection, SCROLL_PAGE, with_payload=True, with_vectors=with_vectors
    )
    for record in records:
        vector: Any = record.vector if with_vectors and record.vector is not None else {}
        yield models.PointStruct(id=record.id, vector=vector, payload=record.payload or {})


def _upsert(store: QdrantStore, collection: str, points: list[models.PointStruct]) -> int:
    store._connection.call("upload", partial(store.client.upsert, collection, points, wait=True))
    store._modified = True  # written past the store's own methods: its commit must still refresh the manifest
    return len(points)
