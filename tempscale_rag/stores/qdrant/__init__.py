"""The Qdrant backend: a Qdrant server, or qdrant-client's local mode (a folder, or in memory).

- `store.py`: `QdrantStore`, the `VectorStore` (public API, the document-ranking contract).
- `points.py`: what is stored: point ids, chunk payloads, the document points (chunk vectors and group vectors).
- `documents.py`: upkeep of the documents collection (written, merged, rescanned).
- `connection.py`: opening the client, retries of network failures, collection setup and checks.
"""

from tempscale_rag.stores.qdrant.connection import MEMORY
from tempscale_rag.stores.qdrant.points import point_id
from tempscale_rag.stores.qdrant.store import QdrantStore

__all__ = ["MEMORY", "QdrantStore", "point_id"]
