"""The Qdrant backend: a Qdrant server, Qdrant's own engine embedded (Qdrant Edge), or qdrant-client's local mode.

Local mode (a folder or in memory) is kept for indexes that were built with it and when asked for by name.

- `store.py`: `QdrantStore`, the `VectorStore` (public API, the document-ranking contract).
- `points.py`: what is stored: point ids, chunk payloads, the document points (chunk vectors and group vectors).
- `documents.py`: upkeep of the documents collection (written, merged, rescanned).
- `lexical.py`: the lexical (BM25) channel: a sparse vector with Qdrant's IDF modifier on the chunk points.
- `connection.py`: opening the client, retries of network failures, collection setup and checks.
- `edge.py`: `EdgeStore`, the same store on an embedded Qdrant Edge shard per collection (`EdgeClient`).
"""

from tempscale_rag.stores.qdrant.connection import MEMORY
from tempscale_rag.stores.qdrant.points import point_id
from tempscale_rag.stores.qdrant.store import QdrantStore

__all__ = ["MEMORY", "QdrantStore", "point_id"]
