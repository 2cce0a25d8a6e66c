"""The lexical (BM25) channel of a Qdrant index: a sparse vector named `bm25` on the chunk points of one chunk size.

Every chunk whose size is `LexicalSettings.chunk_size` carries `SparseEncoder(pivot, k1, b).document(text)` beside its
dense vector, written in the same upsert, so deletes, re-indexing and pruning take it along with the point. The
collection's `bm25` vector has Qdrant's IDF modifier, which multiplies each query value by
`ln(1 + (N - n + 0.5) / (n + 0.5))`; with the query's term counts as query values the score is exactly
`tempscale_rag.ranking.lexical.PivotBM25` over the texts of those chunks, provided N and n count the points that
carry the vector *now*. The engines' default, collection-wide statistics do not (measured here):

- Qdrant's engine (Qdrant Edge 0.9.0; a server too, by qdrant-client's notes) reads them from its sparse index,
  which goes on counting deleted and replaced vectors (even after `optimize()`) and did not count an empty vector;
- qdrant-client's local mode keeps counters that are live in 1.20 but still counted deleted points in 1.19.

So every lexical query restricts the IDF corpus to the points that carry the vector
(`SearchParams(idf=IdfCorpusParams(corpus=has_vector bm25))`), which every engine evaluates over its live points:
exact on all three, one code path (qdrant-client >= 1.19). Edge answers the top 100 of 20k lexical chunks in about
1 ms with it; local mode takes about 40 % longer per query than without (it evaluates the filter point by point).
A server must be recent enough to accept that parameter and to add the vector to an existing collection
(`create_vector_name`, for `add_lexical`); no server could be run here to check which version.

A chunk of the lexical size without any term still carries an (empty) vector: it is one of PivotBM25's N units.

Whole-document BM25 (`LexicalSettings.document_pivot`) is the same vector on the document points of
`<collection>__documents`: `SparseEncoder(document_pivot).document` of the texts of the document's lexical chunks,
written whenever `documents.py` writes the point (after the chunks), with the same IDF corpus restriction.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from qdrant_client import models

from tempscale_rag.config import LexicalSettings
from tempscale_rag.ranking.lexical import ANALYZER_NAME, SparseEncoder
from tempscale_rag.stores.base import ChunkRecord, chunk_size_of
from tempscale_rag.stores.errors import IndexMismatchError
from tempscale_rag.stores.qdrant.connection import SCROLL_PAGE, QdrantConnection
from tempscale_rag.stores.qdrant.points import ChunkPoint, chunk_point

if TYPE_CHECKING:
    from tempscale_rag.stores.qdrant.documents import DocumentPoints

LEXICAL_VECTOR = "bm25"
"""The name of the chunk points' sparse vector."""

LEXICAL_CORPUS = models.Filter(must=[models.HasVectorCondition(has_vector=LEXICAL_VECTOR)])
"""The points of the lexical channel: the IDF corpus, and what `lexical_chunks(n=None)` ranks."""

EMPTY_RESULT: tuple[npt.NDArray[Any], npt.NDArray[np.float32]] = (
    np.empty(0, dtype=object),
    np.empty(0, dtype=np.float32),
)


class LexicalChannel:
    """Which chunks get a sparse vector, and that vector.

    Args:
        settings: The index's lexical settings.
    """

    def __init__(self, settings: LexicalSettings) -> None:
        if not isinstance(settings, LexicalSettings):
            raise TypeError(f"lexical must be a LexicalSettings or None, got {type(settings).__name__}")
        self.settings = settings
        self._encoder = SparseEncoder(avg_len=settings.pivot, k1=settings.k1, b=settings.b)
        pivot = settings.document_pivot
        self._whole = None if pivot is None else SparseEncoder(avg_len=pivot, k1=settings.k1, b=settings.b)

    def check_writable(self, location: str) -> None:
        """Refuse to add chunks analysed differently from those already indexed.

        Raises:
            IndexMismatchError: If the index's analyser is not this version's.
        """
        if self.settings.analyzer != ANALYZER_NAME:
            raise IndexMismatchError(
                f"the lexical channel of {location} was built with the analyser {self.settings.analyzer!r}, this "
                f"version analyses text with {ANALYZER_NAME!r}: re-index, or rebuild the channel with add_lexical"
            )

    def vector(self, text: str, chunk_size: int) -> models.SparseVector | None:
        """The sparse vector of a chunk of `chunk_size` tokens; None for chunks of other sizes."""
        if chunk_size != self.settings.chunk_size:
            return None
        ids, values = self._encoder.document(text)
        return models.SparseVector(indices=ids, values=values)

    @property
    def whole_documents(self) -> bool:
        """Whether document points carry whole-document BM25 vectors (`LexicalSettings.document_pivot`)."""
        return self._whole is not None

    def document_vector(self, texts: list[str]) -> tuple[str, models.SparseVector] | None:
        """(`bm25`, vector) of a document point from the texts of its lexical chunks; None without the list.

        The texts are joined by line breaks, which no term crosses: the terms are those of the chunks, summed.
        """
        if self._whole is None:
            return None
        ids, values = self._whole.document("\n".join(texts))
        return LEXICAL_VECTOR, models.SparseVector(indices=ids, values=values)

    def document_terms(self, text: str) -> list[str]:
        """The analysed terms of a lexical chunk, as `document_vector` counts them (empty without the list)."""
        return [] if self._whole is None else self._whole.analyzer.terms(text)

    def vector_of_terms(self, counts: Counter[str], length: int) -> tuple[str, models.SparseVector]:
        """`document_vector` of the texts whose `document_terms` have these counts and this total.

        Raises:
            ValueError: Without the whole-document list.
        """
        if self._whole is None:
            raise ValueError("this lexical channel has no whole-document list")
        ids, values = self._whole.document_of_counts(counts, length)
        return LEXICAL_VECTOR, models.SparseVector(indices=ids, values=values)

    def named_vector(self, record: ChunkRecord, location: str) -> tuple[str, models.SparseVector] | None:
        """(`bm25`, vector) of a chunk about to be written, or None for a chunk of another size.

        Raises:
            IndexMismatchError: For a chunk of the channel's size in an index analysed by another analyser.
        """
        sparse = self.vector(record.text, chunk_size_of(record.metadata))
        if sparse is None:
            return None
        self.check_writable(location)
        return LEXICAL_VECTOR, sparse


