"""`tempscale-rag index --ray`: the flags and the command, kept here so the CLI module only dispatches to it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tempscale_rag.config import ChunkingConfig, TempScaleConfig


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """Add `--ray`, `--ray-actors`, `--ray-writers` and `--ray-address` to the `index` subcommand."""
    from tempscale_rag.cli.options import add_argument  # here: tempscale_rag.cli imports this module

    group = parser.add_argument_group("distributed indexing (Ray; pip install 'tempscale-rag[ray]')")
    add_argument(
        group,
        "--ray",
        action="store_true",
        help="Read, chunk and embed on a Ray cluster (a local one unless --ray-address); same index, same summary.",
    )
    add_argument(
        group,
        "--ray-actors",
        type=int,
        default=None,
        metavar="N",
        help="Embedding actors, each loading the model once (default: one per GPU, else 1). Implies --ray.",
    )
    add_argument(
        group,
        "--ray-writers",
        type=int,
        default=4,
        metavar="N",
        help="Concurrent writers when the index is on a Qdrant server (--qdrant-url); FAISS and local mode: one.",
    )
    add_argument(
        group,
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Address of a running Ray cluster ('auto', 'ray://head:10001'). Implies --ray.",
    )


def wants_ray(args: argparse.Namespace) -> bool:
    """Whether the `index` command should run on Ray."""
    return bool(getattr(args, "ray", False) or getattr(args, "ray_actors", None) or getattr(args, "ray_address", None))


def run_index_on_ray(
    args: argparse.Namespace,
    config: TempScaleConfig,
    stored: Any,
    chunking: ChunkingConfig | None,
    derive_buckets: bool,
    backend: Any,
) -> int:
    """`tempscale-rag index` on a Ray cluster: the same index, summary, `--json` and exit code as without `--ray`.

    Args:
        args: The parsed `index` arguments (already checked by `run_index`).
        config: The engine configuration the command resolved (flags, or the stored index's settings).
        stored: The manifest already in `--out`, or None.
        chunking: The chunk sizes and temperatures (None: a legacy single-size index).
        derive_buckets: Whether the engine's buckets come from the chunk sizes (one bucket per size).
        backend: The store settings of a new index.

    Returns:
        The exit code (`EXIT_PARTIAL` when some file could not be indexed).
    """
    from tempscale_rag.cli.indexing import _print_summary, index_manifest, indexer_options
    from tempscale_rag.cli.options import EXIT_OK, EXIT_PARTIAL
    from tempscale_rag.distributed.cluster import connect, require_ray
    from tempscale_rag.distributed.embedding import RayEmbedder
    from tempscale_rag.distributed.indexing import RayIndexer, routing_config
    from tempscale_rag.distributed.settings import RaySettings
    from tempscale_rag.ingest.indexer import progress_printer
    from tempscale_rag.stores import open_store

    folder = Path(args.out)
    show = not args.quiet
    settings = RaySettings(address=args.ray_address, actors=args.ray_actors, writers=args.ray_writers)
    started = connect(settings)
    try:
        if derive_buckets and chunking is not None:
            # The buckets the single-process command derives from its chunker, so the actors embed with them.
            config = routing_config(config, chunking)
        with RayEmbedder(config, settings) as embedder:
            manifest = index_manifest(
                stored, embedder.config, embedder.model_name, embedder.dimension, backend, chunking, folder
            )
            with open_store(folder, manifest, progress=progress_printer(show)) as store:
                indexer = RayIndexer(embedder, store, chunking=chunking, **indexer_options(args, folder))
                summary = indexer.run(args.paths, prune=args.prune)
    finally:
        if started:
            require_ray().shutdown()
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_summary(summary, folder, details=args.verbose > 0)
    return EXIT_PARTIAL if summary.files_failed else EXIT_OK
