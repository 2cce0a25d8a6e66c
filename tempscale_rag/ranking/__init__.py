"""Ranking: how search results are scored, written once and used by every store backend, the index and the evaluator.

- `documents.py`: whole documents scored from their chunks (`max`, `mean`, `hybrid`, `topm`, `softmax` per
  (document, chunk size) group, then the mean over groups); pure numpy, no storage.
"""
