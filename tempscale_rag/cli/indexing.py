"""`tempscale-rag index`, `search`, `info` and `repair`: build an index from a folder, query it, describe it, mend it.

Every argument is checked, and an existing index's manifest compared with the flags, before torch or a model is
loaded: a mistake costs no model load and changes nothing.

Settings of an existing index: a flag left out means "the index's own value"; a flag that shapes the index
(embedding settings, chunking, `--hnsw`, the store and its location) and differs from the recorded value is refused
with the way to rebuild. Query settings (`--query-temperature`, `--query-prompt`) are recorded at index time and
used by `search`; on re-index a different value is refused too, since it would have no effect.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from tempscale_rag.cli.options import (
    EXIT_OK,
    EXIT_PARTIAL,
    RUNTIME_FIELDS,
    add_argument,
    add_config_flags,
    config_from_args,
    given_config_fields,
    quiet_model_loading,
    temperature_flags_given,
)
from tempscale_rag.config import (
    BUNDLED_MODEL,
    DEFAULT_DOC_SCORE,
    ChunkingConfig,
    TempScaleConfig,
    chunk_routing,
    read_chunking,
)
from tempscale_rag.distributed.cli import add_ray_flags, run_index_on_ray, wants_ray

logger = logging.getLogger(__name__)

DEFAULT_INDEX = "tempscale-index"
DEFAULT_COLLECTION = "tempscale"
EVIDENCE_CHUNKS = 3
"""Chunks shown per document by `search --documents`."""

_REBUILD = (
    "leave these flags out to re-index with the index's own settings, or rebuild with the new ones: delete {folder} "
    "(or pick another --out) and run `tempscale-rag index` again"
)


def register(subparsers: Any) -> None:
    """Add the `index`, `search`, `info` and `repair` subcommands."""
    index = subparsers.add_parser(
        "index",
        help="Index files and folders (txt, md, rst, html, pdf) incrementally.",
        description="Chunk documents at every chunk size, embed them with TempScale and store them. Unchanged files "
        "are skipped, changed files replaced; an interrupted run is finished by running it again. On an existing "
        "index, left-out flags keep the index's recorded settings and differing ones are refused. Temperatures: "
        "--temperature/--buckets/--schedule/--calibration, when given, apply to every chunk; otherwise each chunk "
        "size is a length bucket with its own temperature (--chunk-tokens SIZE:TAU, or the defaults).",
    )
    add_argument(index, "paths", nargs="+", metavar="PATH", help="Files or folders (walked recursively).")
    _add_store_flags(index)
    add_argument(index, "--prune", action="store_true", help="Remove indexed files that no longer exist.")
    add_argument(index, "--include-hidden", action="store_true", help="Also index hidden files and folders (.name).")
    add_argument(
        index,
        "--chunk-tokens",
        default=None,
        metavar="SIZES",
        help="Chunk sizes in model tokens; every document is chunked at every size, each size its own length bucket "
        "and temperature: '64,128,256' or with temperatures '64:1.0,128:1.0,256:0.8'.",
        shown_default=ChunkingConfig().spec(),
    )
    add_argument(
        index,
        "--chunk-overlap-tokens",
        type=int,
        default=None,
        metavar="N",
        help="Tokens shared by adjacent chunks of one size.",
        shown_default="min(32, size // 8)",
    )
    add_argument(
        index,
        "--doc-score",
        default=None,
        metavar="NAME",
        help="How `search --documents` scores a document from its chunks (max, mean, hybrid, topm, softmax); "
        "recorded in the index.",
        shown_default=DEFAULT_DOC_SCORE,
    )
    add_argument(index, "--max-file-mb", type=float, default=64.0, help="Skip files larger than this.")
    add_argument(index, "--commit-every", type=int, default=256, help="Chunks embedded and committed together.")
    add_argument(
        index,
        "--hnsw",
        action="store_true",
        help="FAISS: approximate HNSW index instead of exact search (recorded; a new index only).",
    )
    add_argument(index, "--json", action="store_true", help="Print the summary as JSON on stdout.")
    add_config_flags(index)
    add_ray_flags(index)
    index.set_defaults(run=run_index, loads_model=False)

    search = subparsers.add_parser(
        "search",
        help="Search an index.",
        description="Rank indexed chunks (or, with --documents, whole files) for a query, embedded with the index's "
        "own settings.",
    )
    add_argument(search, "query", metavar="QUERY", help="The query text.")
    add_argument(search, "-k", "--top-k", dest="k", type=int, default=5, help="Number of results.")
    add_argument(search, "--json", action="store_true", help="Print results as a JSON list, best first.")
    add_argument(
        search,
        "--documents",
        action="store_true",
        help="Rank files instead of chunks: one entry per file with its score and best chunks.",
    )
    add_argument(
        search,
        "--doc-score",
        default=None,
        metavar="NAME",
        help="With --documents: how a file is scored from its chunks (max, mean, hybrid, topm, softmax).",
        shown_default="the index's recorded one",
    )
    add_argument(search, "--device", default=None, help="torch device for the query encoder.", shown_default="auto")
    add_argument(
        search,
        "--model",
        default=None,
        help="The index's model at another path (a moved local model folder); accepted only when it holds the same "
        "model.",
        shown_default="the index's model",
    )
    _add_store_flags(search)
    search.set_defaults(run=run_search, loads_model=False)

    info = subparsers.add_parser("info", help="Describe an index.", description="What an index holds, how built.")
    add_argument(info, "--json", action="store_true", help="Print as JSON.")
    _add_store_flags(info)
    info.set_defaults(run=run_info, loads_model=False)

    repair = subparsers.add_parser(
        "repair",
        help="Salvage a damaged FAISS index.",
        description="Rebuild chunks.sqlite from its readable rows (the damaged file is kept beside it) and "
        "vectors.faiss from that. Files whose chunks were lost are dropped from the index; re-run `tempscale-rag "
        "index` on your folders afterwards to embed them again.",
    )
    add_argument(repair, "--json", action="store_true", help="Print the report as JSON.")
    _add_store_flags(repair)
    repair.set_defaults(run=run_repair, loads_model=False)


def _add_store_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("index location")
    add_argument(group, "--out", "--index", dest="out", default=DEFAULT_INDEX, help="Index folder (manifest, data).")
    add_argument(group, "--store", choices=("faiss", "qdrant"), default=None, help="Backend.", shown_default="faiss")
    add_argument(group, "--qdrant-url", default=None, help="Qdrant server URL (API key from QDRANT_API_KEY).")
    add_argument(
        group,
        "--qdrant-path",
        default=None,
        help="Qdrant local-mode folder, relative to the current folder.",
        shown_default="'qdrant' inside --out",
    )
    add_argument(group, "--collection", default=None, help="Qdrant collection name.", shown_default=DEFAULT_COLLECTION)


# --- checks that need no model ---------------------------------------------------------------------------------------


def _requested_backend(args: argparse.Namespace) -> Any:
    """The backend settings the store flags ask for (the default when none is given)."""
    from tempscale_rag.stores.manifest import FaissSettings, QdrantSettings

    if args.qdrant_url and args.qdrant_path:
        raise ValueError("give either --qdrant-url or --qdrant-path, not both")
    qdrant_flags = args.qdrant_url or args.qdrant_path or args.collection
    store = args.store or ("qdrant" if qdrant_flags else "faiss")
    if store == "faiss" and qdrant_flags:
        raise ValueError("--qdrant-url, --qdrant-path and --collection are for --store qdrant")
    if store == "qdrant":
        if getattr(args, "hnsw", False):
            raise ValueError("--hnsw is a FAISS setting; Qdrant builds its own HNSW index")
        # Relative to where the user typed it, as every other path on the command line.
        path = str(Path(args.qdrant_path).expanduser().resolve()) if args.qdrant_path else None
        return QdrantSettings(collection=args.collection or DEFAULT_COLLECTION, url=args.qdrant_url, path=path)
    return FaissSettings(index="hnsw" if getattr(args, "hnsw", False) else "flat")


def _store_flag_problems(args: argparse.Namespace, stored: Any) -> list[str]:
    """Store flags that disagree with an existing index's manifest (a left-out flag agrees)."""
    problems = []
    backend = stored.backend
    if args.store is not None and args.store != stored.store:
        problems.append(f"--store: the index is {stored.store}, you asked for {args.store}")
    if stored.store == "faiss":
        for flag, value in (
            ("--qdrant-url", args.qdrant_url),
            ("--qdrant-path", args.qdrant_path),
            ("--collection", args.collection),
        ):
            if value is not None and not (args.store is not None and args.store != stored.store):
                problems.append(f"{flag}: the index is a local FAISS index, it has no Qdrant settings")
        if getattr(args, "hnsw", False) and backend.index != "hnsw":
            problems.append(f"--hnsw: the index is FAISS {backend.index!r}")
        return problems
    if getattr(args, "hnsw", False):
        problems.append("--hnsw: the index is a Qdrant index")
    if args.qdrant_url is not None and args.qdrant_url != backend.url:
        problems.append(f"--qdrant-url: the index uses {backend.url or 'local mode'}, you asked for {args.qdrant_url}")
    if args.qdrant_path is not None:
        wanted = Path(args.qdrant_path).expanduser().resolve()
        have = backend.local_path(Path(args.out))
        if have is None or have.resolve() != wanted:
            problems.append(f"--qdrant-path: the index uses {have or backend.url}, you asked for {wanted}")
    if args.collection is not None and args.collection != backend.collection:
        problems.append(f"--collection: the index uses {backend.collection!r}, you asked for {args.collection!r}")
    return problems


