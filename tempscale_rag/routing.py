"""Length routing: which attention temperature each input gets, from the number of tokens the model sees.

Length collapse grows with sequence length, so the temperature is a function of length: either a step function over
token-length buckets (`TempScaleConfig.buckets`) or a continuous schedule such as LongEmbed's
`tau(n) = 1 / max(1, ln n / ln n0)`. Under a schedule, tau is rounded to `SCHEDULE_RESOLUTION` so inputs still share
batches; each distinct tau then acts as its own bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tempscale_rag.config import Bucket, TempScaleConfig

SCHEDULE_RESOLUTION = 0.01


@dataclass(frozen=True)
class Route:
    """Where one input goes: the bucket label (for reports) and the temperature it is encoded at."""

    bucket: str
    tau: float


class LengthRouter:
    """Assigns each input a bucket and a temperature from its token length.

    Args:
        config: The shared configuration; `temperature`, `schedule`, `buckets` and `query_temperature` are used.
    """

    def __init__(self, config: TempScaleConfig) -> None:
        self.config = config
        self._buckets: tuple[Bucket, ...] = config.buckets

    @property
    def mode(self) -> str:
        """`global`, `schedule` or `buckets`: which rule decides the temperature."""
        if self.config.temperature is not None:
            return "global"
        if self.config.schedule is not None:
            return "schedule"
        return "buckets"

    def bucket_for(self, n_tokens: int) -> Bucket:
        """The configured bucket containing `n_tokens` (buckets cover 0..infinity by validation)."""
        for bucket in self._buckets:
            if bucket.max_tokens is None or n_tokens < bucket.max_tokens:
                return bucket
        raise ValueError(f"no bucket covers {n_tokens} tokens")  # unreachable after validation

    def route(self, n_tokens: int, *, query: bool = False) -> Route:
        """Route one input of `n_tokens` tokens (as the model sees it)."""
        bucket = self.bucket_for(n_tokens)
        label = bucket.label()
        if query and self.config.query_temperature is not None:
            return Route(label, self.config.query_temperature)
        if self.config.temperature is not None:
            return Route(label, self.config.temperature)
        if self.config.schedule is not None:
            return Route(label, self.schedule_tau(n_tokens))
        return Route(label, bucket.tau)

    def schedule_tau(self, n_tokens: int) -> float:
        """LongEmbed's schedule `1 / max(1, ln n / ln n0)`, rounded to `SCHEDULE_RESOLUTION`."""
        n0 = self.config.schedule_n0
        ratio = math.log(max(n_tokens, 2)) / math.log(n0)
        tau = 1.0 / max(1.0, ratio)
        return round(round(tau / SCHEDULE_RESOLUTION) * SCHEDULE_RESOLUTION, 6)
