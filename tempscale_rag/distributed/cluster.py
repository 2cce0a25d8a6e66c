"""Importing Ray lazily and connecting to (or starting) a cluster."""

from __future__ import annotations

import logging
from typing import Any

from tempscale_rag.distributed.settings import RaySettings

logger = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'tempscale-rag[ray]'"


def require_ray() -> Any:
    """The `ray` module, or an ImportError that says how to install it.

    Raises:
        ImportError: If Ray (with Ray Data) is not installed.
    """
    try:
        import ray
        import ray.data  # Ray Data is part of the extra: fail here, not in the middle of a run
    except ImportError as exc:
        raise ImportError(
            f"distributed indexing and embedding need Ray with Ray Data, which is not installed ({exc}): {RAY_EXTRA}"
        ) from None
    return ray


def connect(settings: RaySettings) -> bool:
    """Connect to the cluster at `settings.address`, or start a local one; reuse an initialised connection.

    Returns:
        True when this call started the connection (the caller shuts it down when done), False when Ray was
        already initialised.

    Raises:
        RuntimeError: If the cluster at `settings.address` cannot be reached.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if settings.address is None:
        if settings.num_cpus is not None:
            options["num_cpus"] = settings.num_cpus
        logger.info("starting a local Ray cluster")
    else:
        options["address"] = settings.address
    try:
        ray.init(**options)
    except (ConnectionError, TimeoutError) as exc:
        raise RuntimeError(
            f"cannot reach the Ray cluster at {settings.address!r} ({exc}); check --ray-address"
        ) from None
    return True


def cluster_resources() -> tuple[int, float]:
    """CPUs and GPUs of the connected cluster."""
    ray = require_ray()
    resources = ray.cluster_resources()
    return int(resources.get("CPU", 0)), float(resources.get("GPU", 0))
