"""`tempscale-rag eval` on a GPU machine that cannot install the chunker's dependencies (llama-index).

The GPU machine here has PyTorch and sentence-transformers but no llama-index (nothing downloads there), which the
chunker's sentence splitter needs. So the chunks are made on the development CPU by the product's own chunker and
carried over; everything else (embedding, ranking, BM25, fusion, metrics) runs the product's code on the GPU:

    # here: run the same eval, chunking only (the model is never run: vectors are zeros), and save every split
    python research/hybrid/gpu_eval.py record chunks.json.gz -- eval DATA --device cpu ...
    # there: the same eval, `RetrievalEvaluator._split` answered from the file
    python research/hybrid/gpu_eval.py replay chunks.json.gz -- eval DATA --device cuda ...

A split is looked up by (chunk size, overlap, digest of the document text), so a replay of other arguments fails
loudly on a document it has no chunks for instead of chunking differently.
"""

from __future__ import annotations

import gzip
import json
import sys
from typing import Any

import numpy as np

from tempscale_rag.cli import main
from tempscale_rag.evaluation import runner
from tempscale_rag.evaluation.runner import RetrievalEvaluator, text_key

_original_split = RetrievalEvaluator._split


def record(path: str, argv: list[str]) -> int:
    table: dict[str, list[str]] = {}

    def split(self: Any, encoder: Any, size: int, overlap: int, docs_key: Any, texts: list[str]) -> Any:
        out = _original_split(self, encoder, size, overlap, docs_key, texts)
        for text, pieces in zip(texts, out[0], strict=True):
            table[f"{size}:{overlap}:{text_key(text)}"] = pieces
        return out

    def embed(self: Any, encoder: Any, texts: list[str], tokens: list[int], *args: Any, **kwargs: Any) -> Any:
        dim = encoder.dimension
        vectors = np.zeros((len(texts), dim), np.float32)
        vectors[:, 0] = 1.0
        return runner._Embedded(vectors, np.zeros(len(texts)), np.asarray(tokens, dtype=np.int64))

    RetrievalEvaluator._split = split  # type: ignore[method-assign]
    RetrievalEvaluator._embed = embed  # type: ignore[method-assign]
    code = main(argv)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(table, f)
    print(f"recorded {len(table)} splits to {path}", file=sys.stderr)
    return code


def replay(path: str, argv: list[str]) -> int:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        table: dict[str, list[str]] = json.load(f)

    def split(self: Any, encoder: Any, size: int, overlap: int, docs_key: Any, texts: list[str]) -> Any:
        pieces = []
        for text in texts:
            key = f"{size}:{overlap}:{text_key(text)}"
            if key not in table:
                raise KeyError(f"no recorded chunks of size {size} for a document: record with the same arguments")
            pieces.append(table[key])
        return pieces, [[text_key(p) for p in doc] for doc in pieces]

    RetrievalEvaluator._split = split  # type: ignore[method-assign]
    return main(argv)


if __name__ == "__main__":
    mode, path, sep, *rest = sys.argv[1:]
    if sep != "--" or mode not in ("record", "replay"):
        raise SystemExit(__doc__)
    raise SystemExit((record if mode == "record" else replay)(path, rest))
