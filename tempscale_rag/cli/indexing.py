"""`tempscale-rag index`, `search` and `info`: build an index from a folder, query it, describe it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tempscale_rag.cli.options import (
    RUNTIME_FIELDS,
    add_argument,
    add_config_flags,
    config_flags_given,
    config_from_args,
)
from tempscale_rag.config import TempScaleConfig
from tempscale_rag.distributed.cli import add_ray_flags, run_index_on_ray, wants_ray

DEFAULT_INDEX = "tempscale-index"


def register(subparsers: Any) -> None:
    """Add the `index`, `search` and `info` subcommands."""
    index = subparsers.add_parser(
        "index",
        help="Index files and folders (txt, md, rst, html, pdf) incrementally.",
        description="Chunk documents to the model window, embed them with TempScale and store them. Unchanged files "
        "are skipped, changed files replaced; an interrupted run is finished by running it again.",
    )
    add_argument(index, "paths", nargs="+", metavar="PATH", help="Files or folders (walked recursively).")
    _add_store_flags(index)
    add_argument(index, "--prune", action="store_true", help="Remove indexed files that no longer exist.")
    add_argument(index, "--chunk-tokens", type=int, default=None, help="Chunk size in tokens (default: the window).")
    add_argument(index, "--chunk-overlap-tokens", type=int, default=32, help="Tokens shared by adjacent chunks.")
    add_argument(index, "--max-file-mb", type=float, default=64.0, help="Skip files larger than this.")
    add_argument(index, "--commit-every", type=int, default=256, help="Chunks embedded and committed together.")
    add_argument(index, "--hnsw", action="store_true", help="FAISS: approximate HNSW index instead of exact search.")
    add_argument(index, "--json", action="store_true", help="Print the summary as JSON on stdout.")
    add_config_flags(index)
    add_ray_flags(index)
    index.set_defaults(run=run_index)

    search = subparsers.add_parser("search", help="Search an index.", description="Rank indexed chunks for a query.")
    add_argument(search, "query", metavar="QUERY", help="The query text.")
    add_argument(search, "-k", "--top-k", dest="k", type=int, default=5, help="Number of results.")
    add_argument(search, "--json", action="store_true", help="Print results as a JSON list, best first.")
    add_argument(search, "--device", default=None, help="torch device for the query encoder.")
    _add_store_flags(search)
    search.set_defaults(run=run_search)

    info = subparsers.add_parser("info", help="Describe an index.", description="What an index holds, how built.")
    add_argument(info, "--json", action="store_true", help="Print as JSON.")
    _add_store_flags(info)
    info.set_defaults(run=run_info)


def _add_store_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("index location")
    add_argument(group, "--out", "--index", dest="out", default=DEFAULT_INDEX, help="Index folder (manifest, data).")
    add_argument(group, "--store", choices=("faiss", "qdrant"), default=None, help="Backend (default: faiss).")
    add_argument(group, "--qdrant-url", default=None, help="Qdrant server URL (API key from QDRANT_API_KEY).")
    add_argument(group, "--qdrant-path", default=None, help="Qdrant local-mode folder (default: inside --out).")
    add_argument(group, "--collection", default="tempscale", help="Qdrant collection name.")


def _manifest_for(args: argparse.Namespace, config: TempScaleConfig, model: str, dimension: int) -> Any:
    from tempscale_rag.stores import FaissSettings, IndexManifest, QdrantSettings

    if args.qdrant_url and args.qdrant_path:
        raise ValueError("give either --qdrant-url or --qdrant-path, not both")
    store = args.store or ("qdrant" if args.qdrant_url or args.qdrant_path else "faiss")
    if store == "faiss" and (args.qdrant_url or args.qdrant_path):
        raise ValueError("--qdrant-url/--qdrant-path need --store qdrant")
    backend: FaissSettings | QdrantSettings
    if store == "qdrant":
        backend = QdrantSettings(collection=args.collection, url=args.qdrant_url, path=args.qdrant_path)
    else:
        backend = FaissSettings(index="hnsw" if getattr(args, "hnsw", False) else "flat")
    return IndexManifest.new(model=model, dimension=dimension, config=config, backend=backend)


def _stored_manifest(folder: Path) -> Any:
    from tempscale_rag.stores import manifest_path, read_manifest

    return read_manifest(folder) if manifest_path(folder).exists() else None


def run_index(args: argparse.Namespace) -> int:
    """Index PATHs into the store at --out."""
    from tempscale_rag.encoder import TempScaleEncoder
    from tempscale_rag.ingest.chunking import WindowChunker
    from tempscale_rag.ingest.indexer import FolderIndexer, progress_printer
    from tempscale_rag.stores import open_store

    folder = Path(args.out)
    stored = _stored_manifest(folder)  # a corrupt manifest fails here, before any model is loaded
    if stored is not None and not config_flags_given(args):
        # Re-indexing an existing index: keep the settings it was built with unless flags say otherwise.
        runtime = {k: getattr(args, k) for k in RUNTIME_FIELDS if getattr(args, k) is not None}
        config = TempScaleConfig(**{**stored.config.model_dump(), **runtime})  # validated, unlike model_copy
    else:
        config = config_from_args(args)
    if wants_ray(args):
        return run_index_on_ray(args, config, stored)
    encoder = TempScaleEncoder(config=config)
    manifest = _manifest_for(args, config, encoder.model_name, encoder.dimension)
    if stored is not None and args.store is None and not (args.qdrant_url or args.qdrant_path):
        manifest = manifest.model_copy(update={"store": stored.store, "backend": stored.backend})
    show = not args.quiet
    with open_store(folder, manifest, progress=progress_printer(show)) as store:
        chunker = WindowChunker(encoder, args.chunk_tokens, args.chunk_overlap_tokens)
        indexer = FolderIndexer(
            encoder,
            store,
            chunker=chunker,
            max_file_bytes=int(args.max_file_mb * 1e6),
            batch_chunks=args.commit_every,
            show_progress=show,
        )
        summary = indexer.run(args.paths, prune=args.prune)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary, folder)
    return 0


def _print_summary(summary: Any, folder: Path) -> None:
    print(
        f"indexed {summary.files_indexed} files ({summary.chunks_added} chunks, {summary.tokens} tokens), "
        f"skipped {summary.files_skipped} unchanged, failed {len(summary.files_failed)}, "
        f"pruned {summary.files_pruned} in {summary.seconds:.1f}s"
    )
    print(f"index {folder}: {summary.files} files, {summary.chunks} chunks")
    for label, bucket in summary.embedding.buckets.items():
        taus = ",".join(f"{t:g}" for t in bucket.taus)
        line = f"  bucket {label:>9} tau {taus:<8} {bucket.inputs:6d} chunks"
        if bucket.truncated_inputs:
            line += f", {bucket.truncated_inputs} truncated ({bucket.dropped_tokens} tokens dropped)"
        print(line)
    for failure in summary.files_failed:
        print(f"  failed: {failure['path']}: {failure['reason']}")


def _open_for_reading(args: argparse.Namespace) -> tuple[Any, Any]:
    from tempscale_rag.stores import open_store

    folder = Path(args.out)
    store = open_store(folder, read_only=True)
    return store, store.manifest


def run_search(args: argparse.Namespace) -> int:
    """Embed QUERY with the index's own settings and print the top-k chunks."""
    from tempscale_rag.encoder import TempScaleEncoder
    from tempscale_rag.stores import check_compatible

    if not args.query.strip():
        raise ValueError("the query is empty; give some text to search for")
    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    store, manifest = _open_for_reading(args)
    with store:
        config = manifest.config.model_copy(update={"device": args.device}) if args.device else manifest.config
        encoder = TempScaleEncoder(config=config)
        check_compatible(manifest, encoder.model_name, encoder.dimension, where=args.out)
        hits = store.search(encoder.encode([args.query], query=True)[0], k=args.k)
    results = [
        {"rank": i + 1, "score": h.score, "source": h.source, "position": h.position, "text": h.text,
         "token_length": h.token_length, "bucket": h.bucket}
        for i, h in enumerate(hits)
    ]
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return 0
    if not results:
        print(f"no results: the index at {args.out} is empty")
    for r in results:
        snippet = " ".join(r["text"].split())
        snippet = snippet[:240] + ("..." if len(snippet) > 240 else "")
        print(f"{r['rank']:>2}. {r['score']:.4f}  {r['source']}  [chunk {r['position']}]\n    {snippet}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print what the index holds and how it was built."""
    store, manifest = _open_for_reading(args)
    with store:
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
            "package_version": manifest.package_version,
            "created_at": manifest.created_at.isoformat(),
            "updated_at": manifest.updated_at.isoformat(),
            "details": described,
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
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
        f"FAISS {backend.index}" if manifest.store == "faiss"
        else f"Qdrant collection {backend.collection!r} at {backend.url or backend.path or 'local folder'}"
    )
    print(f"holds      {info['files']} files, {info['chunks']} chunks ({where})")
    print(f"model      {manifest.model} (dim {manifest.dimension}), window {config.max_seq_length or 'full'}")
    print(f"temps      {temps}; long text: {config.long_text}")
    if config.calibration_file:
        print(f"calibrated {config.calibration_file}")
    print(f"built by   tempscale-rag {manifest.package_version}, updated {info['updated_at']}")
    return 0

