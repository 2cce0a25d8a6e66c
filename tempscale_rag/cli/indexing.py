"""`tempscale-rag index`, `search`, `info` and `repair`: thin commands over `Index` (and the FAISS repair).

Every argument is checked, and an existing index's manifest compared with the flags, before torch or a model is
loaded: a mistake costs no model load and changes nothing. `Index` does the checks and words them by setting; the
CLI maps settings to its flags (`flag_for_setting`) and checks its own store flags (`--store`, `--qdrant-*`, `--hnsw`).

Settings of an existing index: a flag left out means "the index's own value"; a flag that shapes the index
(embedding settings, chunking, `--hnsw`, the store and its location) and differs from the recorded value is refused
with the way to rebuild. Query settings (`--query-temperature`, `--query-prompt`, `--doc-score`) are recorded at index
time and used by `search`; on re-index a different value is refused too, since it would have no effect.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
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
from tempscale_rag.cli.ray import add_ray_flags, ray_settings
from tempscale_rag.config import DEFAULT_DOC_SCORE, PRESETS, RETRIEVALS, ChunkingConfig, read_chunking

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
    _register_index(subparsers)
    _register_search(subparsers)
    _register_info_and_repair(subparsers)


def _register_index(subparsers: Any) -> None:
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
    add_argument(
        index,
        "--preset",
        default="default",
        choices=tuple(PRESETS),
        help="Chunk settings of a new index by name: 'fast' is one 499-token size fused with BM25 (about a quarter "
        "of the default's embedding work; see the README for its quality); --chunk-tokens and other flags override it.",
    )
    add_argument(
        index,
        "--retrieval",
        default=None,
        choices=RETRIEVALS,
        help="How `search` ranks: 'hybrid' fuses the TempScale vectors with BM25 over the largest chunks, 'dense' "
        "uses the vectors alone, 'lexical' BM25 alone; recorded in the index.",
        shown_default="hybrid",
    )
    add_argument(
        index,
        "--no-lexical",
        action="store_true",
        help="Build no lexical (BM25) channel: a dense-only index (a new index only).",
    )
    add_argument(
        index,
        "--add-lexical",
        action="store_true",
        help="Give an existing dense-only index its lexical channel from the stored chunk texts (no re-embedding).",
    )
    add_argument(index, "--max-file-mb", type=_size_mb, default=64.0, help="Skip larger files ('none': no limit).")
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


def _register_search(subparsers: Any) -> None:
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
    add_argument(
        search,
        "--retrieval",
        default=None,
        choices=RETRIEVALS,
        help="'hybrid' (vectors and BM25 fused), 'dense' or 'lexical' (BM25 alone: no model is loaded).",
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


def _register_info_and_repair(subparsers: Any) -> None:
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
    add_argument(
        group,
        "--qdrant-engine",
        choices=("edge", "local"),
        default=None,
        help="Embedded Qdrant of a new index: Qdrant Edge, or qdrant-client's local mode (slow; small indexes).",
        shown_default="edge",
    )


# --- checks that need no model ---------------------------------------------------------------------------------------


def _requested_backend(args: argparse.Namespace) -> Any:
    """The backend settings the store flags ask for (the default when none is given)."""
    from tempscale_rag.stores.manifest import FaissSettings, QdrantSettings

    if args.qdrant_url and args.qdrant_path:
        raise ValueError("give either --qdrant-url or --qdrant-path, not both")
    qdrant_flags = args.qdrant_url or args.qdrant_path or args.collection or getattr(args, "qdrant_engine", None)
    store = args.store or ("qdrant" if qdrant_flags else "faiss")
    if store == "faiss" and qdrant_flags:
        raise ValueError("--qdrant-url, --qdrant-path and --collection are for --store qdrant")
    if store == "qdrant":
        if getattr(args, "hnsw", False):
            raise ValueError("--hnsw is a FAISS setting; Qdrant builds its own HNSW index")
        # Relative to where the user typed it, as every other path on the command line.
        path = str(Path(args.qdrant_path).expanduser().resolve()) if args.qdrant_path else None
        # New embedded indexes run on Qdrant Edge; qdrant-client's local mode only when asked for by name.
        engine = "local" if args.qdrant_url or getattr(args, "qdrant_engine", None) == "local" else "edge"
        return QdrantSettings(
            collection=args.collection or DEFAULT_COLLECTION, url=args.qdrant_url, path=path, engine=engine
        )
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


def _chunking_from_args(args: argparse.Namespace) -> ChunkingConfig:
    """The chunking asked for on the command line, the defaults filling what was left out."""
    fields: dict[str, Any] = {}
    if args.chunk_overlap_tokens is not None:
        fields["overlap_tokens"] = args.chunk_overlap_tokens
    if args.doc_score is not None:
        fields["doc_score"] = args.doc_score
    if args.retrieval is not None:
        fields["retrieval"] = args.retrieval
    if args.chunk_tokens is not None:
        preset = {name: value for name, value in PRESETS[args.preset].items() if name != "sizes"}
        return ChunkingConfig.parse(args.chunk_tokens, **{**preset, **fields})
    calibrated = read_chunking(args.calibration) if getattr(args, "calibration", None) else None
    if calibrated is not None:
        # A per-chunk-size calibration file (`calibrate`) carries its sizes and their taus: index at those sizes.
        return calibrated.model_copy(update=fields)
    return ChunkingConfig.preset(args.preset, **fields)


def _expected_chunking(args: argparse.Namespace) -> dict[str, Any]:
    """The chunk settings the `index` flags state (left-out flags state nothing)."""
    expected: dict[str, Any] = {}
    if args.chunk_tokens is not None:
        parsed = ChunkingConfig.parse(args.chunk_tokens)
        expected["sizes"] = parsed.sizes
        if parsed.temperatures is not None:
            expected["temperatures"] = parsed.temperatures
    if args.chunk_overlap_tokens is not None:
        expected["overlap_tokens"] = args.chunk_overlap_tokens
    if args.doc_score is not None:
        expected["doc_score"] = args.doc_score
    if args.retrieval is not None:
        expected["retrieval"] = args.retrieval
    return expected


def _expected_settings(args: argparse.Namespace, stored: Any) -> dict[str, Any]:
    """The embedding settings the `index` flags state for an existing index (model identity is checked apart)."""
    given = [name for name in given_config_fields(args) if name != "model"]
    if not given and not args.calibration:
        return {}
    requested = config_from_args(args, model=stored.config.model)  # validated, may read a calibration file
    expected = {name: getattr(requested, name) for name in given}
    if args.calibration:
        expected["buckets"] = requested.buckets
    return expected


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


def _open_index(args: argparse.Namespace, *, writable: bool = False, **expected: Any) -> Any:
    """`Index.open` on --out, the store flags checked against its manifest first."""
    from tempscale_rag.index import Index

    folder = Path(args.out)
    stored = _stored_manifest(folder)  # a corrupt manifest fails here, before any model is loaded
    if stored is not None:
        _refuse(_store_flag_problems(args, stored), folder, what="store settings")
    run = {name: getattr(args, name, None) for name in RUNTIME_FIELDS}
    return Index.open(folder, writable=writable, model=getattr(args, "model", None), **expected, **run)


def _refuse(problems: list[str], folder: Path, what: str = "settings") -> None:
    from tempscale_rag.stores.errors import IndexMismatchError

    if problems:
        raise IndexMismatchError(
            f"the index at {folder} was built with other {what} ({'; '.join(problems)}): "
            + _REBUILD.format(folder=folder)
        )


# --- index ------------------------------------------------------------------------------------------------------------


def _size_mb(text: str) -> float | None:
    """`--max-file-mb`: a number (checked by `run_index`), or `none` for no limit."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of MB: {text!r} (or 'none' for no limit)") from None