def _refuse(problems: list[str], folder: Path, what: str = "settings") -> None:
    from tempscale_rag.stores.base import IndexMismatchError

    if problems:
        raise IndexMismatchError(
            f"the index at {folder} was built with other {what} ({'; '.join(problems)}): "
            + _REBUILD.format(folder=folder)
        )


def _chunking_from_args(args: argparse.Namespace) -> ChunkingConfig:
    """The chunking asked for on the command line, the defaults filling what was left out."""
    fields: dict[str, Any] = {}
    if args.chunk_overlap_tokens is not None:
        fields["overlap_tokens"] = args.chunk_overlap_tokens
    if args.doc_score is not None:
        fields["doc_score"] = args.doc_score
    if args.chunk_tokens is not None:
        return ChunkingConfig.parse(args.chunk_tokens, **fields)
    calibrated = read_chunking(args.calibration) if getattr(args, "calibration", None) else None
    if calibrated is not None:
        # A per-chunk-size calibration file (`calibrate`) carries its sizes and their taus: index at those sizes.
        return calibrated.model_copy(update=fields)
    return ChunkingConfig(**fields)


def _chunking_problems(args: argparse.Namespace, stored: ChunkingConfig | None) -> list[str]:
    given = {
        "--chunk-tokens": args.chunk_tokens,
        "--chunk-overlap-tokens": args.chunk_overlap_tokens,
        "--doc-score": args.doc_score,
    }
    given = {flag: value for flag, value in given.items() if value is not None}
    if not given:
        return []
    if stored is None:
        return [
            f"{', '.join(given)}: the index was made before chunk settings were recorded "
            "(one chunk size filling the model window)"
        ]
    requested = _chunking_from_args(args)
    problems = []
    if args.chunk_tokens is not None:
        sizes_differ = requested.sizes != stored.sizes
        taus_differ = requested.temperatures is not None and requested.taus != stored.taus
        if sizes_differ or taus_differ:
            problems.append(f"--chunk-tokens: the index has {stored.spec()}, you asked for {args.chunk_tokens}")
    if args.chunk_overlap_tokens is not None and requested.overlap_tokens != stored.overlap_tokens:
        have = "min(32, size // 8)" if stored.overlap_tokens is None else stored.overlap_tokens
        problems.append(f"--chunk-overlap-tokens: the index has {have}, you asked for {args.chunk_overlap_tokens}")
    if args.doc_score is not None and args.doc_score != stored.doc_score:
        problems.append(f"--doc-score: the index has {stored.doc_score!r}, you asked for {args.doc_score!r}")
    return problems


