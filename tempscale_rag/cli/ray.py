"""The `index` flags of `--ray` (`tempscale-rag index --ray`): turned into `RaySettings` for `Index.index_folder`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tempscale_rag.cli.options import add_argument

if TYPE_CHECKING:
    from tempscale_rag.distributed.settings import RaySettings


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """Add `--ray`, `--ray-actors`, `--ray-writers` and `--ray-address` to the `index` subcommand."""
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


def ray_settings(args: argparse.Namespace) -> RaySettings | None:
    """The Ray settings the `index` flags ask for, or None to index in this process.

    Raises:
        ValueError: If `--ray-actors` or `--ray-writers` is below 1.
    """
    for flag in ("ray_actors", "ray_writers"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if not (getattr(args, "ray", False) or getattr(args, "ray_actors", None) or getattr(args, "ray_address", None)):
        return None
    from tempscale_rag.distributed.settings import RaySettings

    return RaySettings(address=args.ray_address, actors=args.ray_actors, writers=args.ray_writers)
