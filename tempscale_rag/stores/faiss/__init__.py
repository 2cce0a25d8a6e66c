"""The FAISS backend: an SQLite database of chunks plus a FAISS index derived from it, one module per concern.

- `store.py`: `FaissStore`, the `VectorStore` (public API, the document-ranking contract, commits).
- `database.py`: `chunks.sqlite`: schema, validation, creation, transactions, chunk rows and group vectors.
- `vectors.py`: the in-memory FAISS index: queued changes, rebuilds, the GPU search copy.
- `vector_file.py`: `vectors.faiss`, the checksummed cache of the FAISS index.
- `documents.py`: the indexed chunks grouped by (source, chunk size) for document ranking.
- `lexical.py`: the lexical (BM25) channel: postings of the chunks of one size, in `chunks.sqlite`'s transactions.
- `locking.py`: the writer lock.
- `repair.py`: salvaging a damaged `chunks.sqlite` (`tempscale-rag repair`).
"""

from tempscale_rag.stores.faiss.database import DB_NAME
from tempscale_rag.stores.faiss.locking import LOCK_NAME
from tempscale_rag.stores.faiss.store import FaissStore
from tempscale_rag.stores.faiss.vector_file import FAISS_NAME
from tempscale_rag.stores.faiss.vectors import faiss_gpu_count

__all__ = ["DB_NAME", "FAISS_NAME", "LOCK_NAME", "FaissStore", "faiss_gpu_count"]