def _config_problems(args: argparse.Namespace, stored: Any) -> list[str]:
    """Embedding flags that differ from the index's recorded configuration (model identity is checked apart)."""
    given = [name for name in given_config_fields(args) if name != "model"]
    if not given and not args.calibration:
        return []
    requested = config_from_args(args, model=stored.config.model)  # validated, may read a calibration file
    problems = []
    for name in given:
        have, want = getattr(stored.config, name), getattr(requested, name)
        if have != want:
            shown = ",".join(f"{b.label()}:{b.tau:g}" for b in want) if name == "buckets" else want
            was = ",".join(f"{b.label()}:{b.tau:g}" for b in have) if name == "buckets" else have
            problems.append(f"--{name.replace('_', '-')}: the index has {was!r}, you asked for {shown!r}")
    if args.calibration and requested.buckets != stored.config.buckets:
        problems.append(f"--calibration: {args.calibration} has other bucket temperatures than the index")
    return problems


def _check_model_flag(args: argparse.Namespace, stored: Any, folder: Path) -> str:
    """The model to load for an existing index: `--model` when it is the index's model, else the recorded one."""
    from tempscale_rag.stores.base import IndexMismatchError
    from tempscale_rag.stores.manifest import same_model

    model = getattr(args, "model", None)
    if model is not None:
        if not same_model(stored, model):
            raise IndexMismatchError(
                f"the index at {folder} was built with model {stored.model!r}; --model {model} is another model "
                "(a moved model folder is accepted only when its files are the same): leave --model out, or rebuild "
                "the index with the new model under another --out"
            )
        return model
    recorded = stored.config.model
    if recorded != BUNDLED_MODEL and Path(recorded).is_absolute() and not Path(recorded).exists():
        raise ValueError(
            f"the index at {folder} was built with the model folder {recorded}, which no longer exists; if you moved "
            "it, pass its new location with --model PATH (checked to be the same model)"
        )
    return recorded


