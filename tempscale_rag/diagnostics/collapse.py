"""Length-collapse diagnostics: how much embeddings of texts of one token length crowd together.

Definitions (arXiv 2410.24200; docs/tempscale.md), for the L2-normalised embeddings B of texts of one length bin:

- mean pairwise cosine `S(B) = 2 / (|B|(|B|-1)) * sum_{i<j} e_i . e_j` (higher = more collapsed);
- spread `tr(Cov(B))` (unbiased covariance; lower = more collapsed). For unit vectors `tr(Cov(B)) = 1 - S(B)`
  exactly, so the two are one statistic seen from two sides; both are reported because both are quoted;
- mean distance to the bin's centroid (lower = more collapsed).

Texts of controlled length are cut from a corpus at random word-aligned token offsets, so every length bin draws on
the same material and only the length differs. Each bin is encoded under every configuration compared (tau = 1, the
default buckets, global taus, calibration files), which shows at a glance whether TempScale undoes the collapse.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tempscale_rag.encoder import TempScaleEncoder

DEFAULT_LENGTHS: tuple[int, ...] = (16, 32, 64, 128, 192, 256, 384, 510)
"""Content-token lengths sampled by default (capped to the encoder's window)."""

CORPUS_SUFFIXES: tuple[str, ...] = (".txt", ".md")


@dataclass(frozen=True)
class CollapseStats:
    """Collapse statistics of one set of embeddings.

    Attributes:
        n: Number of vectors.
        mean_cosine: Mean pairwise cosine `S(B)` (higher = more collapsed).
        spread: Trace of the unbiased covariance of the unit vectors (`1 - S(B)`; lower = more collapsed).
        centroid_distance: Mean Euclidean distance of the unit vectors to their centroid.
    """

    n: int
    mean_cosine: float
    spread: float
    centroid_distance: float

    def to_dict(self) -> dict[str, float]:
        """Plain JSON types."""
        return asdict(self)


@dataclass(frozen=True)
class LengthSample:
    """Texts of one target length cut from the corpus.

    Attributes:
        length: Target content tokens (special tokens come on top).
        texts: The texts.
        tokens: Tokens each text has as the encoder counts it (special tokens included).
    """

    length: int
    texts: list[str]
    tokens: list[int]


@dataclass(frozen=True)
class BinMeasurement:
    """Collapse statistics of one length bin under one configuration, with the temperatures it used."""

    length: int
    mean_tokens: float
    taus: list[float]
    stats: CollapseStats

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {"length": self.length, "mean_tokens": self.mean_tokens, "taus": self.taus, **self.stats.to_dict()}


def collapse_stats(vectors: npt.ArrayLike) -> CollapseStats:
    """Mean pairwise cosine, trace of the covariance and mean distance to the centroid of row vectors.

    Rows are L2-normalised first (a zero row stays zero and contributes 0 to every cosine).

    Raises:
        ValueError: With fewer than two vectors (a pairwise mean needs a pair), or non-finite values.
    """
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"collapse statistics need a matrix of at least two vectors, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("collapse statistics need finite vectors; found NaN or infinity")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    unit = np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)
    n = len(unit)
    total = unit.sum(axis=0)
    # sum_{i != j} e_i.e_j = |sum e|^2 - sum |e_i|^2, computed without the n x n matrix.
    off_diagonal = float(total @ total - (unit * unit).sum())
    mean_cosine = off_diagonal / (n * (n - 1))
    centroid = unit.mean(axis=0)
    deviations = unit - centroid
    spread = float((deviations * deviations).sum() / (n - 1))
    centroid_distance = float(np.linalg.norm(deviations, axis=1).mean())
    return CollapseStats(n=n, mean_cosine=mean_cosine, spread=spread, centroid_distance=centroid_distance)


def read_corpus(path: str | Path) -> list[str]:
    """Texts of a corpus given as a folder of `.txt`/`.md` files, a BEIR `corpus.jsonl`, or a BEIR folder.

    Raises:
        ValueError: If the path does not exist, holds no texts, or a file is unreadable.
    """
    root = Path(path)
    if root.is_dir() and (root / "corpus.jsonl").is_file():
        root = root / "corpus.jsonl"
    if root.is_file() and root.suffix == ".jsonl":
        texts = []
        for lineno, line in enumerate(_read_text(root).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{root}:{lineno}: invalid JSON ({exc.msg})") from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise ValueError(f"{root}:{lineno}: expected an object with a string 'text'")
            title = record.get("title")
            texts.append((title + " " + text).strip() if isinstance(title, str) and title else text.strip())
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)
        texts = [_read_text(p) for p in files]
    elif root.is_file() and root.suffix.lower() in CORPUS_SUFFIXES:
        texts = [_read_text(root)]
    elif not root.exists():
        raise ValueError(f"corpus {root} does not exist")
    else:
        raise ValueError(f"corpus {root} is neither a folder of .txt/.md files, a BEIR folder nor a corpus.jsonl")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"corpus {path} holds no non-empty .txt/.md file or document")
    return texts


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def sample_windows(
    encoder: TempScaleEncoder,
    texts: Sequence[str],
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    per_length: int = 64,
    seed: int = 0,
    *,
    max_documents: int = 400,
) -> dict[int, LengthSample]:
    """Cut `per_length` texts of each token length from random word-aligned offsets of random corpus texts.

    Lengths count content tokens (special tokens come on top) and are capped to fit the encoder's window. A window
    is cut from the original text by the tokenizer's character offsets, so its text is verbatim; its token count as
    the encoder sees it is recorded (it can differ from the target by a token or so at a word boundary).

    Args:
        encoder: The engine whose tokenizer and window are used.
        texts: The corpus.
        lengths: Target content-token lengths.
        per_length: Windows per length.
        seed: Sampling seed; the same seed gives the same windows.
        max_documents: Corpus texts tokenised at most (a seeded sample), to bound the cost on large corpora.

    Returns:
        Target length -> sample, in increasing length.

    Raises:
        ValueError: If `per_length` < 2, or no corpus text has enough tokens for a length.
    """
    if per_length < 2:
        raise ValueError(f"per_length must be at least 2 (statistics are pairwise), got {per_length}")
    n_special = encoder.count_tokens([""])[0]
    capacity = encoder.window - n_special
    targets = sorted({min(int(n), capacity) for n in lengths if int(n) > 0})
    if not targets:
        raise ValueError(f"no positive length in {list(lengths)}")
    rng = random.Random(seed)
    corpus = [t for t in texts if t.strip()]
    if len(corpus) > max_documents:
        corpus = rng.sample(corpus, max_documents)
    tokenizer = encoder.model.tokenizer
    encoded = tokenizer(corpus, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    docs = [(text, offsets) for text, offsets in zip(corpus, encoded["offset_mapping"], strict=True) if offsets]
    out: dict[int, LengthSample] = {}
    for length in targets:
        pool = [d for d in docs if len(d[1]) >= length]
        if not pool:
            longest = max((len(d[1]) for d in docs), default=0)
            raise ValueError(
                f"no corpus text has {length} tokens (the longest has {longest}); "
                "give longer documents or smaller --lengths"
            )
        windows = []
        for _ in range(per_length):
            text, offsets = rng.choice(pool)
            start = rng.randrange(0, len(offsets) - length + 1)
            # Move to the start of a word (a token not glued to the previous one) so the cut text re-tokenises alike.
            while 0 < start < len(offsets) - length and offsets[start][0] == offsets[start - 1][1]:
                start += 1
            windows.append(text[offsets[start][0] : offsets[start + length - 1][1]])
        out[length] = LengthSample(length, windows, encoder.count_tokens(windows))
    return out


def measure_collapse(
    encoder: TempScaleEncoder, samples: Mapping[int, LengthSample], *, show_progress: bool = False
) -> dict[int, BinMeasurement]:
    """Collapse statistics per length bin for one encoder configuration."""
    out = {}
    for length, sample in samples.items():
        vectors = encoder.encode(sample.texts, show_progress=show_progress)
        taus = sorted({encoder.router.route(min(n, encoder.window)).tau for n in sample.tokens})
        out[length] = BinMeasurement(
            length=length,
            mean_tokens=float(np.mean(sample.tokens)),
            taus=taus,
            stats=collapse_stats(vectors),
        )
    return out


def collapse_table(results: Mapping[str, Mapping[int, BinMeasurement]]) -> str:
    """A Markdown table: one row per length bin, mean cosine, spread and tau per configuration."""
    names = list(results)
    lengths = sorted({n for r in results.values() for n in r})
    head = "| tokens | " + " | ".join(f"{name}: cos / spread (tau)" for name in names) + " |"
    rule = "|---:|" + "---:|" * len(names)
    rows = []
    for length in lengths:
        cells = []
        for name in names:
            m = results[name].get(length)
            if m is None:
                cells.append("–")
                continue
            taus = "/".join(f"{t:g}" for t in m.taus)
            cells.append(f"{m.stats.mean_cosine:.3f} / {m.stats.spread:.3f} ({taus})")
        rows.append(f"| {length} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def plot_collapse(
    results: Mapping[str, Mapping[int, BinMeasurement]], path: str | Path, *, title: str = "Length collapse"
) -> Path:
    """Write a PNG: mean pairwise cosine and spread against token length, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, measured in results.items():
        lengths = sorted(measured)
        axes[0].plot(lengths, [measured[n].stats.mean_cosine for n in lengths], marker="o", label=name)
        axes[1].plot(lengths, [measured[n].stats.spread for n in lengths], marker="o", label=name)
    axes[0].set(title="Mean pairwise cosine (higher = more collapsed)", xlabel="tokens", ylabel="mean cosine")
    axes[1].set(title="Spread tr(Cov) = 1 - mean cosine (lower = more collapsed)", xlabel="tokens", ylabel="spread")
    ticks = sorted({n for measured in results.values() for n in measured})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def results_to_json(results: Mapping[str, Mapping[int, BinMeasurement]], configs: Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON: per configuration, its config and per-length statistics."""
    return {
        name: {"config": configs.get(name), "lengths": {str(n): m.to_dict() for n, m in sorted(measured.items())}}
        for name, measured in results.items()
    }
