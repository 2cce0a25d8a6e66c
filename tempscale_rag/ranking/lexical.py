"""The lexical side of retrieval: one text analyser and BM25 over analysed texts.

BM25 over whole documents beats every dense model on long-document retrieval (it leads LongEmbed's leaderboard), and
fused with the TempScale vectors it beats both. Every place that scores text lexically (the stores' lexical index,
the evaluator, the sparse encoder for users' Qdrant pipelines) must split text into the same terms, so the analyser
exists once, here, and an index records its `name` so a query is always analysed the way its documents were.

The analyser is the one the `bm25s` package applies by default with a stemmer (scikit-learn's token pattern, lower
case, bm25s's English stop words, the Snowball English stemmer of PyStemmer): maintained libraries, no model download.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

ANALYZER_NAME = "bm25s-en-snowball-1"
"""Recorded with every lexical index; a change of the rules below must change it."""

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
