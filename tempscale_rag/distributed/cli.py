"""`tempscale-rag index --ray`: the flags and the command, kept here so the CLI module only dispatches to it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tempscale_rag.config import TempScaleConfig


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """Add `--ray`, `--ray-actors` and `--ray-address` to the `index` subcommand."""
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
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Address of a running Ray cluster ('auto', 'ray://head:10001'). Implies --ray.",
    )


def wants_ray(args: argparse.Namespace) -> bool:
    """Whether the `index` command should run on Ray."""
    return bool(getattr(args, "ray", False) or getattr(args, "ray_actors", None) or getattr(args, "ray_address", None))


def run_index_on_ray(
    args: argparse.Namespace, config: TempScaleConfig, stored: Any, chunking: Any = None, derive_buckets: bool = False
) -> int:
    """`tempscale-rag index` on a Ray cluster: the same index, summary and `--json` as the single-process command.

    Args:
        args: The parsed `index` arguments.
        config: The engine configuration the command resolved (flags, or the stored index's settings).
        stored: The manifest already in `--out`, or None.
        chunking: The chunk sizes and temperatures (None: a legacy single-size index).
        derive_buckets: Whether the engine's buckets come from the chunk sizes.

    Returns:
        The exit code.
    """
    from tempscale_rag.cli.indexing import _manifest_for, _print_summary
    from tempscale_rag.distributed.embedding import RayEmbedder
    from tempscale_rag.distributed.indexing import RayIndexer
    from tempscale_rag.distributed.settings import RaySettings
    from tempscale_rag.ingest.indexer import progress_printer
    from tempscale_rag.stores import open_store

    if chunking is not None and len(chunking.sizes) > 1:
        raise ValueError("--ray indexes one chunk size for now: pass --chunk-tokens with one size")
    folder = Path(args.out)
    show = not args.quiet
    settings = RaySettings(address=args.ray_address, actors=args.ray_actors)
    with RayEmbedder(config, settings) as embedder:
        manifest = _manifest_for(args, config, embedder.model_name, embedder.dimension)
        if stored is not None and args.store is None and not (args.qdrant_url or args.qdrant_path):
            manifest = manifest.model_copy(update={"store": stored.store, "backend": stored.backend})
        with open_store(folder, manifest, progress=progress_printer(show)) as store:
            indexer = RayIndexer(
                embedder,
                store,
                chunk_tokens=args.chunk_tokens,
                overlap_tokens=args.chunk_overlap_tokens,
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
