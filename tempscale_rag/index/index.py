"""`Index`: an index folder (FAISS or Qdrant, as its manifest says) with the engine that built it.

An index knows how it was built (its manifest: model, dimension, embedding config, chunking, store), so it encodes
every query the same way whoever asks: the CLI's `search`, the evaluator's rule for chunked indexes and a Python user
get the same vectors and the same ranking. The model is loaded on first use (`info`, `delete` and opening never load
it), and the manifest is checked against the model's declared dimension before it is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import (
    BUNDLED_MODEL,
    DOCUMENT_PIVOT,
    ChunkingConfig,
    LexicalSettings,
    TempScaleConfig,
    chunked_index_config,
)
from tempscale_rag.index.settings import (
    SettingError,
    check_model_setting,
    check_run_settings,
    chunking_differences,
    config_differences,
    refuse_differences,
)
from tempscale_rag.stores import (
    DocumentHit,
    FaissSettings,
    IndexManifest,
    IndexMismatchError,
    QdrantSettings,
    SearchHit,
    VectorStore,
    manifest_of,
    open_store,
    read_manifest,
)
from tempscale_rag.stores.manifest import declared_dimension, describe_chunking, manifest_path, model_digest

if TYPE_CHECKING:
    from tempscale_rag.distributed.settings import RaySettings
    from tempscale_rag.encoder import TempScaleEncoder
    from tempscale_rag.ingest.chunking import MultiSizeChunker, WindowChunker
    from tempscale_rag.ingest.indexer import IndexSummary
    from tempscale_rag.ranking.hybrid import Fusion
    from tempscale_rag.ranking.lexical import SparseVector

DEFAULT_EVIDENCE = 3
"""Distinct chunks returned with each document by `search_documents`."""


@dataclass(frozen=True)
class _NewIndex:
    """What `Index.create` was asked for; the store is made at the first write, when the model is known."""

    config: TempScaleConfig
    chunking: ChunkingConfig | None
    backend: FaissSettings | QdrantSettings
    size_temperatures: bool
    lexical: LexicalSettings | None = None

    @classmethod
    def build(
        cls,
        config: TempScaleConfig,
        chunking: ChunkingConfig,
        backend: FaissSettings | QdrantSettings | None,
        size_temperatures: bool | None,
        lexical: bool | LexicalSettings = True,
    ) -> _NewIndex:
        """Check the settings of a new index (see `Index.create`) before anything is loaded or written."""
        if size_temperatures is None:
            size_temperatures = config.temperature is None and config.schedule is None
        if size_temperatures and config.temperature is not None:
            raise ValueError("temperature sets one tau for every chunk; it cannot be combined with size temperatures")
        window, largest = config.max_seq_length, chunking.sizes[-1]
        if window is not None and largest >= window:
            raise SettingError(
                lambda namer: (
                    f"chunk size {largest} does not fit {namer('max_seq_length')} {window} (with the special "
                    f"tokens): lower {namer('chunking.sizes')} or raise {namer('max_seq_length')}"
                )
            )
        if lexical is True:
            lexical = LexicalSettings.for_chunks(largest)
        elif isinstance(lexical, LexicalSettings) and lexical.chunk_size not in chunking.sizes:
            raise ValueError(
                f"the lexical channel indexes chunks of size {lexical.chunk_size}, which is not one of the chunk sizes "
                f"{','.join(map(str, chunking.sizes))}"
            )
        return cls(config, chunking, backend or FaissSettings(), size_temperatures, lexical or None)

    def routed(self, encoder: TempScaleEncoder) -> TempScaleEncoder:
        """The engine that embeds this index's chunks: each chunk size its own bucket when asked for."""
        if self.chunking is None or not self.size_temperatures:
            return encoder
        config = chunked_index_config(self.config, self.chunking, encoder.count_tokens([""])[0])
        return encoder.with_config(**config.model_dump())

    def manifest(self, config: TempScaleConfig, model_name: str, dimension: int) -> IndexManifest:
        """The manifest of the index once the model is known (its resolved config, name and dimension)."""
        return IndexManifest.new(
            model=model_name,
            dimension=dimension,
            config=config,
            backend=self.backend,
            chunking=self.chunking,
            model_digest=None if model_name == BUNDLED_MODEL else model_digest(model_name),
            lexical=self.lexical,
        )