def run_index(args: argparse.Namespace) -> int:
    """Index PATHs into the index at --out (created with the flags' settings, or opened with its own)."""
    if not args.paths:
        raise ValueError("give at least one file or folder to index (or set TEMPSCALE_PATHS)")
    _check_paths(args.paths)
    if args.commit_every < 1:
        raise ValueError(f"--commit-every must be at least 1, got {args.commit_every}")
    if args.max_file_mb is not None and not (math.isfinite(args.max_file_mb) and args.max_file_mb > 0):
        raise ValueError(
            f"--max-file-mb must be a number of MB above 0, got {args.max_file_mb}; use --max-file-mb none for no limit"
        )
    ray = ray_settings(args)
    folder = Path(args.out)
    stored = _stored_manifest(folder)
    if stored is not None:
        expected = {
            "expected_settings": _expected_settings(args, stored),
            "expected_chunking": _expected_chunking(args),
        }
        if args.no_lexical:
            raise ValueError(
                f"--no-lexical applies to a new index; {folder} exists (its channels are kept as they are)"
            )
        index = _open_index(args, writable=True, **expected)
        if args.add_lexical:
            settings = index.add_lexical()
            print(
                f"lexical channel: BM25 over the {settings.chunk_size}-token chunks"
                + (" and over whole documents" if settings.document_pivot is not None else ""),
                file=sys.stderr,
            )
    else:
        from tempscale_rag.ingest.indexer import nothing_to_index

        empty = nothing_to_index(args.paths, include_hidden=args.include_hidden, exclude=[folder])
        if empty is not None:
            raise ValueError(f"{empty}; no index was created at {folder}")
        index = _create_index(args, folder)
    quiet_model_loading()
    with index:
        summary = index.index_folder(
            args.paths,
            prune=args.prune,
            include_hidden=args.include_hidden,
            # `none`: no limit (`Index.index_folder` reads None as its default size limit).
            max_file_bytes=sys.maxsize if args.max_file_mb is None else int(args.max_file_mb * 1e6),
            batch_chunks=args.commit_every,
            show_progress=not args.quiet,
            ray=ray,
        )
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_summary(summary, folder, details=args.verbose > 0)
    return EXIT_PARTIAL if summary.files_failed else EXIT_OK


