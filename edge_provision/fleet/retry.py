"""How a simulated gateway retries: the daemon's backoff, with time scaled down.

The daemon reruns a failed enrollment after a transient failure (network, 429, 5xx) with
capped exponential backoff and full jitter (:mod:`edge_provision.agent.backoff`), waits
at least as long as a ``Retry-After`` asked, and stops retrying an error a human must
fix. A simulated gateway does the same, with every delay multiplied by ``time_scale``
(0.01: a 300 s cap becomes 3 s) and at most ``max_attempts`` attempts, so that a run
always ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_provision.agent.backoff import Backoff, UniformSource
from edge_provision.errors import EdgeProvisionError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """The daemon's backoff, a time scale and an attempt limit."""

    backoff: Backoff
    time_scale: float = 1.0
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if not math.isfinite(self.time_scale) or self.time_scale < 0:
            raise ValueError(f"time scale must be a finite number >= 0, got {self.time_scale!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max attempts must be at least 1, got {self.max_attempts}")

    def should_retry(self, error: EdgeProvisionError, attempts: int) -> bool:
        """Whether a gateway that failed ``attempts`` times with ``error`` tries again."""
        return error.retryable and attempts < self.max_attempts

    def delay_s(self, failures: int, rng: UniformSource, retry_after_s: float | None = None
                ) -> float:  # fmt: skip
        """The scaled wait after the ``failures``-th consecutive failure (1-based)."""
        delay = self.backoff.delay_s(failures - 1, rng)
        return max(delay, retry_after_s or 0.0) * self.time_scale