class Index:
    """An index folder and the engine that built it. Make one with `Index.open` or `Index.create`.

    Use it as a context manager (or call `close`) so a writable index commits and releases its lock.
    """

    def __init__(
        self,
        folder: Path,
        *,
        store: VectorStore | None,
        new: _NewIndex | None,
        model: str | None,
        run: dict[str, Any],
        store_options: dict[str, Any],
    ) -> None:
        self._folder = folder
        self._store = store
        self._new = new
        self._model = model
        self._run = run
        self._store_options = store_options
        self._encoder: TempScaleEncoder | None = None
        self._chunker: WindowChunker | MultiSizeChunker | None = None

    # -- making one ------------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str],
        *,
        writable: bool = False,
        model: str | None = None,
        expected_settings: Mapping[str, Any] | None = None,
        expected_chunking: Mapping[str, Any] | None = None,
        api_key: str | None = None,
        use_gpu: bool | None = None,
        **run: Any,
    ) -> Index:
        """Open the index in `folder` (FAISS or Qdrant, as its manifest says). Loads no model.

        Args:
            folder: The index folder (holds `manifest.json`).
            writable: Open for `add`, `index_folder` and `delete` (takes the writer lock); False: search only.
            model: The index's model at another path (a moved local model folder); accepted only when it holds the
                same model (`same_model`). None: the recorded one.
            expected_settings: `TempScaleConfig` settings the caller expects the index to have (e.g. a CLI's
                flags); a `documents` or `queries` setting that differs is refused.
            expected_chunking: `ChunkingConfig` fields the caller expects; one that differs is refused.
            api_key: Qdrant server API key (default: `QDRANT_API_KEY`).
            use_gpu: FAISS GPU use (None: when available).
            **run: `run` settings for this session (`device`, `dtype`, `max_batch_tokens`, `tokenize_workers`).

        Returns:
            The index.

        Raises:
            IndexNotFoundError: If `folder` holds no index.
            IndexCorruptError: If its manifest or files are damaged.
            IndexMismatchError: If its manifest disagrees with its model (another dimension) or its files.
            SettingMismatchError: If `model` or an expected setting differs from the index's.
            SettingError: If a `run` argument is not a run setting, or the index's model folder is gone.
        """
        folder = Path(folder)
        run_settings = check_run_settings(run)
        model_name = check_before_opening(folder, model, expected_settings, expected_chunking)
        options: dict[str, Any] = {"api_key": api_key, "use_gpu": use_gpu}
        store = open_store(folder, read_only=not writable, create=False, **options)
        return cls(folder, store=store, new=None, model=model_name, run=run_settings, store_options=options)

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike[str],
        config: TempScaleConfig | None = None,
        *,
        chunking: ChunkingConfig | None = None,
        backend: FaissSettings | QdrantSettings | None = None,
        size_temperatures: bool | None = None,
        api_key: str | None = None,
        use_gpu: bool | None = None,
        lexical: bool | LexicalSettings = True,
    ) -> Index:
        """A new index in `folder`, made (and the model loaded) at its first `add` or `index_folder`.

        Args:
            folder: A missing or empty folder.
            config: How to embed (model, window, prompts, ...); None: the defaults.
            chunking: Chunk sizes, their temperatures, overlap, document score; None: `ChunkingConfig()`.
            backend: `FaissSettings` (default: exact FAISS) or `QdrantSettings`.
            size_temperatures: Whether each chunk size gets its own temperature (one length bucket per size, queries
                at `config.query_temperature` or 0.8: `chunked_index_config`). None: unless `config` sets a global
                `temperature` or a `schedule`.
            api_key: Qdrant server API key (default: `QDRANT_API_KEY`).
            use_gpu: FAISS GPU use (None: when available).
            lexical: The lexical (BM25) channel hybrid search fuses with the vectors: True for the default (the
                largest chunk size, `LexicalSettings.for_chunks`), a `LexicalSettings`, or False for dense only.

        Returns:
            The index (empty until the first write).

        Raises:
            IndexCorruptError: If `folder` already holds an index or other files.
        """
        from tempscale_rag.stores import IndexCorruptError

        folder = Path(folder)
        if manifest_path(folder).exists():
            raise IndexCorruptError(
                f"{folder} already holds an index: open it with Index.open, or delete it to build a new one"
            )
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise IndexCorruptError(f"{folder} is not empty: a new index is only written into a new or empty folder")
        new = _NewIndex.build(
            config or TempScaleConfig(), chunking or ChunkingConfig(), backend, size_temperatures, lexical
        )
        options: dict[str, Any] = {"api_key": api_key, "use_gpu": use_gpu}
        return cls(folder, store=None, new=new, model=new.config.model, run={}, store_options=options)

    # -- what it is ------------------------------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """The index folder."""
        return self._folder

    @property
    def manifest(self) -> IndexManifest | None:
        """The index's manifest; None for a new index before its first write."""
        return None if self._store is None else manifest_of(self._store)

    @property
    def dimension(self) -> int | None:
        """The vector dimension; None for a new index before its first write."""
        manifest = self.manifest
        return None if manifest is None else manifest.dimension

    @property
    def config(self) -> TempScaleConfig:
        """The engine configuration documents and queries are encoded with (the run settings applied)."""
        manifest = self.manifest
        if manifest is None:
            if self._new is None:  # pragma: no cover - every Index has one or the other
                raise RuntimeError("index has neither a store nor a pending creation")
            return self._new.config
        return manifest.config.model_copy(update={"model": self._model or manifest.config.model, **self._run})

    @property
    def encoder(self) -> TempScaleEncoder:
        """The engine, loaded on first use with the index's settings; its dimension is checked against the index."""
        if self._encoder is None:
            from tempscale_rag.encoder import TempScaleEncoder

            manifest = self._require_manifest()
            encoder = TempScaleEncoder(config=self.config)
            check_dimension(manifest, encoder.model_name, encoder.dimension, self._folder)
            self._encoder = encoder
        return self._encoder

    def info(self) -> dict[str, Any]:
        """What the index holds and how it was built (plain JSON types); checks the database's integrity. No model.

        Returns:
            `index`, `chunks`, `files`, `model`, `dimension`, `store`, `backend`, `config`, `chunking`,
            `chunking_described`, `lexical` (the lexical channel's settings, None for dense only),
            `retrieval_described`, `package_version`, `format_version`, `created_at`, `updated_at`, `details`.
        """
        return describe_index(self._require_store(), self._require_manifest(), self._folder)

    def sources(self) -> dict[str, str]:
        """Every indexed source (file path or `add` name) with its content fingerprint."""
        return {} if self._store is None else self._store.sources()

    # -- searching -------------------------------------------------------------------------------------------------

    def query_vector(self, query: str | npt.ArrayLike) -> npt.NDArray[np.float32]:
        """`query` as the index's query vector: a text encoded with the index's settings, or a vector checked.

        Raises:
            ValueError: If the text is empty, or the vector's shape is not `(dimension,)` or it is not finite.
            TypeError: If `query` is neither a str nor a float vector.
        """
        manifest = self._require_manifest()
        if isinstance(query, str):
            if not query.strip():
                raise ValueError("the query is empty; give some text to search for")
            return np.asarray(self.encoder.encode([query], query=True)[0], dtype=np.float32)
        return check_query_vector(query, manifest.dimension, self._folder)

    def search(self, query: str | npt.ArrayLike, k: int = 10, *, retrieval: str | None = None) -> list[SearchHit]:
        """The `k` best chunks for `query` (a text, or a vector of the index's dimension), best first.

        Args:
            query: A question (encoded with the index's settings) or a query vector (dense search only).
            k: How many chunks.
            retrieval: `hybrid` (vectors and BM25 fused), `dense` or `lexical`; None: the index's recorded one.
                An index without a lexical channel, or a vector query, searches dense.

        Returns:
            Up to `k` hits with distinct (source, text) (a text cut at several sizes is shown once, with its best
            score); with hybrid retrieval `score` is the fused score.
        """
        from tempscale_rag.ranking.hybrid import search_chunks_hybrid

        k = _check_k(k)
        fusion, vectors, sparse = self._channels(query, retrieval)
        store = self._require_store()
        fetch = k * self._copies()
        if fusion.retrieval == "dense":
            return distinct_hits(store.search(vectors[0], k=fetch), k)
        return distinct_hits(search_chunks_hybrid(cast(Any, store), vectors, sparse, fetch, fusion)[0], k)

    def search_documents(
        self,
        query: str | npt.ArrayLike,
        k: int = 10,
        *,
        doc_score: str | None = None,
        evidence: int = DEFAULT_EVIDENCE,
        retrieval: str | None = None,
    ) -> list[DocumentHit]:
        """The `k` best documents (source files) for `query`, scored from their chunks (`tempscale_rag.ranking`).

        Args:
            query: A question (encoded with the index's settings) or a query vector (dense search only).
            k: How many documents.
            doc_score: How a document is scored from its chunks (`max`, `mean`, `hybrid`, `topm`, `softmax`);
                None: the index's recorded one.
            evidence: Distinct best chunks returned with each document.
            retrieval: `hybrid` (the dense document ranking fused with BM25 over the lexical chunks), `dense` or
                `lexical`; None: the index's recorded one (see `search`).

        Returns:
            Up to `k` documents, best first, each with up to `evidence` chunks of distinct text.
        """
        from tempscale_rag.ranking import document_scoring
        from tempscale_rag.ranking.hybrid import search_documents_hybrid

        k = _check_k(k)
        if isinstance(evidence, bool) or not isinstance(evidence, int) or evidence < 0:
            raise ValueError(f"evidence must be an integer >= 0 (chunks per document), got {evidence!r}")
        if doc_score is not None:
            ChunkingConfig(doc_score=doc_score)  # validates the name before the model is loaded
        fusion, vectors, sparse = self._channels(query, retrieval)
        # The one place that ranks documents, with the index's own aggregation and its parameters (softmax T).
        scoring = document_scoring(doc_score, self._require_manifest().chunking)
        store = cast(Any, self._require_store())  # every backend open_store opens ranks documents
        ranked = search_documents_hybrid(store, vectors, sparse, k, scoring, evidence * self._copies(), fusion)[0]
        return [DocumentHit(d.source, d.score, distinct_hits(d.chunks, evidence)) for d in ranked]

    def _channels(
        self, query: str | npt.ArrayLike, retrieval: str | None
    ) -> tuple[Fusion, npt.NDArray[np.float32], list[SparseVector]]:
        """The fusion in force and the query as a (1, dim) vector and a sparse query (see `hybrid_inputs`)."""
        from tempscale_rag.index.retrieval import hybrid_inputs

        manifest, store = self._require_manifest(), self._require_store()
        return hybrid_inputs(manifest, store, self._folder, query, retrieval, self.query_vector)

    # -- writing ---------------------------------------------------------------------------------------------------

    def add(self, documents: Mapping[str, str]) -> int:
        """Add (or replace) documents given as text: each is chunked, embedded and stored under its name.

        A document whose text is unchanged since it was added is skipped. Each document replaces its old chunks
        atomically.

        Args:
            documents: Source name -> text.

        Returns:
            The number of chunks stored.
        """
        from tempscale_rag.ingest.texts import add_texts, check_texts

        check_texts(documents)
        store = self._writable_store()
        return add_texts(store, self.encoder, self._chunker_for(self.encoder), documents)

    def index_folder(
        self,
        paths: Sequence[str | Path],
        *,
        prune: bool = False,
        include_hidden: bool = False,
        max_file_bytes: int | None = None,
        batch_chunks: int | None = None,
        show_progress: bool = False,
        ray: RaySettings | None = None,
    ) -> IndexSummary:
        """Index files and folders incrementally (unchanged files skipped, changed ones replaced).

        Args:
            paths: Files or folders (walked recursively).
            prune: Remove indexed files that no longer exist.
            include_hidden: Also index hidden files and folders.
            max_file_bytes: Larger files are rejected (default: `DEFAULT_MAX_FILE_BYTES`).
            batch_chunks: Chunks embedded and committed together (default: `DEFAULT_BATCH_CHUNKS`).
            show_progress: Progress bars on stderr.
            ray: Read, chunk and embed on a Ray cluster with these settings (the same index); None: this process.

        Returns:
            The run's summary.
        """
        from tempscale_rag.ingest.indexer import DEFAULT_BATCH_CHUNKS, FolderIndexer
        from tempscale_rag.ingest.readers import DEFAULT_MAX_FILE_BYTES

        options: dict[str, Any] = {
            "max_file_bytes": DEFAULT_MAX_FILE_BYTES if max_file_bytes is None else max_file_bytes,
            "batch_chunks": DEFAULT_BATCH_CHUNKS if batch_chunks is None else batch_chunks,
            "show_progress": show_progress,
            "include_hidden": include_hidden,
            "index_dir": self._folder,
        }
        if ray is not None:
            return self._index_on_ray(paths, ray, options, prune=prune)
        store = self._writable_store(show_progress=show_progress)
        indexer = FolderIndexer(self.encoder, store, chunker=self._chunker_for(self.encoder), **options)
        return indexer.run(list(paths), prune=prune)

    def add_lexical(self, settings: LexicalSettings | None = None) -> LexicalSettings:
        """Give a dense-only index (built before hybrid retrieval, or with `lexical=False`) its lexical channel.

        The store analyses the chunk texts it already holds (nothing is embedded again), then the manifest records
        the channel. An index whose channel lacks the whole-document list (built before it) gets it the same way; an
        index with a complete channel is left as it is.

        Args:
            settings: The channel (default: the largest chunk size, `LexicalSettings.for_chunks`).

        Returns:
            The index's lexical settings.

        Raises:
            ValueError: If the index records no chunk sizes, `settings` names a size the index does not have, or the
                backend cannot add a channel to an existing index.
        """
        from tempscale_rag.index.retrieval import add_lexical_channel

        manifest = self._require_manifest()
        current = manifest.lexical
        if current is not None:
            if current.document_pivot is not None or settings == current:
                return current
            settings = settings or current.model_copy(update={"document_pivot": DOCUMENT_PIVOT})
        return add_lexical_channel(self._writable_store(), manifest, self._folder, settings)

    def delete(self, source: str) -> int:
        """Remove a source (a file path as indexed, or an `add` name) and its chunks; the number of chunks removed."""
        store = self._require_store()
        removed = store.delete_source(source)
        store.commit()
        return removed

    def close(self) -> None:
        """Commit a writable index and release its files and lock. Closing twice is allowed."""
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if isinstance(exc, KeyboardInterrupt) and self._store is not None:  # Ctrl-C: writes are committed already;
            self._store.close(commit=False)  # a big vectors.faiss or Edge's optimizers would delay the exit by seconds
        self.close()

    # -- internals -------------------------------------------------------------------------------------------------

    def _require_store(self) -> VectorStore:
        if self._store is None:
            raise ValueError(f"the index at {self._folder} is new and empty: add documents first")
        return self._store

    def _require_manifest(self) -> IndexManifest:
        return manifest_of(self._require_store())

    def _copies(self) -> int:
        chunking = self._require_manifest().chunking
        return len(chunking.sizes) if chunking else 1

    def _chunker_for(self, encoder: TempScaleEncoder) -> WindowChunker | MultiSizeChunker:
        from tempscale_rag.ingest.chunking import MultiSizeChunker, WindowChunker

        if self._chunker is None:
            chunking = self._new.chunking if self._new is not None else self._require_manifest().chunking
            # A legacy index (no chunking recorded) keeps its one window-filling size.
            self._chunker = WindowChunker(encoder) if chunking is None else MultiSizeChunker(encoder, chunking)
        return self._chunker

    def _writable_store(self, *, show_progress: bool = False) -> VectorStore:
        """The store for writing; a new index is made here, with the encoder loaded and its config resolved."""
        if self._store is None:
            new = self._pending()
            from tempscale_rag.encoder import TempScaleEncoder

            loaded = TempScaleEncoder(config=new.config)
            self._chunker = self._chunker_for(loaded)
            encoder = new.routed(loaded)
            self._create_store(encoder.config, encoder.model_name, encoder.dimension, show_progress)
            self._encoder = encoder
        store = self._require_store()
        if store.read_only:
            raise ValueError(
                f"the index at {self._folder} was opened for searching: use Index.open(..., writable=True)"
            )
        return store

    def _pending(self) -> _NewIndex:
        if self._new is None:  # pragma: no cover - only a new index lacks a store
            raise RuntimeError("not a new index")
        return self._new

    def _create_store(self, config: TempScaleConfig, model_name: str, dimension: int, show_progress: bool) -> None:
        from tempscale_rag.ingest.indexer import progress_printer

        manifest = self._pending().manifest(config, model_name, dimension)
        progress = progress_printer(show_progress)
        self._store = open_store(self._folder, manifest, progress=progress, **self._store_options)
        self._model = model_name
        self._new = None

    def _index_on_ray(
        self, paths: Sequence[str | Path], settings: RaySettings, options: dict[str, Any], *, prune: bool
    ) -> IndexSummary:
        """`index_folder` on a Ray cluster: the model is loaded in the actors, never in this process."""
        from tempscale_rag.distributed.indexing import index_on_ray

        if self._store is None:
            new = self._pending()
            planned = (new.config, new.chunking, new.size_temperatures)
        else:
            planned = (self.config, self._require_manifest().chunking, False)

        def store_for(model_name: str, dimension: int, config: TempScaleConfig) -> VectorStore:
            if self._store is None:
                self._create_store(config, model_name, dimension, options["show_progress"])
            else:
                check_dimension(self._require_manifest(), model_name, dimension, self._folder)
            return self._writable_store()

        return index_on_ray(paths, settings, options, planned, store_for, prune=prune)


