"""The writer lock of a FAISS index folder: one process writes (flock on `writer.lock`), any number read."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from tempscale_rag.stores.errors import StoreUnavailableError

LOCK_NAME = "writer.lock"


def acquire_lock(folder: Path) -> IO[bytes]:
    """Take the writer lock of the index in `folder`; close the returned handle to release it.

    Raises:
        StoreUnavailableError: If another process holds it.
    """
    path = folder / LOCK_NAME
    handle = path.open("a+b")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock; a second writer there is the user's responsibility.
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreUnavailableError(
            f"the index at {path.parent} is being written by another process (it holds {path}); wait for it to finish"
        ) from None
    return handle
