"""The lexical side of retrieval: one text analyser and BM25 over analysed texts.

BM25 over whole documents beats every dense model on long-document retrieval (it leads LongEmbed's leaderboard), and
fused with the TempScale vectors it beats both. Every place that scores text lexically (the stores' lexical index,
the evaluator, the sparse encoder for users' Qdrant pipelines) must split text into the same terms, so the analyser
exists once, here, and an index records its `name` so a query is always analysed the way its documents were.

The analyser is the one the `bm25s` package applies by default with a stemmer (scikit-learn's token pattern, lower
case, bm25s's English stop words, the Snowball English stemmer of PyStemmer): maintained libraries, no model download.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from tempscale_rag.config import LEXICAL_ANALYZER

ANALYZER_NAME = LEXICAL_ANALYZER
"""Recorded with every lexical index; a change of the rules below must change it (in `tempscale_rag.config`)."""

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer  # PyStemmer: Snowball stemmers compiled from the C sources

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


class LexicalAnalyzer:
    """Turns text into the terms BM25 counts.

    Word tokens of 2+ characters, lower-cased, English stop words dropped, Snowball-stemmed.

    Text in any script is accepted (a token is a run of Unicode word characters); only English gets stop words and
    stemming, which leave other languages' words as they are.
    """

    name = ANALYZER_NAME

    def terms(self, text: str) -> list[str]:
        """The analysed terms of one text, in order (repeats kept: BM25 counts them).

        Args:
            text: Any string; empty or whitespace-only text gives no terms.

        Returns:
            The stemmed terms.

        Raises:
            TypeError: If `text` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"text to analyse must be a str, got {type(text).__name__}")
        stop = _stop_words()
        words = [word for word in _TOKEN.findall(text.lower()) if word not in stop]
        return list(_stemmer().stemWords(words)) if words else []

    def terms_many(self, texts: Sequence[str]) -> list[list[str]]:
        """`terms` for each text."""
        return [self.terms(text) for text in texts]


class BM25Scorer:
    """Exact BM25 (Lucene's variant, k1 = 1.5, b = 0.75) of queries against a fixed set of analysed texts.

    The evaluator's reference: it scores every text for every query, so rankings built from it are exact.

    Args:
        texts: The analysed texts (lists of terms), one per scored unit (a document or a window).
    """

    def __init__(self, texts: Sequence[Sequence[str]]) -> None:
        import bm25s

        if not texts:
            raise ValueError("BM25Scorer needs at least one text to score")
        self._n = len(texts)
        self._bm25 = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        # bm25s rejects a corpus in which no text has a term; an empty text simply scores 0 for every query.
        self._bm25.index([list(t) for t in texts], show_progress=False)

    def __len__(self) -> int:
        return self._n

    def scores(self, query_terms: Sequence[str]) -> npt.NDArray[np.float32]:
        """BM25 of one analysed query against every text (0 where no term matches), shape `(len(texts),)`."""
        if not query_terms:
            return np.zeros(self._n, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(list(query_terms)), dtype=np.float32)


def word_windows(text: str, size: int) -> list[str]:
    """Split a text into consecutive windows of `size` whitespace-separated words (the last one shorter).

    Args:
        text: The text.
        size: Words per window, >= 1.

    Returns:
        The windows (one empty string for a text without words, so every document has a window).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"window size must be an integer >= 1 (words), got {size!r}")
    words = text.split()
    if not words:
        return [""]
    return [" ".join(words[start : start + size]) for start in range(0, len(words), size)]


SparseVector = tuple[list[int], list[float]]
"""A sparse vector as Qdrant and the LlamaIndex/LangChain Qdrant integrations take it: (term ids, values)."""


def term_id(term: str) -> int:
    """A stable 32-bit id for an analysed term (CRC-32 of its UTF-8 bytes): the same term, the same id, everywhere."""
    return zlib.crc32(term.encode("utf-8", "surrogatepass"))


class SparseEncoder:
    """BM25 as sparse vectors, for vector databases that score `sum(query value x idf x document value)`.

    A document's value for a term is BM25's saturated term frequency (Lucene's form, without the `k1 + 1` factor):
    `tf / (tf + k1 (1 - b + b len / avg_len))`; a query's value is the term's count in the query. With the database's
    IDF modifier (Qdrant `SparseVectorParams(modifier=Modifier.IDF)`, idf = `ln(1 + (N - n + 0.5) / (n + 0.5))`)
    the score is Lucene's BM25, the average document length being `avg_len` instead of the corpus's own.

    Args:
        avg_len: The average length, in analysed terms, of the texts you index (BM25's length normalisation pivot;
            256 is fastembed's Qdrant/bm25 default, right for chunks of a few hundred words).
        k1: Term-frequency saturation.
        b: Length normalisation (0: none, 1: full).
    """

    def __init__(self, avg_len: float = 256.0, k1: float = 1.5, b: float = 0.75) -> None:
        for name, value, low in (("avg_len", avg_len, 0.0), ("k1", k1, 0.0)):
            if not math.isfinite(value) or value <= low:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not math.isfinite(b) or not 0.0 <= b <= 1.0:
            raise ValueError(f"b must be between 0 and 1, got {b!r}")
        self.avg_len, self.k1, self.b = float(avg_len), float(k1), float(b)
        self.analyzer = LexicalAnalyzer()

    def document(self, text: str) -> SparseVector:
        """The sparse vector of one document or chunk (empty for a text without terms)."""
        terms = self.analyzer.terms(text)
        return self.document_of_counts(Counter(terms), len(terms))

    def document_of_counts(self, counts: Counter[str], length: int) -> SparseVector:
        """`document` of a text given by its analysed terms' counts and their total (a text read in parts)."""
        norm = self.k1 * (1.0 - self.b + self.b * length / self.avg_len)
        return _sparse(counts, lambda tf: tf / (tf + norm))

    def query(self, text: str) -> SparseVector:
        """The sparse vector of one query: each distinct term with its count (empty when no term survives)."""
        return _sparse(Counter(self.analyzer.terms(text)), float)

    def documents(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[float]]]:
        """`document` for each text, as the (all ids, all values) pair LlamaIndex's `sparse_doc_fn` returns."""
        return _columns([self.document(text) for text in texts])

    def queries(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[float]]]:
        """`query` for each text, as the (all ids, all values) pair LlamaIndex's `sparse_query_fn` returns."""
        return _columns([self.query(text) for text in texts])


