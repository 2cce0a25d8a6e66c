"""Ranking: how search results are scored, written once and used by every store backend, the index and the evaluator.

- `documents.py`: whole documents scored from their chunks (`max`, `mean`, `hybrid`, `topm`, `softmax` per
  (document, chunk size) group, then the mean over groups); pure numpy, no storage.
- `candidates.py`: the store contract (`DocumentSource`) and the exact or candidate path that ranks documents
  through it: chunk over-fetch, exact rescoring of candidate documents, the group mean vectors stores keep.
- `search.py`: `search_documents` / `search_documents_many` over any store, and `document_scoring`.
- `lexical.py`: the one text analyser of the lexical channel, exact BM25, and BM25 as sparse vectors (Qdrant IDF).
- `fusion.py`: fusing the scores of several channels per query (DBSF, min-max, RRF).
"""

from tempscale_rag.ranking.search import document_scoring, search_documents, search_documents_many

__all__ = ["document_scoring", "search_documents", "search_documents_many"]