def sparse_vector_params() -> models.SparseVectorParams:
    """The collection's `bm25` vector: IDF modifier on."""
    return models.SparseVectorParams(modifier=models.Modifier.IDF)


def corpus_search_params() -> models.SearchParams:
    """IDF statistics over the live points that carry the vector (exact on Qdrant's engine, see the module doc)."""
    return models.SearchParams(idf=models.IdfCorpusParams(corpus=LEXICAL_CORPUS))


def check_sparse_query(query: Any) -> models.SparseVector:
    """The query `(term ids, values)` as a `SparseVector`.

    Raises:
        TypeError: If it is not a pair of sequences.
        ValueError: If the lengths differ, an id is not a 32-bit unsigned int or a value is not finite.
    """
    if not isinstance(query, tuple | list) or len(query) != 2:
        raise TypeError("a lexical query is a (term ids, values) pair, as SparseEncoder().query(text) returns")
    ids, values = (list(part) for part in query)
    if len(ids) != len(values):
        raise ValueError(f"a lexical query needs one value per term id, got {len(ids)} ids and {len(values)} values")
    for tid in ids:
        if isinstance(tid, bool) or not isinstance(tid, int | np.integer) or not 0 <= tid < 2**32:
            raise ValueError(f"lexical term ids are ints in [0, 2**32), got {tid!r}")
    floats = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(floats)):
        raise ValueError("lexical query values must be finite numbers")
    return models.SparseVector(indices=[int(t) for t in ids], values=floats.tolist())


def check_limit(n: int | None) -> int | None:
    """`n` of `lexical_chunks`: None or an int >= 0.

    Raises:
        ValueError: Otherwise.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0):
        raise ValueError(f"n must be None (every matching chunk) or an int >= 0, got {n!r}")
    return None if n is None else int(n)


def chunk_points(records: list[ChunkRecord], channel: LexicalChannel | None, location: str) -> list[ChunkPoint]:
    """The points of checked records, with the sparse vector on the chunks of the channel's size."""
    if channel is None:
        return [chunk_point(record) for record in records]
    return [chunk_point(record, channel.named_vector(record, location)) for record in records]


def count_lexical(connection: QdrantConnection, collection: str) -> int:
    """How many chunks carry the sparse vector."""
    client = connection.client
    return int(
        connection.call(
            "count lexical chunks", lambda: client.count(collection, count_filter=LEXICAL_CORPUS, exact=True)
        ).count
    )


def ensure_lexical_vector(connection: QdrantConnection, collection: str, *, create: bool) -> bool:
    """Check the collection's `bm25` vector, or add it when missing and `create`; whether it existed.

    Raises:
        IndexMismatchError: If it is missing (and not `create`), or has no IDF modifier.
    """
    sparse = connection.sparse_vectors(collection)
    if LEXICAL_VECTOR not in sparse:
        if not create:
            raise IndexMismatchError(
                f"Qdrant collection {collection!r} at {connection.location} has no lexical channel (sparse vector "
                f"{LEXICAL_VECTOR!r}) although the index records one; re-index, or add it with add_lexical"
            )
        connection.add_sparse_vector(collection, LEXICAL_VECTOR)
        return False
    if sparse[LEXICAL_VECTOR] != models.Modifier.IDF:
        raise IndexMismatchError(
            f"Qdrant collection {collection!r} at {connection.location} has a sparse vector {LEXICAL_VECTOR!r} "
            "without the IDF modifier, so it cannot be this index's BM25 channel: use another --collection"
        )
    return True


