"""The index API: `Index` (open, create, add, index a folder, search chunks or documents, delete, describe).

- `index.py`: `Index`, an index folder with the engine that built it; queries are encoded with its recorded settings.
- `settings.py`: settings a caller states for an existing index, compared by what they shape; `SettingError`s that
  name settings (the CLI words them with its flags).

The manifest itself (`IndexManifest`, its checks) is `tempscale_rag.stores.manifest`.
"""

from __future__ import annotations

from tempscale_rag.index.index import DEFAULT_EVIDENCE, Index, distinct_hits
from tempscale_rag.index.settings import SettingDifference, SettingError, SettingMismatchError

__all__ = [
    "DEFAULT_EVIDENCE",
    "Index",
    "SettingDifference",
    "SettingError",
    "SettingMismatchError",
    "distinct_hits",
]
