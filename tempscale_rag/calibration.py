"""Choosing a temperature per length bucket for a given model and corpus, and the calibration file it writes.

What is calibrated: by default a tau per *chunk size* of the product's pipeline (`calibrate_sizes`): `index` chunks
every document at every size of a `ChunkingConfig`, each size is its own length bucket, so each size gets its own
tau. The file then carries the chunking (`"chunking"`: sizes, chosen temperatures, overlap) beside the buckets the
sizes map to; `read_chunking` gives it back as a `ChunkingConfig`. With explicit bucket edges instead
(`calibrate_spread`, `calibrate_dev`), a tau per token-length bucket, for the one-vector-per-document protocol.

Criteria:

- `spread` (label-free, the CLI default): the paper diagnoses length collapse as a distribution mismatch between
  short and long texts, so each longer bucket gets the tau whose embeddings' mean pairwise cosine (equivalently
  spread, `1 - S`) is closest to that of the reference (shortest) bucket at tau = 1. Measured on QMSum and BAMBOO
  with all-MiniLM-L6-v2, no tau brings long windows down to the short texts' level, so the criterion picks the
  least collapsed tau on the grid. It beat the tau = 1 baseline everywhere measured and beat the best global tau
  on QMSum's held-out queries and with `chunk_mean` (research/README.md).
- `self` (label-free): a retrieval proxy built from the corpus alone. Short passages cut from random documents are
  pseudo-queries whose relevant document is the one they come from (the inverse cloze task); bucket temperatures
  are then searched as with `dev`. It chose timid taus and helped less than `spread`; kept as an option.
- `dev`: with a labelled dev set, a coordinate search over bucket temperatures maximising nDCG@10.

The file (`calibration.json`) records the model, the buckets with their taus, the criterion, the window and
long-text policy it was made for, and the measurements behind the choice. `TempScaleConfig.with_calibration()`
loads it (and refuses a file made for another model); an index built from that config records it in its manifest.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tempscale_rag.config import Bucket, ChunkingConfig, read_calibration, read_chunking
from tempscale_rag.diagnostics.collapse import collapse_stats, sample_windows
from tempscale_rag.encoder import TempScaleEncoder
from tempscale_rag.evaluation.datasets import RetrievalDataset
from tempscale_rag.stores.manifest import atomic_file, package_version

DEFAULT_TAU_GRID: tuple[float, ...] = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
"""Candidate temperatures of every criterion."""

CALIBRATION_FORMAT = "tempscale-rag calibration v1"


@dataclass
class Calibration:
    """A calibration result: buckets with their chosen taus and the evidence.

    Attributes:
        model: Canonical model name the taus were chosen for.
        criterion: `spread`, `self` or `dev`.
        buckets: The buckets with their chosen taus.
        settings: The window (`max_seq_length`) and `long_text` policy the taus were chosen under.
        measurements: What the choice was based on (curves, scores tried).
        chunking: For a per-chunk-size calibration, the chunk sizes with their chosen temperatures (the buckets are
            `chunking.buckets(n_special)`); None for bucket edges calibrated directly.
    """

    model: str
    criterion: str
    buckets: list[Bucket]
    settings: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    chunking: ChunkingConfig | None = None

    def spec(self) -> str:
        """The chunk sizes with their taus (`64:1,128:1,256:0.8`), else the buckets (`0-128:1,128-256:0.9,256-:0.8`)."""
        if self.chunking is not None:
            return self.chunking.spec()
        return ",".join(
            f"{b.min_tokens}-{'' if b.max_tokens is None else b.max_tokens}:{b.tau:g}" for b in self.buckets
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "format": CALIBRATION_FORMAT,
            "model": self.model,
            "criterion": self.criterion,
            "buckets": [b.model_dump() for b in self.buckets],
            "chunking": None if self.chunking is None else self.chunking.to_json_dict(),
            "settings": self.settings,
            "measurements": self.measurements,
            "package_version": package_version(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def save(self, path: str | Path) -> Path:
        """Write the calibration file atomically (a crash leaves the old file or the new one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as handle:
            handle.write((json.dumps(self.to_json_dict(), indent=2) + "\n").encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration file (validated as `TempScaleConfig.with_calibration` validates it).

        Raises:
            ValueError: If the file is missing, unreadable or has invalid buckets.
        """
        data = read_calibration(path)
        return cls(
            model=str(data.get("model", "")),
            criterion=str(data.get("criterion", "")),
            buckets=list(data["buckets"]),
            settings=dict(data.get("settings") or {}),
            measurements=dict(data.get("measurements") or {}),
            chunking=read_chunking(path),
        )


def _settings(encoder: TempScaleEncoder) -> dict[str, Any]:
    return {"max_seq_length": encoder.window, "long_text": encoder.config.long_text}


def _bucket_lengths(bucket: Bucket, capacity: int, n_special: int) -> list[int]:
    """Representative content lengths inside a bucket (edges count special tokens too), within the window."""
    lo = max(bucket.min_tokens - n_special, 8)
    hi = min(
        (bucket.max_tokens if bucket.max_tokens is not None else capacity + n_special + 1) - n_special, capacity + 1
    )
    if lo >= hi:
        return []
    return sorted({max(lo, min(hi - 1, int(lo + f * (hi - lo)))) for f in (0.25, 0.5, 0.9)})


def calibrate_spread(
    encoder: TempScaleEncoder,
    corpus: Sequence[str],
    *,
    buckets: Sequence[Bucket] | None = None,
    taus: Sequence[float] = DEFAULT_TAU_GRID,
    per_length: int = 48,
    seed: int = 0,
) -> Calibration:
    """Label-free: give each bucket the tau whose mean pairwise cosine matches the shortest bucket's at tau = 1.

    Args:
        encoder: The engine (its model and window are used; its temperatures are not).
        corpus: Texts to cut windows of controlled length from (the user's documents).
        buckets: Bucket edges to calibrate (their taus are replaced); default: the encoder's buckets.
        taus: Candidate temperatures.
        per_length: Windows sampled per length.
        seed: Sampling seed.

    Returns:
        The calibration; the first bucket keeps tau = 1 (it is the reference). A bucket that lies wholly past the
        window is measured on full windows, the only inputs routed there under `truncate`.

    Raises:
        ValueError: If the corpus has no text long enough for the lengths needed.
    """
    buckets = list(buckets or encoder.config.buckets)
    n_special = encoder.count_tokens([""])[0]
    capacity = encoder.window - n_special
    reference_lengths = _bucket_lengths(buckets[0], capacity, n_special)
    if not reference_lengths:
        raise ValueError(f"the first bucket {buckets[0].label()} is too short to sample reference texts from")
    reference = sample_windows(encoder, corpus, reference_lengths, per_length, seed)
    plain = encoder.with_config(temperature=1.0, schedule=None, query_temperature=None)
    target = sum(collapse_stats(plain.encode(s.texts)).mean_cosine for s in reference.values()) / len(reference)
    chosen = [buckets[0].model_copy(update={"tau": 1.0})]
    measured: dict[str, Any] = {
        "reference_bucket": buckets[0].label(),
        "reference_lengths": reference_lengths,
        "reference_mean_cosine": target,
        "buckets": {},
    }
    for bucket in buckets[1:]:
        lengths = _bucket_lengths(bucket, capacity, n_special) or [capacity]
        samples = sample_windows(encoder, corpus, lengths, per_length, seed + 1)
        curve: dict[float, float] = {}
        for tau in taus:
            at_tau = encoder.with_config(temperature=tau, schedule=None, query_temperature=None)
            curve[tau] = sum(collapse_stats(at_tau.encode(s.texts)).mean_cosine for s in samples.values()) / len(
                samples
            )
        # Ties go to the larger tau: the smallest change to the model that reaches the target.
        best = min(curve, key=lambda t: (abs(curve[t] - target), -t))
        chosen.append(bucket.model_copy(update={"tau": best}))
        measured["buckets"][bucket.label()] = {
            "lengths": lengths,
            "mean_cosine_by_tau": {f"{t:g}": v for t, v in curve.items()},
            "tau": best,
        }
    return Calibration(
        model=encoder.model_name,
        criterion="spread",
        buckets=chosen,
        settings=_settings(encoder),
        measurements=measured,
    )


def calibrate_sizes(
    encoder: TempScaleEncoder,
    corpus: Sequence[str],
    chunking: ChunkingConfig | None = None,
    *,
    taus: Sequence[float] = DEFAULT_TAU_GRID,
    per_length: int = 48,
    seed: int = 0,
    reference_tokens: int | None = None,
) -> Calibration:
    """Label-free, per chunk size: each size gets the tau whose spread on full chunks matches short texts' at tau 1.

    This is the `spread` criterion applied to the product's pipeline: every chunk size is a length bucket, so texts
    of exactly each size (word-aligned windows cut from the corpus, as full chunks are) are embedded at every
    candidate tau and the tau whose mean pairwise cosine comes closest to the reference's is chosen (ties: the
    larger tau). The reference is texts of `reference_tokens` tokens at tau = 1; by default the smallest chunk size
    (which then keeps tau = 1), or 32 tokens when there is a single size.

    Args:
        encoder: The engine (its model and window are used; its temperatures are not).
        corpus: Texts to cut windows from (the user's documents).
        chunking: The chunk sizes to calibrate (their temperatures are replaced); default: `ChunkingConfig()`.
        taus: Candidate temperatures.
        per_length: Texts sampled per size.
        seed: Sampling seed.
        reference_tokens: Length (content tokens) of the reference texts; None: see above.

    Returns:
        The calibration: `chunking` with the chosen temperatures, and the buckets they map to.

    Raises:
        ValueError: If a size does not fit the window or the corpus has no text long enough.
    """
    chunking = chunking or ChunkingConfig()
    n_special = encoder.count_tokens([""])[0]
    capacity = encoder.window - n_special
    too_long = [size for size in chunking.sizes if size > capacity]
    if too_long:
        raise ValueError(
            f"chunk size {too_long[0]} does not fit the model window ({capacity} content tokens); "
            "give smaller sizes or a larger --max-seq-length"
        )
    if reference_tokens is None:
        reference_tokens = chunking.sizes[0] if len(chunking.sizes) > 1 else min(32, capacity)
    if not 1 <= reference_tokens <= capacity:
        raise ValueError(f"reference_tokens must be between 1 and {capacity}, got {reference_tokens}")
    plain = encoder.with_config(temperature=1.0, schedule=None, query_temperature=None)
    reference = sample_windows(encoder, corpus, [reference_tokens], per_length, seed)[reference_tokens]
    target = collapse_stats(plain.encode(reference.texts)).mean_cosine
    samples = sample_windows(encoder, corpus, list(chunking.sizes), per_length, seed + 1)
    chosen: list[float] = []
    measured: dict[str, Any] = {
        "reference_tokens": reference_tokens,
        "reference_mean_cosine": target,
        "sizes": {},
    }
    for size in chunking.sizes:
        if size == reference_tokens:
            chosen.append(1.0)  # the reference itself
            measured["sizes"][str(size)] = {"tau": 1.0, "reference": True}
            continue
        curve: dict[float, float] = {}
        for tau in taus:
            at_tau = encoder.with_config(temperature=tau, schedule=None, query_temperature=None)
            curve[tau] = collapse_stats(at_tau.encode(samples[size].texts)).mean_cosine
        best = min(curve, key=lambda t: (abs(curve[t] - target), -t))
        chosen.append(best)
        measured["sizes"][str(size)] = {"mean_cosine_by_tau": {f"{t:g}": v for t, v in curve.items()}, "tau": best}
    tuned = chunking.model_copy(update={"temperatures": tuple(chosen)})
    return Calibration(
        model=encoder.model_name,
        criterion="spread",
        buckets=list(tuned.buckets(n_special)),
        settings={**_settings(encoder), "n_special": n_special},
        measurements=measured,
        chunking=tuned,
    )


def chunking_calibration(calibration: Calibration, chunking: ChunkingConfig, n_special: int) -> Calibration:
    """A bucket calibration over `chunking.buckets(n_special)` (e.g. from `calibrate_dev`) as a per-size one.

    Args:
        calibration: Its buckets must be `chunking.buckets(n_special)`'s edges, in order.
        chunking: The chunk sizes.
        n_special: The engine's special-token count the buckets were made with.

    Raises:
        ValueError: If the buckets do not match the sizes.
    """
    edges = [(b.min_tokens, b.max_tokens) for b in chunking.buckets(n_special)]
    if [(b.min_tokens, b.max_tokens) for b in calibration.buckets] != edges:
        raise ValueError("the calibration's buckets are not the chunk sizes' buckets")
    tuned = chunking.model_copy(update={"temperatures": tuple(b.tau for b in calibration.buckets)})
    settings = {**calibration.settings, "n_special": n_special}
    return Calibration(
        calibration.model, calibration.criterion, list(calibration.buckets), settings, calibration.measurements, tuned
    )


def calibrate_dev(
    encoder: TempScaleEncoder,
    score: Callable[[TempScaleEncoder], float],
    *,
    buckets: Sequence[Bucket] | None = None,
    taus: Sequence[float] = DEFAULT_TAU_GRID,
    rounds: int = 2,
    criterion: str = "dev",
) -> Calibration:
    """Coordinate search over bucket temperatures maximising a dev-set score.

    Starting from tau = 1 everywhere, each bucket in turn (longest first) gets the grid value that scores best with
    the others fixed; `rounds` passes are made, and a pass that changes nothing ends the search. Only strict
    improvements move, so ties keep the gentler setting.

    Args:
        encoder: The engine.
        score: Evaluates an encoder configuration on the labelled dev set (for example nDCG@10); higher is better.
            It is called with encoders that differ only in bucket temperatures, so it should cache embeddings per
            (text, tau), as `RetrievalEvaluator.score` does.
        buckets: Bucket edges to search; default: the encoder's buckets.
        taus: Candidate temperatures per bucket.
        rounds: Passes over the buckets at most.
        criterion: Name recorded in the file (`dev`, or `self` for the label-free proxy).

    Returns:
        The calibration with the best temperatures found and every score tried.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    current = [b.model_copy(update={"tau": 1.0}) for b in (buckets or encoder.config.buckets)]
    tried: dict[str, float] = {}

    def evaluate(candidate: list[Bucket]) -> float:
        key = ",".join(f"{b.label()}:{b.tau:g}" for b in candidate)
        if key not in tried:
            tried[key] = float(
                score(encoder.with_config(buckets=candidate, temperature=None, schedule=None, query_temperature=None))
            )
        return tried[key]

    start_score = best_score = evaluate(current)
    passes = 0
    for _ in range(rounds):
        passes += 1
        changed = False
        for index in reversed(range(len(current))):
            for tau in taus:
                candidate = [*current[:index], current[index].model_copy(update={"tau": tau}), *current[index + 1 :]]
                value = evaluate(candidate)
                if value > best_score + 1e-9:
                    best_score, current, changed = value, candidate, True
        if not changed:
            break
    return Calibration(
        model=encoder.model_name,
        criterion=criterion,
        buckets=current,
        settings=_settings(encoder),
        measurements={"score_at_tau_1": start_score, "best_score": best_score, "passes": passes, "scores": tried},
    )


def pseudo_query_dataset(
    encoder: TempScaleEncoder,
    corpus: Sequence[str],
    *,
    n_queries: int = 200,
    query_tokens: int = 48,
    max_documents: int = 300,
    seed: int = 0,
) -> RetrievalDataset:
    """A label-free retrieval proxy: passages cut from the documents, each relevant to the document it came from.

    Passages start at a random word-aligned token offset anywhere in a random document (not only inside the window
    the model sees), so the proxy rewards document vectors that represent the whole text, as real queries do.

    Args:
        encoder: The engine whose tokenizer is used.
        corpus: The documents.
        n_queries: Pseudo-queries.
        query_tokens: Tokens per pseudo-query.
        max_documents: Documents kept at most (a seeded sample): the proxy's corpus.
        seed: Sampling seed.

    Raises:
        ValueError: If fewer than two documents are long enough for a passage.
    """
    rng = random.Random(f"pseudo|{seed}")
    docs = [t for t in corpus if t.strip()]
    if len(docs) > max_documents:
        docs = rng.sample(docs, max_documents)
    tokenizer = encoder.model.tokenizer
    offsets = tokenizer(docs, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    eligible = [i for i, o in enumerate(offsets) if len(o) >= query_tokens]
    if len(eligible) < 2:
        raise ValueError(f"the corpus needs at least two documents of {query_tokens}+ tokens to build pseudo-queries")
    width = len(str(len(docs) - 1))
    corpus_map = {f"doc{i:0{width}d}": text for i, text in enumerate(docs)}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in range(n_queries):
        i = rng.choice(eligible)
        spans = offsets[i]
        start = rng.randrange(0, len(spans) - query_tokens + 1)
        while 0 < start < len(spans) - query_tokens and spans[start][0] == spans[start - 1][1]:
            start += 1
        qid = f"q{q:05d}"
        queries[qid] = docs[i][spans[start][0] : spans[start + query_tokens - 1][1]]
        qrels[qid] = {f"doc{i:0{width}d}": 1}
    return RetrievalDataset(name="pseudo-queries", corpus=corpus_map, queries=queries, qrels=qrels)
