"""Fusing ranked lists from several retrieval channels (dense vectors, BM25) into one ranking.

Each channel scores the same candidates on its own scale (cosines near 0.5, BM25 in the tens), so the scores are
normalised per query before they are added:

- `dbsf`: distribution-based score fusion, Qdrant's DBSF: each list becomes `(s - (mean - 3 sd)) / (6 sd)`, then the
  weighted sum. Robust to one outlier score, unlike min-max.
- `minmax`: each list scaled to [0, 1] by its minimum and maximum, then the weighted sum.
- `rrf`: reciprocal-rank fusion, `sum w / (k + rank)`; ignores the scores' sizes (it was clearly worse on QMSum).

A candidate missing from a list gets that list's minimum score: absent from a lexical list means no query term
matched, the lowest score the list can give.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Literal, TypeVar, get_args

import numpy as np
import numpy.typing as npt

FusionMethod = Literal["dbsf", "minmax", "rrf"]
FUSION_METHODS: tuple[str, ...] = get_args(FusionMethod)
RRF_K = 60
"""The usual reciprocal-rank constant (Cormack et al. 2009; LangChain's EnsembleRetriever)."""

K = TypeVar("K", bound=Hashable)


def check_fusion(method: str) -> FusionMethod:
    """Return `method` if it is a known fusion method, else raise ValueError naming the choices."""
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {', '.join(FUSION_METHODS)}")
    return method  # type: ignore[return-value]


def normalise(scores: npt.ArrayLike, method: FusionMethod) -> npt.NDArray[np.float64]:
    """One list's scores on the common scale `method` uses (for `rrf`, `1 / (RRF_K + rank)`, rank from 1).

    Args:
        scores: One query's scores of one channel, higher is better.
        method: The fusion method.

    Returns:
        The normalised scores, same shape.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    if method == "rrf":
        order = np.argsort(-s, kind="stable")
        ranks = np.empty(s.size, dtype=np.float64)
        ranks[order] = np.arange(1, s.size + 1)
        return 1.0 / (RRF_K + ranks)
    if method == "minmax":
        low, high = float(s.min()), float(s.max())
        return np.zeros_like(s) if high <= low else (s - low) / (high - low)
    mean, sd = float(s.mean()), float(s.std())
    if sd == 0.0:
        return np.full_like(s, 0.5)
    return (s - (mean - 3.0 * sd)) / (6.0 * sd)


def fuse_arrays(
    lists: Sequence[npt.ArrayLike], *, method: FusionMethod = "dbsf", weights: Sequence[float] | None = None
) -> npt.NDArray[np.float64]:
    """Fuse aligned score arrays (every list scores the same candidates, in the same order).

    Args:
        lists: One array per channel, all of the same length.
        method: How each list is normalised before the weighted sum.
        weights: One weight per list (default: equal weights of 1).

    Returns:
        The fused scores, higher is better.
    """
    method = check_fusion(method)
    arrays = [np.asarray(a, dtype=np.float64) for a in lists]
    if not arrays:
        raise ValueError("nothing to fuse: give at least one score list")
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise ValueError(f"score lists to fuse must be 1-D and of one length, got shapes {[a.shape for a in arrays]}")
    weights = _weights(weights, len(arrays))
    return np.sum([w * normalise(a, method) for w, a in zip(weights, arrays, strict=True)], axis=0)


def fuse(
    lists: Sequence[Mapping[K, float]], *, method: FusionMethod = "dbsf", weights: Sequence[float] | None = None
) -> dict[K, float]:
    """Fuse score lists keyed by candidate (a chunk id, a document), over the union of their candidates.

    A candidate missing from a list gets that list's minimum (see the module docstring).

    Args:
        lists: One mapping `candidate -> score` per channel.
        method: How each list is normalised before the weighted sum.
        weights: One weight per list (default: equal weights of 1).

    Returns:
        `candidate -> fused score`.
    """
    keys: list[K] = list(dict.fromkeys(key for scores in lists for key in scores))
    if not keys:
        return {}
    aligned = []
    for scores in lists:
        floor = min(scores.values()) if scores else 0.0
        aligned.append(np.array([scores.get(key, floor) for key in keys], dtype=np.float64))
    fused = fuse_arrays(aligned, method=method, weights=weights)
    return dict(zip(keys, fused.tolist(), strict=True))


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    values = [float(w) for w in weights]
    if len(values) != n or any(not np.isfinite(w) or w < 0 for w in values) or not any(values):
        raise ValueError(f"fusion weights must be {n} finite numbers >= 0, not all 0; got {list(weights)!r}")
    return values
