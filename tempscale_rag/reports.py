"""What an engine call did to its inputs: token counts, routes and truncation per length bucket."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tempscale_rag.planning import Part, RouteTable

logger = logging.getLogger("tempscale_rag.encoder")  # the name users filter the truncation warning by


@dataclass
class BucketReport:
    """What happened to the inputs of one length bucket in one `encode` call."""

    bucket: str
    taus: list[float] = field(default_factory=list)
    inputs: int = 0
    segments: int = 0
    tokens: int = 0
    truncated_inputs: int = 0
    dropped_tokens: int = 0


@dataclass
class EncodeReport:
    """Truncation and routing report of the last `encode` call (`TempScaleEncoder.last_report`)."""

    inputs: int = 0
    segments: int = 0
    tokens: int = 0
    empty_inputs: int = 0
    truncated_inputs: int = 0
    dropped_tokens: int = 0
    window: int = 0
    long_text: str = "truncate"
    seconds: float = 0.0
    buckets: dict[str, BucketReport] = field(default_factory=dict)
    input_tokens: list[int] = field(default_factory=list, repr=False)
    """Per input: tokens the model saw for its first (or only) window."""
    input_buckets: list[str] = field(default_factory=list, repr=False)
    """Per input: the bucket label of its first (or only) window."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for `--json` output and index summaries (per-input lists left out)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("buckets", "input_tokens", "input_buckets")}
        out["buckets"] = {k: dict(v.__dict__) for k, v in self.buckets.items()}
        return out

    def merge(self, other: EncodeReport) -> None:
        """Add another call's counts into this one (used to total a multi-call job)."""
        for name in ("inputs", "segments", "tokens", "empty_inputs", "truncated_inputs", "dropped_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds
        self.window, self.long_text = other.window, other.long_text
        for label, rep in other.buckets.items():
            mine = self.buckets.setdefault(label, BucketReport(bucket=label))
            mine.taus = sorted(set(mine.taus) | set(rep.taus))
            for name in ("inputs", "segments", "tokens", "truncated_inputs", "dropped_tokens"):
                setattr(mine, name, getattr(mine, name) + getattr(rep, name))


def build_report(
    parts: list[Part], n_inputs: int, *, table: RouteTable, specials: int, window: int, long_text: str
) -> EncodeReport:
    """The routing and truncation report of a call, from all its planned parts (`specials`: tokens per segment)."""
    report = EncodeReport(inputs=n_inputs, window=window, long_text=long_text)
    if not parts:
        return report
    body = np.concatenate([p.body for p in parts])
    tau = np.concatenate([p.tau for p in parts])
    bucket = np.concatenate([p.bucket for p in parts])
    first = np.concatenate([p.first + p.first_segment for p in parts])
    dropped = np.concatenate([p.dropped for p in parts])
    seen = body + specials
    report.empty_inputs = sum(p.empty for p in parts)
    report.segments = len(body)
    report.tokens = int(seen.sum())
    report.truncated_inputs = int((dropped > 0).sum())
    report.dropped_tokens = int(dropped.sum())
    first_bucket = bucket[first]
    report.input_tokens = seen[first].tolist()
    report.input_buckets = [table.labels[b] for b in first_bucket.tolist()]
    for b in sorted(set(bucket.tolist()) | set(first_bucket.tolist())):
        label = table.labels[b]
        mine, firsts = bucket == b, first_bucket == b
        report.buckets[label] = BucketReport(
            bucket=label,
            taus=sorted(set(tau[mine].tolist())),
            inputs=int(firsts.sum()),
            segments=int(mine.sum()),
            tokens=int(seen[mine].sum()),
            truncated_inputs=int((dropped[firsts] > 0).sum()),
            dropped_tokens=int(dropped[firsts].sum()),
        )
    report.buckets = dict(sorted(report.buckets.items(), key=lambda kv: int(kv[0].split("-")[0].rstrip("+"))))
    return report


def log_truncation(report: EncodeReport) -> None:
    """Warn once per call, with counts per bucket, if any input lost tokens to truncation."""
    if not report.truncated_inputs:
        return
    per_bucket = ", ".join(
        f"{b.bucket}: {b.truncated_inputs} inputs/{b.dropped_tokens} tokens"
        for b in report.buckets.values()
        if b.truncated_inputs
    )
    logger.warning(
        "%d of %d inputs exceeded the %d-token window; %d tokens were dropped (%s). "
        "Use long_text='chunk_mean' to embed the whole text, or chunk it before embedding.",
        report.truncated_inputs,
        report.inputs,
        report.window,
        report.dropped_tokens,
        per_bucket,
    )