def check_before_opening(
    folder: Path,
    model: str | None,
    expected_settings: Mapping[str, Any] | None,
    expected_chunking: Mapping[str, Any] | None,
) -> str:
    """`Index.open`'s checks, from the manifest alone (no model, no store): returns the model to load.

    Raises:
        IndexNotFoundError, IndexCorruptError, IndexMismatchError, SettingMismatchError, SettingError: As
            `Index.open` says.
    """
    manifest = read_manifest(folder)  # no index, or a damaged manifest: raised here
    differences = config_differences(manifest.config, expected_settings or {})
    differences += chunking_differences(manifest.chunking, expected_chunking or {})
    refuse_differences(folder, differences)
    model_name = check_model_setting(manifest, model, folder)
    check_declared_dimension(manifest, model_name, folder)
    return model_name


def describe_index(store: VectorStore, manifest: IndexManifest, folder: Path) -> dict[str, Any]:
    """`Index.info`: the store's integrity checked, then what it holds and the manifest, as plain JSON types."""
    check = getattr(store, "check_integrity", None)
    if callable(check):
        check()
    return {
        "index": str(folder.resolve()),
        "chunks": int(store.count()),
        "files": len(store.sources()),
        "model": manifest.model,
        "dimension": manifest.dimension,
        "store": manifest.store,
        "backend": manifest.backend.model_dump(mode="json"),
        "config": manifest.config.to_json_dict(),
        "chunking": manifest.chunking.to_json_dict() if manifest.chunking else None,
        "chunking_described": describe_chunking(manifest.chunking),
        "lexical": manifest.lexical.model_dump(mode="json") if manifest.lexical else None,
        "retrieval_described": describe_retrieval(manifest),
        "package_version": manifest.package_version,
        "format_version": manifest.format_version,
        "created_at": manifest.created_at.isoformat(),
        "updated_at": manifest.updated_at.isoformat(),
        "details": store.describe(),
    }