def _sparse(counts: Counter[str], value: Callable[[int], float]) -> SparseVector:
    merged: dict[int, float] = {}
    for term, tf in counts.items():
        # Two terms with one CRC-32 (rare) share a dimension: add their values rather than keep one.
        tid = term_id(term)
        merged[tid] = merged.get(tid, 0.0) + value(tf)
    ids = sorted(merged)
    return ids, [merged[i] for i in ids]


def _columns(vectors: list[SparseVector]) -> tuple[list[list[int]], list[list[float]]]:
    return [ids for ids, _ in vectors], [values for _, values in vectors]


def qdrant_sparse_params() -> Any:
    """Qdrant's `SparseVectorParams` for `SparseEncoder` vectors: the IDF modifier on, so the score is BM25."""
    from qdrant_client import models

    return models.SparseVectorParams(modifier=models.Modifier.IDF)


class PivotBM25:
    """Exact BM25 of the product's lexical index: `SparseEncoder`'s formula with the corpus's IDF, every unit scored.

    A unit's score for a query is `sum over query terms t of count(t) x idf(t) x tf / (tf + k1 (1 - b + b len /
    pivot))` with `idf = ln(1 + (N - n + 0.5) / (n + 0.5))` (N units, n of them with `t`): Lucene's BM25 up to the
    constant `k1 + 1`, with a fixed length pivot instead of the corpus's average length. A fixed pivot is what a
    vector database's sparse vectors can hold (their values are written once), so the FAISS store, the Qdrant store
    and the evaluator compute the same numbers; it is the reference the stores are tested against.

    Args:
        texts: The analysed units (lists of terms).
        pivot: The length pivot in analysed terms (None: the units' own average length, Lucene's BM25 exactly).
        k1: Term-frequency saturation.
        b: Length normalisation.
    """

    def __init__(
        self, texts: Sequence[Sequence[str]], pivot: float | None = None, k1: float = 1.5, b: float = 0.75
    ) -> None:
        from scipy import sparse

        vocabulary: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        lengths = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
        self.pivot = float(pivot) if pivot is not None else float(max(1.0, lengths.mean() if len(texts) else 1.0))
        norms = k1 * (1.0 - b + b * lengths / self.pivot)
        for row, text in enumerate(texts):
            for term, tf in Counter(text).items():
                rows.append(row)
                cols.append(vocabulary.setdefault(term, len(vocabulary)))
                values.append(tf / (tf + norms[row]))
        self._vocabulary = vocabulary
        self._n = len(texts)
        self._matrix = sparse.csc_matrix(
            (np.asarray(values), (np.asarray(rows), np.asarray(cols))), shape=(self._n, len(vocabulary))
        )
        df = np.diff(self._matrix.indptr)
        self._idf = np.log1p((self._n - df + 0.5) / (df + 0.5))

    def __len__(self) -> int:
        return self._n

    def scores(self, query_terms: Sequence[str]) -> npt.NDArray[np.float32]:
        """The score of every unit for one analysed query (0 where no term matches), shape `(len(texts),)`."""
        counts = Counter(t for t in query_terms if t in self._vocabulary)
        if not counts:
            return np.zeros(self._n, dtype=np.float32)
        cols = np.fromiter((self._vocabulary[t] for t in counts), dtype=np.int64, count=len(counts))
        weights = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self._idf[cols]
        return np.asarray(self._matrix[:, cols] @ weights, dtype=np.float32).ravel()