def _create_index(args: argparse.Namespace, folder: Path) -> Any:
    """A new index with the flags' settings (the store is made at the first write)."""
    from tempscale_rag.index import Index

    config = config_from_args(args)
    chunking = _chunking_from_args(args)
    from_calibration = args.chunk_tokens is None and bool(getattr(args, "calibration", None))
    # Per-size temperatures unless a flag sets them for every chunk (a per-size calibration file sets them per size).
    size_temperatures = not temperature_flags_given(args) or (from_calibration and chunking.temperatures is not None)
    if not size_temperatures and chunking.temperatures is not None:
        raise ValueError(
            "temperatures given twice: --chunk-tokens SIZE:TAU sets one per chunk size, and --temperature, "
            "--buckets, --schedule or --calibration set them for every chunk; use one or the other"
        )
    return Index.create(
        folder,
        config,
        chunking=chunking,
        backend=_requested_backend(args),
        size_temperatures=size_temperatures,
        lexical=not args.no_lexical,
    )


def _print_summary(summary: Any, folder: Path, details: bool = False) -> None:
    for line in summary.lines(folder, details=details):
        print(line)
    if summary.files_failed:
        print(f"exit code {EXIT_PARTIAL}: {summary.failure_line()} (listed above)")


# --- search, info, repair --------------------------------------------------------------------------------------------


def run_search(args: argparse.Namespace) -> int:
    """Embed QUERY with the index's own settings (`Index.search`) and print the top-k chunks or documents."""
    if not args.query or not args.query.strip():
        raise ValueError("the query is empty; give some text to search for (or set TEMPSCALE_QUERY)")
    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    if args.doc_score is not None:
        if not args.documents:
            raise ValueError("--doc-score scores documents: add --documents")
        ChunkingConfig(doc_score=args.doc_score)  # validates the name
    with _open_index(args) as index:
        quiet_model_loading()
        if args.documents:
            documents = index.search_documents(
                args.query, args.k, doc_score=args.doc_score, evidence=EVIDENCE_CHUNKS, retrieval=args.retrieval
            )
            return _print_documents(args, documents)
        hits = index.search(args.query, args.k, retrieval=args.retrieval)
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
        print(_no_results(args))
    for r in results:
        # Chunks of different sizes can start alike (a 192- and a 499-token chunk from one heading): say which is which.
        size = f", {r['chunk_tokens']}-token size" if r["chunk_tokens"] is not None else ""
        print(f"{r['rank']:>2}. {r['score']:.4f}  {r['source']}  [chunk {r['position']}{size}]")
        print(f"    {_snippet(r['text'])}")
    return EXIT_OK


def _no_results(args: argparse.Namespace) -> str:
    """Why a search found nothing: BM25 alone matched no term, or the index holds nothing."""
    if args.retrieval == "lexical":
        return "no results: no indexed chunk contains a term of the query (stop words are not searched)"
    return f"no results: the index at {args.out} is empty"


def _snippet(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat[:limit] + ("..." if len(flat) > limit else "")


def _print_documents(args: argparse.Namespace, documents: list[Any]) -> int:
    results = [
        {
            "source": doc.source,
            "score": float(doc.score),
            "chunks": [{"text": h.text, "position": h.position, "score": float(h.score)} for h in doc.chunks],
        }
        for doc in documents
    ]
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not results:
        print(_no_results(args))
    for rank, doc in enumerate(results, 1):
        print(f"{rank:>2}. {doc['score']:.4f}  {doc['source']}")
        if doc["chunks"]:
            best = doc["chunks"][0]
            print(f"    [chunk {best['position']}, {best['score']:.4f}] {_snippet(best['text'])}")
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    """Print what the index holds and how it was built (`Index.info`); checks the database's integrity on the way."""
    with _open_index(args) as index:
        info = index.info()
        manifest = index.manifest
    described = info.pop("chunking_described")
    if args.json:
        info.pop("retrieval_described")
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
    print(f"chunks     {described}")
    print(f"temps      {temps}; long text: {config.long_text}")
    print(f"retrieval  {info['retrieval_described']}")
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
    backend = stored.backend
    if stored.store == "qdrant" and backend.url is None and backend.engine == "edge":
        from tempscale_rag.stores.qdrant.edge import repair_edge_index

        lines = repair_edge_index(
            backend.local_path(folder),
            dimension=stored.dimension,
            collection=backend.collection,
            distance=backend.distance,
        )
        print(json.dumps({"repair": lines}, indent=2) if args.json else "\n".join(lines))
        return EXIT_OK
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