def describe_retrieval(manifest: IndexManifest) -> str:
    """How the index searches, in one line: its retrieval setting and its lexical channel (or that it has none)."""
    chunking = manifest.chunking
    lexical = manifest.lexical
    if lexical is None:
        return (
            "dense only: no lexical channel (built before hybrid retrieval or with --no-lexical; "
            "`tempscale-rag index --add-lexical` adds one without re-embedding)"
        )
    retrieval = chunking.retrieval if chunking is not None else "dense"
    fused = (
        f", fused by {chunking.fusion} (BM25 weight {chunking.lexical_weight:g}, top {chunking.fusion_depth} of each)"
        if chunking is not None and retrieval == "hybrid"
        else ""
    )
    whole = (
        f" and over whole documents (pivot {lexical.document_pivot:g} terms)"
        if lexical.document_pivot is not None
        else " (no whole-document list: built before it; `tempscale-rag index --add-lexical` adds it)"
    )
    return (
        f"{retrieval}{fused}; BM25 over the {lexical.chunk_size}-token chunks (pivot {lexical.pivot:g} terms, "
        f"k1 {lexical.k1:g}, b {lexical.b:g}, analyser {lexical.analyzer}){whole}"
    )


def check_query_vector(query: npt.ArrayLike, dimension: int, folder: Path) -> npt.NDArray[np.float32]:
    """A query vector as float32 if it is a finite 1-D float array of `dimension` values, else raise."""
    array = np.asarray(query)
    if array.ndim != 1 or array.shape[0] != dimension:
        raise ValueError(
            f"a query vector for the index at {folder} has {dimension} values (its dimension), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"a query must be a text or a float vector, got {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError("the query vector contains NaN or infinity")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def distinct_hits(hits: Sequence[SearchHit], k: int) -> list[SearchHit]:
    """The first `k` hits with different (source, text), best first: a text cut at several sizes is shown once."""
    seen: set[tuple[str, str]] = set()
    out = []
    for hit in hits:
        key = (hit.source, hit.text)
        if key not in seen:
            seen.add(key)
            out.append(hit)
            if len(out) == k:
                break
    return out


def check_declared_dimension(manifest: IndexManifest, model: str, folder: Path) -> None:
    """Refuse an index whose manifest disagrees with the dimension its model folder declares, before any load.

    Raises:
        IndexMismatchError: Worded from the index's side (its manifest, its model), with the way out.
    """
    declared = declared_dimension(model)
    if declared is not None:
        check_dimension(manifest, manifest.model, declared, folder)


def check_dimension(manifest: IndexManifest, model: str, dimension: int, folder: Path) -> None:
    """Refuse an index whose recorded dimension is not its model's.

    Raises:
        IndexMismatchError: If `dimension` (what `model` makes) differs from the manifest's.
    """
    if dimension == manifest.dimension:
        return
    raise IndexMismatchError(
        f"the index at {folder} records {manifest.dimension}-dimensional vectors in its manifest.json, but its model "
        f"{model!r} makes {dimension}-dimensional ones: the manifest was edited or belongs to another index. Rebuild "
        f"the index: delete {folder} (or use another folder) and build it again"
    )


__all__ = [
    "DEFAULT_EVIDENCE",
    "Index",
    "check_declared_dimension",
    "check_dimension",
    "check_query_vector",
    "describe_index",
    "distinct_hits",
]
