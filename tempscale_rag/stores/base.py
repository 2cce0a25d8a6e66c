"""The storage interface every vector-store backend implements, and the records it stores.

One backend per package (`faiss/`, `qdrant/`), each a `VectorStore`: storage and chunk search only. Ranking whole
documents from their chunks lives once, in `tempscale_rag.ranking`, which drives every backend through the small
contract in `tempscale_rag.ranking.candidates`. Vectors arrive as float32 numpy
arrays that the caller has already L2-normalised, so the inner product every backend ranks by is the cosine.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import numpy.typing as npt

from tempscale_rag.stores.errors import IndexCorruptError as IndexCorruptError
from tempscale_rag.stores.errors import IndexMismatchError as IndexMismatchError
from tempscale_rag.stores.errors import IndexNotFoundError as IndexNotFoundError
from tempscale_rag.stores.errors import StoreUnavailableError

ProgressCallback = Callable[[int, int], None]
"""Called as `progress(done, total)` after each uploaded batch."""


class StoreOwner(Protocol):
    """Whoever opened a store for an index folder (`open_store`'s manifest keeper), as the store sees it."""

    def committed(self) -> None:
        """Called after a commit that followed a change (the keeper refreshes `manifest.json`'s `updated_at`)."""

    def describe(self) -> dict[str, Any]:
        """Fields added to the store's `describe()` (model, timestamps, ...)."""


def make_chunk_id(source: str, position: int, text: str) -> str:
    """A deterministic chunk id: the same source, position and text always give the same id.

    Args:
        source: The file path as indexed.
        position: The chunk index within the source.
        text: The chunk text.

    Returns:
        32 hexadecimal characters (the first 128 bits of a SHA-256).
    """
    digest = hashlib.sha256()
    for part in (source, str(position), text):
        encoded = part.encode("utf-8", "surrogatepass")
        # Length-prefix each part so ("ab", "c") and ("a", "bc") cannot collide.
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()[:32]


def metadata_json(metadata: dict[str, Any], *, what: str = "metadata") -> str:
    """Serialise metadata canonically (sorted keys, no NaN), raising TypeError if it is not plain JSON."""
    try:
        return json.dumps(metadata, ensure_ascii=False, sort_keys=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable (str, int, float, bool, None, list, dict): {exc}") from None


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk to store: its text, its vector and where it came from.

    Attributes:
        id: Deterministic id, normally `make_chunk_id(source, position, text)`; storing the same id again replaces it.
        text: The chunk text.
        vector: The embedding, a 1-D float32 array (other float dtypes are converted), L2-normalised by the caller.
        source: The file path as indexed.
        position: The chunk index within its source (0-based).
        token_length: Tokens the model saw for this chunk.
        bucket: Label of the length bucket that encoded it, e.g. `"128-256"`.
        metadata: Extra JSON-serialisable fields.
    """

    id: str
    text: str
    vector: npt.NDArray[np.float32] = field(repr=False, compare=False)
    source: str
    position: int
    token_length: int
    bucket: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("id", "text", "source", "bucket"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"ChunkRecord.{name} must be a str, got {type(getattr(self, name)).__name__}")
        if not self.id:
            raise ValueError("ChunkRecord.id must not be empty; use make_chunk_id(source, position, text)")
        if not self.source:
            raise ValueError(f"chunk {self.id}: source must not be empty")
        for name in ("position", "token_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"chunk {self.id}: {name} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.metadata, dict):
            raise TypeError(f"chunk {self.id}: metadata must be a dict, got {type(self.metadata).__name__}")
        metadata_json(self.metadata, what=f"metadata of chunk {self.id}")
        try:
            chunk_size_of(self.metadata)
        except ValueError as exc:
            raise ValueError(f"chunk {self.id}: {exc}") from None
        object.__setattr__(self, "vector", _as_vector(self.vector, what=f"vector of chunk {self.id}"))

    @classmethod
    def create(
        cls,
        *,
        text: str,
        vector: npt.ArrayLike,
        source: str,
        position: int,
        token_length: int,
        bucket: str,
        metadata: dict[str, Any] | None = None,
    ) -> ChunkRecord:
        """Build a record whose id is `make_chunk_id(source, position, text)`.

        Args:
            text: The chunk text.
            vector: The L2-normalised embedding (1-D).
            source: The file path as indexed.
            position: The chunk index within the source.
            token_length: Tokens the model saw.
            bucket: Label of the length bucket that encoded it.
            metadata: Extra JSON-serialisable fields.

        Returns:
            The record.
        """
        return cls(
            id=make_chunk_id(source, position, text),
            text=text,
            vector=np.asarray(vector),
            source=source,
            position=position,
            token_length=token_length,
            bucket=bucket,
            metadata=dict(metadata or {}),
        )


@dataclass(frozen=True)
class SearchHit:
    """One search result; `score` is the inner product (= cosine for normalised vectors), higher is better."""

    id: str
    score: float
    text: str
    source: str
    position: int
    token_length: int
    bucket: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class DocumentHit:
    """One ranked document (source file): its aggregated score and its best chunks as evidence.

    Attributes:
        source: The file path as indexed.
        score: The document score (see `tempscale_rag.ranking.documents`), higher is better.
        chunks: The document's best chunks, best first; each `SearchHit.score` is that chunk's cosine.
    """

    source: str
    score: float
    chunks: list[SearchHit] = field(hash=False)


CHUNK_SIZE_KEY = "chunk_tokens"
"""Metadata key holding the chunk size a chunk was cut at; chunks of one size of one document form one group."""


def chunk_size_of(metadata: dict[str, Any]) -> int:
    """The chunk size recorded in a chunk's metadata (`metadata["chunk_tokens"]`), 0 when absent (one size).

    Raises:
        ValueError: If the value is present but not an integer >= 0.
    """
    value = metadata.get(CHUNK_SIZE_KEY)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"metadata[{CHUNK_SIZE_KEY!r}] must be an integer >= 0 (the chunk size), got {value!r}")
    return int(value)


def _as_vector(vector: Any, *, what: str) -> npt.NDArray[np.float32]:
    if not isinstance(vector, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(vector).__name__}")
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array, got shape {vector.shape}")
    if not np.issubdtype(vector.dtype, np.floating):
        raise TypeError(f"{what} must have a float dtype (float32), got {vector.dtype}")
    out = np.ascontiguousarray(vector, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{what} contains NaN or infinity")
    return out


def as_query_matrix(queries: npt.ArrayLike, dimension: int) -> npt.NDArray[np.float32]:
    """Validate query vectors and return them as a C-contiguous float32 matrix of shape (n, dimension).

    Args:
        queries: One vector (1-D) or a matrix of vectors (2-D).
        dimension: The store's vector dimension.

    Returns:
        The queries as a 2-D float32 array.

    Raises:
        TypeError: If the queries are not a float array.
        ValueError: If the shape does not match the dimension or a value is not finite.
    """
    array = np.asarray(queries)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dimension:
        raise ValueError(f"query vectors must have shape (n, {dimension}) for this index, got {np.shape(queries)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"query vectors must have a float dtype (float32), got {array.dtype}")
    out = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError("query vectors contain NaN or infinity")
    return out


def check_k(k: int) -> int:
    """Return `k` if it is a positive int, else raise."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return int(k)


def check_records(records: Iterable[ChunkRecord], dimension: int, *, source: str | None = None) -> list[ChunkRecord]:
    """Materialise and validate a batch before anything is written, so a bad record changes nothing.

    Args:
        records: The records.
        dimension: The store's vector dimension.
        source: When given, every record must belong to this source.

    Returns:
        The records as a list.

    Raises:
        TypeError: If an item is not a ChunkRecord.
        ValueError: On a wrong dimension, a foreign source, or a duplicate id within the batch.
    """
    if isinstance(records, ChunkRecord):
        raise TypeError("pass a list of ChunkRecord, not a single record")
    batch = list(records)
    seen: set[str] = set()
    for record in batch:
        if not isinstance(record, ChunkRecord):
            raise TypeError(f"expected ChunkRecord, got {type(record).__name__}")
        if record.vector.shape[0] != dimension:
            raise ValueError(
                f"chunk {record.id} of {record.source} has a {record.vector.shape[0]}-dimensional vector; "
                f"this index stores {dimension}-dimensional vectors"
            )
        if source is not None and record.source != source:
            raise ValueError(f"chunk {record.id} belongs to source {record.source!r}, not {source!r}")
        if record.id in seen:
            raise ValueError(f"chunk id {record.id} appears twice in one batch ({record.source}#{record.position})")
        seen.add(record.id)
    return batch


def check_source(source: str) -> str:
    """Return `source` if it is a non-empty str, else raise."""
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty str (the file path as indexed), got {source!r}")
    return source


def check_fingerprint(fingerprint: str) -> str:
    """Return `fingerprint` if it is a non-empty str, else raise."""
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError(f"fingerprint must be a non-empty str (e.g. a SHA-256 of the file), got {fingerprint!r}")
    return fingerprint


def check_dimension(dimension: int) -> int:
    """Return `dimension` if it is a positive int, else raise."""
    if isinstance(dimension, bool) or not isinstance(dimension, int | np.integer) or dimension < 1:
        raise ValueError(f"dimension must be a positive int, got {dimension!r}")
    return int(dimension)


class VectorStore(ABC):
    """A persistent collection of `ChunkRecord`s, searchable by inner product, that remembers each source's fingerprint.

    Subclasses implement the `_`-free abstract methods plus `_commit_backend`, `_close_backend` and
    `_describe_backend`. Stores are context managers: leaving the block commits (for writable stores) and closes.
    Obtain one with `open_store` to have the index manifest checked and maintained (through `owner`).
    """

    backend: ClassVar[str]

    def __init__(self, dimension: int, *, read_only: bool) -> None:
        self._dimension = check_dimension(dimension)
        self._read_only = bool(read_only)
        self._closed = False
        self._owner: StoreOwner | None = None
        self._modified = False

    @property
    def dimension(self) -> int:
        """Length of the stored vectors."""
        return self._dimension

    @property
    def read_only(self) -> bool:
        """True when the store was opened for searching only."""
        return self._read_only

    @property
    def closed(self) -> bool:
        """True once `close()` has run."""
        return self._closed

    @property
    def owner(self) -> StoreOwner | None:
        """Whoever opened the store for an index folder (set by `open_store`), else None."""
        return self._owner

    def set_owner(self, owner: StoreOwner | None) -> None:
        """Tell `owner` of every commit that follows a change, and add its fields to `describe()`.

        Args:
            owner: The owner (e.g. `open_store`'s manifest keeper), or None to detach.
        """
        self._owner = owner

    @property
    def concurrent_writers(self) -> bool:
        """Whether `writer()` can open more writers working concurrently with this store (a Qdrant server only)."""
        return False

    def writer(self) -> VectorStore:
        """Another writer on the same index, for writing other sources concurrently (see `QdrantStore.writer`).

        Raises:
            ValueError: If the backend has a single writer (FAISS's SQLite file, Qdrant's local mode).
        """
        raise ValueError(f"the {self.backend} store has a single writer")

    @abstractmethod
    def replace_source(self, source: str, fingerprint: str, records: Iterable[ChunkRecord]) -> None:
        """Replace every chunk of `source` by `records` and record the source's fingerprint.

        Idempotent: repeating the call leaves one copy. The fingerprint is recorded only once all chunks are stored,
        so `sources()` never lists a source whose replacement was interrupted.

        Args:
            source: The file path as indexed.
            fingerprint: The source's content fingerprint (e.g. a SHA-256 of the file).
            records: The new chunks; each must have `record.source == source`.
        """

    def replace_source_batches(self, source: str, fingerprint: str, batches: Iterable[Iterable[ChunkRecord]]) -> int:
        """Replace every chunk of `source` by the records of `batches`, as `replace_source` does with their list.

        The indexer stores a big file's chunks through this, a staged batch at a time. A store that can write them
        batch by batch inside one transaction (FAISS) holds one batch at a time; this default gathers them and calls
        `replace_source`.

        Args:
            source: The file path as indexed.
            fingerprint: The source's content fingerprint.
            batches: The new chunks, in batches; each record must have `record.source == source`.

        Returns:
            The number of chunks the source has now.
        """
        records = [record for batch in batches for record in batch]
        self.replace_source(source, fingerprint, records)
        return len(records)

    @abstractmethod
    def upsert(self, records: Iterable[ChunkRecord]) -> None:
        """Add records, replacing any stored record with the same id. Does not change `sources()`.

        Args:
            records: The records.
        """

    @abstractmethod
    def delete_source(self, source: str) -> int:
        """Delete every chunk of `source` and forget its fingerprint.

        Args:
            source: The file path as indexed.

        Returns:
            The number of chunks deleted.
        """

    @abstractmethod
    def sources(self) -> dict[str, str]:
        """Map each fully stored source to its fingerprint."""

    def search(self, query_vector: npt.ArrayLike, k: int = 10) -> list[SearchHit]:
        """The `k` stored chunks with the highest inner product with `query_vector`, best first.

        Args:
            query_vector: A 1-D vector of the store's dimension (L2-normalised by the caller).
            k: How many hits to return at most.

        Returns:
            Up to `k` hits, best first.
        """
        query = as_query_matrix(query_vector, self.dimension)
        if query.shape[0] != 1:
            raise ValueError(f"search takes one query vector; use search_many for {query.shape[0]} queries")
        return self.search_many(query, k)[0]

    @abstractmethod
    def search_many(self, query_vectors: npt.ArrayLike, k: int = 10) -> list[list[SearchHit]]:
        """Search many queries at once (one batched index call, one metadata lookup).

        Args:
            query_vectors: A matrix of shape (n, dimension).
            k: How many hits per query at most.

        Returns:
            One list of up to `k` hits per query, best first, in query order.
        """

    @abstractmethod
    def count(self) -> int:
        """The number of stored chunks."""

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary: backend, count, sources, dimension, index kind and location.

        The owner's fields (e.g. the model and timestamps of the index's manifest) are added.
        """
        summary = self._describe_backend()
        if self._owner is not None:
            summary.update(self._owner.describe())
        return summary

    def commit(self) -> None:
        """Make every change so far durable, then tell the owner (which refreshes the manifest's `updated_at`).

        Raises:
            RuntimeError: If the store is closed.
        """
        self._commit(final=False)

    def close(self, *, commit: bool = True) -> None:
        """Commit (if writable) and release files, locks and connections. Closing twice is allowed.

        Args:
            commit: False releases everything without committing (what a failed opening does).
        """
        if self._closed:
            return
        try:
            if commit and not self._read_only:
                self._commit(final=True)
        finally:
            self._closed = True
            self._close_backend()

    def _commit(self, *, final: bool) -> None:
        self._check_open()
        if self._read_only:
            return
        self._commit_backend(final=final)
        if self._modified and self._owner is not None:
            self._owner.committed()
        self._modified = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def _commit_backend(self, *, final: bool) -> None:
        """Flush backend state to durable storage; `final` is True when the store is being closed."""

    @abstractmethod
    def _close_backend(self) -> None:
        """Release backend resources without committing."""

    @abstractmethod
    def _describe_backend(self) -> dict[str, Any]:
        """The backend's part of `describe()`."""

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed; open the index again")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise StoreUnavailableError(
                f"this {type(self).__name__} was opened read-only; open it with read_only=False to change it"
            )