def _check_paths(paths: list[str]) -> None:
    missing = [p for p in paths if not Path(p).expanduser().exists() and not Path(p).expanduser().is_symlink()]
    if missing:
        raise ValueError(
            f"input path{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"do{'' if len(missing) > 1 else 'es'} not exist; nothing was indexed"
        )


def _stored_manifest(folder: Path) -> Any:
    from tempscale_rag.stores.manifest import manifest_path, read_manifest

    return read_manifest(folder) if manifest_path(folder).exists() else None


# --- index ------------------------------------------------------------------------------------------------------------


def indexer_options(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The `index` flags every indexer takes (`FolderIndexer`, and `RayIndexer` for `--ray`)."""
    return {
        "max_file_bytes": int(args.max_file_mb * 1e6),
        "batch_chunks": args.commit_every,
        "show_progress": not args.quiet,
        "include_hidden": args.include_hidden,
        "index_dir": folder,
    }


def run_index(args: argparse.Namespace) -> int:
    """Index PATHs into the store at --out."""
    if not args.paths:
        raise ValueError("give at least one file or folder to index (or set TEMPSCALE_PATHS)")
    _check_paths(args.paths)
    if args.commit_every < 1:
        raise ValueError(f"--commit-every must be at least 1, got {args.commit_every}")
    if args.max_file_mb <= 0:
        raise ValueError(f"--max-file-mb must be positive, got {args.max_file_mb}")
    for flag in ("ray_actors", "ray_writers"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    folder = Path(args.out)
    stored = _stored_manifest(folder)  # a corrupt manifest fails here, before any model is loaded
    runtime = {k: getattr(args, k) for k in RUNTIME_FIELDS if getattr(args, k) is not None}
    chunking: ChunkingConfig | None
    if stored is not None:
        problems = _store_flag_problems(args, stored) + _config_problems(args, stored)
        problems += _chunking_problems(args, stored.chunking)
        _refuse(problems, folder)
        model = _check_model_flag(args, stored, folder)
        config = TempScaleConfig(**{**stored.config.model_dump(), **runtime, "model": model})
        chunking = stored.chunking
        derive_buckets = False
        backend = stored.backend
    else:
        config = config_from_args(args)
        chunking = _chunking_from_args(args)
        from_calibration = args.chunk_tokens is None and bool(getattr(args, "calibration", None))
        derive_buckets = not temperature_flags_given(args) or (from_calibration and chunking.temperatures is not None)
        if not derive_buckets and chunking.temperatures is not None:
            raise ValueError(
                "temperatures given twice: --chunk-tokens SIZE:TAU sets one per chunk size, and --temperature, "
                "--buckets, --schedule or --calibration set them for every chunk; use one or the other"
            )
        backend = _requested_backend(args)
    _check_chunk_sizes_fit(config, chunking)
    if wants_ray(args):
        return run_index_on_ray(args, config, stored, chunking, derive_buckets, backend)

    from tempscale_rag.encoder import TempScaleEncoder
    from tempscale_rag.ingest.chunking import MultiSizeChunker, WindowChunker
    from tempscale_rag.ingest.indexer import FolderIndexer, progress_printer
    from tempscale_rag.stores import open_store

    quiet_model_loading()
    encoder = TempScaleEncoder(config=config)
    chunker: WindowChunker | MultiSizeChunker
    if chunking is None:
        chunker = WindowChunker(encoder)  # a legacy index: one window-filling size, as it was built
    else:
        chunker = MultiSizeChunker(encoder, chunking)
        if derive_buckets:
            encoder = encoder.with_config(**chunk_routing(config, chunker.routing_buckets()))
    manifest = index_manifest(stored, encoder.config, encoder.model_name, encoder.dimension, backend, chunking, folder)
    show = not args.quiet
    with open_store(folder, manifest, progress=progress_printer(show)) as store:
        indexer = FolderIndexer(encoder, store, chunker=chunker, **indexer_options(args, folder))
        summary = indexer.run(args.paths, prune=args.prune)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_summary(summary, folder, details=args.verbose > 0)
    return EXIT_PARTIAL if summary.files_failed else EXIT_OK


def index_manifest(
    stored: Any,
    config: TempScaleConfig,
    model_name: str,
    dimension: int,
    backend: Any,
    chunking: ChunkingConfig | None,
    folder: Path,
) -> Any:
    """The manifest `index` writes: the stored one with the engine config in use, or a new one.

    Args:
        stored: The manifest already in `folder`, or None.
        config: The engine configuration the chunks are embedded with (routing buckets included).
        model_name: The loaded model's name.
        dimension: Its vector dimension.
        backend: The store settings of a new index.
        chunking: The chunk sizes of a new index (None: legacy).
        folder: The index folder (for messages).

    Raises:
        IndexMismatchError: If the model makes vectors of another dimension than the stored index holds.
    """
    from tempscale_rag.stores.manifest import IndexManifest, model_digest

    if stored is not None:
        if dimension != stored.dimension:
            _refuse([f"the model makes {dimension}-dim vectors, the index holds {stored.dimension}"], folder)
        # The index's own identity, even when its model folder was moved (`_check_model_flag` proved it the same).
        return stored.model_copy(update={"config": config})
    digest = None if model_name == BUNDLED_MODEL else model_digest(model_name)
    return IndexManifest.new(
        model=model_name,
        dimension=dimension,
        config=config,
        backend=backend,
        chunking=chunking,
        model_digest=digest,
    )


def _check_chunk_sizes_fit(config: TempScaleConfig, chunking: ChunkingConfig | None) -> None:
    """Refuse chunk sizes above an explicit --max-seq-length before loading the model (the engine re-checks)."""
    if chunking is None or config.max_seq_length is None:
        return
    if chunking.sizes[-1] >= config.max_seq_length:
        raise ValueError(
            f"chunk size {chunking.sizes[-1]} does not fit --max-seq-length {config.max_seq_length} (with the "
            "special tokens): lower --chunk-tokens or raise --max-seq-length"
        )


def _print_summary(summary: Any, folder: Path, details: bool = False) -> None:
    for line in summary.lines(folder, details=details):
        print(line)
    if summary.files_failed:
        print(f"exit code {EXIT_PARTIAL}: {len(summary.files_failed)} files could not be indexed (listed above)")


# --- search, info, repair --------------------------------------------------------------------------------------------


def _open_for_reading(args: argparse.Namespace) -> tuple[Any, Any]:
    from tempscale_rag.stores import manifest_of, open_store

    folder = Path(args.out)
    stored = _stored_manifest(folder)
    if stored is not None:
        _refuse(_store_flag_problems(args, stored), folder, what="store settings")
    store = open_store(folder, read_only=True)
    return store, manifest_of(store)


def run_search(args: argparse.Namespace) -> int:
    """Embed QUERY with the index's own settings and print the top-k chunks or documents."""
    if not args.query or not args.query.strip():
        raise ValueError("the query is empty; give some text to search for (or set TEMPSCALE_QUERY)")
    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    if args.doc_score is not None:
        if not args.documents:
            raise ValueError("--doc-score scores documents: add --documents")
        ChunkingConfig(doc_score=args.doc_score)  # validates the name
    store, manifest = _open_for_reading(args)
    with store:
        model = _check_model_flag(args, manifest, Path(args.out))
        from tempscale_rag.encoder import TempScaleEncoder
        from tempscale_rag.stores.manifest import check_compatible

        changes: dict[str, Any] = {"model": model}
        if args.device:
            changes["device"] = args.device
        quiet_model_loading()
        encoder = TempScaleEncoder(config=manifest.config.model_copy(update=changes))
        # The name may differ after a moved model folder (same_model checked the files); the dimension may not.
        check_compatible(manifest, manifest.model, encoder.dimension, where=args.out)
        query_vector = encoder.encode([args.query], query=True)[0]
        if args.documents:
            return _search_documents(args, store, manifest, query_vector)
        # A text shorter than a chunk size is the same chunk at that size and every larger one (a 150-token file is
        # one chunk at 192 and at 499 tokens): fetch enough to show k different texts.
        copies = len(manifest.chunking.sizes) if manifest.chunking else 1
        hits = distinct_hits(store.search(query_vector, k=args.k * copies), args.k)
    results = [
        {
            "rank": i + 1,
            "score": h.score,
            "source": h.source,
            "position": h.position,
            "text": h.text,
            "token_length": h.token_length,
            "bucket": h.bucket,
            "chunk_tokens": h.metadata.get("chunk_tokens"),
        }
        for i, h in enumerate(hits)
    ]
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not results:
        print(f"no results: the index at {args.out} is empty")
    for r in results:
        # Chunks of different sizes can start alike (a 192- and a 499-token chunk from one heading): say which is which.
        size = f", {r['chunk_tokens']}-token size" if r["chunk_tokens"] is not None else ""
        print(f"{r['rank']:>2}. {r['score']:.4f}  {r['source']}  [chunk {r['position']}{size}]")
        print(f"    {_snippet(r['text'])}")
    return EXIT_OK


def distinct_hits(hits: list[Any], k: int) -> list[Any]:
    """The first `k` hits with different (source, text), best first.

    The same text cut at several chunk sizes is shown once, with its best score.
    """
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


def _snippet(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat[:limit] + ("..." if len(flat) > limit else "")


def _search_documents(args: argparse.Namespace, store: Any, manifest: Any, query_vector: Any) -> int:
    doc_score = args.doc_score or (manifest.chunking.doc_score if manifest.chunking else DEFAULT_DOC_SCORE)
    from tempscale_rag.ranking import document_scoring, search_documents

    copies = len(manifest.chunking.sizes) if manifest.chunking else 1
    scoring = document_scoring(doc_score, manifest.chunking)
    documents = search_documents(store, query_vector, args.k, scoring=scoring, evidence=EVIDENCE_CHUNKS * copies)
    results: list[dict[str, Any]] = [
        {
            "source": doc.source,
            "score": float(doc.score),
            "chunks": [
                {"text": h.text, "position": h.position, "score": float(h.score)}
                for h in distinct_hits(doc.chunks, EVIDENCE_CHUNKS)
            ],
        }
        for doc in documents
    ]
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not results:
        print(f"no results: the index at {args.out} is empty")
    for rank, doc in enumerate(results, 1):
        print(f"{rank:>2}. {doc['score']:.4f}  {doc['source']}")
        if doc["chunks"]:
            best = doc["chunks"][0]
            print(f"    [chunk {best['position']}, {best['score']:.4f}] {_snippet(best['text'])}")
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    """Print what the index holds and how it was built; check the database's integrity on the way."""
    from tempscale_rag.stores.manifest import describe_chunking

    store, manifest = _open_for_reading(args)
    with store:
        check = getattr(store, "check_integrity", None)
        if callable(check):
            check()
        described = store.describe()
        info = {
            "index": str(Path(args.out).resolve()),
            "chunks": int(store.count()),
            "files": len(store.sources()),
            "model": manifest.model,
            "dimension": manifest.dimension,
            "store": manifest.store,
            "backend": manifest.backend.model_dump(mode="json"),
            "config": manifest.config.to_json_dict(),
            "chunking": manifest.chunking.to_json_dict() if manifest.chunking else None,
            "package_version": manifest.package_version,
            "format_version": manifest.format_version,
            "created_at": manifest.created_at.isoformat(),
            "updated_at": manifest.updated_at.isoformat(),
            "details": described,
        }
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return EXIT_OK
    config = manifest.config
    if config.temperature is not None:
        temps = f"global tau {config.temperature:g}"
    elif config.schedule is not None:
        temps = f"schedule {config.schedule} (n0={config.schedule_n0})"
    else:
        temps = ", ".join(f"{b.label()}: {b.tau:g}" for b in config.buckets)
    print(f"index      {info['index']}")
    backend = manifest.backend
    where = (
        f"FAISS {backend.index}"
        if manifest.store == "faiss"
        else f"Qdrant collection {backend.collection!r} at {backend.url or backend.local_path(Path(args.out))}"
    )
    print(f"holds      {info['files']} files, {info['chunks']} chunks ({where})")
    print(f"model      {manifest.model} (dim {manifest.dimension}), window {config.max_seq_length or 'full'}")
    print(f"chunks     {describe_chunking(manifest.chunking)}")
    print(f"temps      {temps}; long text: {config.long_text}")
    if config.query_temperature is not None:
        print(f"queries    tau {config.query_temperature:g}")
    if config.calibration_file:
        print(f"calibrated {config.calibration_file}")
    print(f"built by   tempscale-rag {manifest.package_version}, updated {info['updated_at']}")
    return EXIT_OK


def run_repair(args: argparse.Namespace) -> int:
    """Salvage a damaged FAISS index in place."""
    from tempscale_rag.stores.faiss.repair import repair_faiss_index

    folder = Path(args.out)
    stored = _stored_manifest(folder)
    if stored is None:
        raise ValueError(f"{folder} holds no tempscale-rag index (no manifest.json): nothing to repair")
    if stored.store != "faiss":
        raise ValueError(
            f"the index at {folder} is a Qdrant index; `repair` mends FAISS indexes. Rebuild a Qdrant index: delete "
            "it (and its collection) and run `tempscale-rag index` again"
        )
    report = repair_faiss_index(folder, stored)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.describe())
    # Partial: the index is consistent again, but the files whose chunks were lost need `index` to come back.
    return EXIT_PARTIAL if report.files_lost else EXIT_OK