def fill_lexical(
    connection: QdrantConnection, collection: str, channel: LexicalChannel, *, batch_size: int, refresh: bool
) -> int:
    """Give every stored chunk of the channel's size its sparse vector, from the text in its payload.

    Args:
        connection: The connection.
        collection: The chunk collection (its `bm25` vector already configured).
        channel: The channel.
        batch_size: Points per update request.
        refresh: Also remove the vector from chunks of other sizes (the vector existed before: an interrupted fill,
            or other settings).

    Returns:
        How many chunks carry the vector now.
    """
    client = connection.client
    points = connection.scroll(
        "read the chunk texts",
        collection,
        SCROLL_PAGE,
        with_payload=["text", "chunk_tokens", "metadata"],
        with_vectors=False,
    )
    updates: list[models.PointVectors] = []
    others: list[Any] = []
    filled = 0

    def write() -> None:
        if updates:
            batch = list(updates)
            connection.call("add lexical vectors", lambda: client.update_vectors(collection, batch, wait=True))
        if others and refresh:
            ids = models.PointIdsList(points=list(others))
            connection.call(
                "drop lexical vectors",
                lambda: client.delete_vectors(collection, [LEXICAL_VECTOR], ids, wait=True),
            )
        updates.clear()
        others.clear()

    for point in points:
        payload = point.payload or {}
        size = payload.get("chunk_tokens")
        if not isinstance(size, int):
            size = chunk_size_of(payload.get("metadata") or {})
        sparse = channel.vector(str(payload.get("text", "")), size)
        if sparse is None:
            others.append(point.id)
        else:
            updates.append(models.PointVectors(id=point.id, vector={LEXICAL_VECTOR: sparse}))
            filled += 1
        if len(updates) + len(others) >= batch_size:
            write()
    write()
    return filled


def _query_lexical(
    connection: QdrantConnection, collection: str, query: models.SparseVector, n: int | None, payload: list[str]
) -> list[Any]:
    """The best `n` points of `collection` by its `bm25` vector (None: every point with a query term).

    IDF is computed over `LEXICAL_CORPUS`, the live points that carry the vector (see the module docstring).
    """
    client = connection.client
    if n is None:
        n = count_lexical(connection, collection)
    if n == 0 or not query.indices:
        return []
    limit = n
    params = corpus_search_params()
    return list(
        connection.call(
            "lexical search",
            lambda: client.query_points(
                collection,
                query=query,
                using=LEXICAL_VECTOR,
                limit=limit,
                with_payload=payload or False,
                search_params=params,
            ),
        ).points
    )


def search_lexical(
    connection: QdrantConnection, collection: str, query: models.SparseVector, n: int | None
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
    """(point ids, scores) of the best `n` chunks for a sparse query (None: every chunk with a query term)."""
    found = _query_lexical(connection, collection, query, n, [])
    if not found:
        return EMPTY_RESULT
    keys = np.asarray([str(point.id) for point in found], dtype=object)
    return keys, np.asarray([point.score for point in found], dtype=np.float32)


def search_lexical_documents(
    connection: QdrantConnection, documents: str, query: models.SparseVector, n: int | None
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
    """(sources, scores) of the best `n` documents by whole-document BM25 (None: every one with a query term).

    The document points' `bm25` vectors, IDF over the document points that carry one; ties by source, as FAISS.
    """
    found = _query_lexical(connection, documents, query, n, ["source"])
    if not found:
        return EMPTY_RESULT
    pairs = sorted(
        ((np.float32(point.score), str((point.payload or {}).get("source", ""))) for point in found),
        key=lambda pair: (-pair[0], pair[1]),
    )
    return (
        np.asarray([source for _, source in pairs], dtype=object),
        np.asarray([score for score, _ in pairs], dtype=np.float32),
    )


def search_channel(
    channel: LexicalChannel | None,
    connection: QdrantConnection,
    collection: str,
    query: Any,
    n: int | None,
    *,
    documents: bool,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
    """A checked lexical query of chunks (`documents` False) or whole documents; empty without the channel/list.

    Raises:
        TypeError, ValueError: For a malformed query or `n` (see `check_sparse_query`, `check_limit`).
    """
    sparse = check_sparse_query(query)
    limit = check_limit(n)
    if channel is None or (documents and not channel.whole_documents):
        return EMPTY_RESULT
    return (search_lexical_documents if documents else search_lexical)(connection, collection, sparse, limit)


def add_channel(
    connection: QdrantConnection,
    collection: str,
    document_points: DocumentPoints,
    settings: LexicalSettings,
    batch_size: int,
    location: str,
) -> tuple[LexicalChannel, int]:
    """Give a collection the lexical channel from the chunk texts in its payloads (nothing is embedded).

    The collection gains the `bm25` sparse vector and every stored chunk of `settings.chunk_size` its vector; with
    a whole-document list the document points are rewritten with theirs.

    Returns:
        The channel and how many chunks are in it.
    """
    channel = LexicalChannel(settings)
    channel.check_writable(location)
    existed = ensure_lexical_vector(connection, collection, create=True)
    filled = fill_lexical(connection, collection, channel, batch_size=batch_size, refresh=existed)
    document_points.lexical = channel
    if channel.whole_documents and document_points.exists:
        ensure_lexical_vector(connection, document_points.name, create=True)
        document_points.refresh(None)
    return channel, filled
