"""The errors of the storage layer, in a module of their own so that the manifest and the backends share them."""

from __future__ import annotations


class IndexCorruptError(ValueError):
    """An index folder or one of its files cannot be read: missing, truncated, corrupt, or not an index at all."""


class IndexNotFoundError(IndexCorruptError):
    """There is no index where one was expected (no manifest, no database, no collection)."""


class IndexMismatchError(ValueError):
    """An existing index was built differently (model, dimension, store, settings) from what was asked for."""


class StoreUnavailableError(RuntimeError):
    """The store cannot be reached or used right now: server down, wrong URL, rejected API key, folder locked."""
