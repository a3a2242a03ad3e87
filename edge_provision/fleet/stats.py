"""What a run measured, as numbers: throughput, per-step latency, errors, a timeline.

Percentiles interpolate linearly between the two nearest ranks (numpy's default), over
the successful calls of a step; failed calls are counted by error class instead.
``enrollment`` is one gateway from its first attempt to its success, retries and
backoff included. The timeline splits the run into at most 60 buckets of a round width.
:meth:`FleetSummary.to_dict` is the ``run`` part of ``simulate --json`` (latencies in
milliseconds, rounded to the microsecond).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from edge_provision.clock import iso
from edge_provision.fleet.journey import EnrollmentPlan, Step
from edge_provision.fleet.runner import FleetRun

__all__ = ["FleetSummary", "StepStats", "Timeline", "percentile", "summarize"]

_BUCKETS_MAX = 60
_NICE_WIDTHS_S = (0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0,
                  300.0, 600.0, 1800.0, 3600.0)  # fmt: skip


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ascending ``ordered``; NaN when it is empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 3)


@dataclass(frozen=True)
class StepStats:
    """Latency of one step over its successful calls (seconds)."""

    step: str
    count: int
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float

    def to_dict(self) -> dict[str, object]:
        """Milliseconds; ``null`` for a step that never succeeded."""
        return {"count": self.count, "p50_ms": _ms(self.p50_s), "p95_ms": _ms(self.p95_s),
                "p99_ms": _ms(self.p99_s), "max_ms": _ms(self.max_s)}  # fmt: skip


@dataclass(frozen=True)
class Timeline:
    """Per bucket of ``bucket_s`` seconds: gateways enrolled, arrived, attempts failed."""

    bucket_s: float
    enrolled: tuple[int, ...]
    arrived: tuple[int, ...]
    failed_attempts: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        """Plain lists."""
        return {"bucket_s": self.bucket_s, "enrolled": list(self.enrolled),
                "arrived": list(self.arrived), "failed_attempts": list(self.failed_attempts)}


@dataclass(frozen=True)
class FleetSummary:
    """The numbers of one run."""

    gateways: int
    enrolled: int
    failed: int
    attempts: int
    retries: int
    mappings_created: int
    elapsed_s: float
    cpu_s: float
    concurrency: int
    started_at: str
    steps: tuple[StepStats, ...]
    attempt_errors: dict[str, int]
    failures: dict[str, int]
    failed_steps: dict[str, int]
    timeline: Timeline

    @property
    def gateways_per_s(self) -> float:
        """Enrolled gateways per second of the run (start to the last result)."""
        return self.enrolled / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_per_gateway_ms(self) -> float:
        """The simulator's CPU time per gateway."""
        return 1000 * self.cpu_s / self.gateways if self.gateways else 0.0

    def to_dict(self) -> dict[str, object]:
        """The ``run`` part of the ``--json`` document."""
        return {
            "gateways": self.gateways,
            "enrolled": self.enrolled,
            "failed": self.failed,
            "attempts": self.attempts,
            "retries": self.retries,
            "mappings_created": self.mappings_created,
            "concurrency": self.concurrency,
            "started_at": self.started_at,
            "elapsed_s": round(self.elapsed_s, 3),
            "gateways_per_s": round(self.gateways_per_s, 1),
            "simulator_cpu_s": round(self.cpu_s, 3),
            "simulator_cpu_per_gateway_ms": round(self.cpu_per_gateway_ms, 3),
            "steps": {s.step: s.to_dict() for s in self.steps},
            "attempt_errors": dict(sorted(self.attempt_errors.items())),
            "failures": dict(sorted(self.failures.items())),
            "failed_steps": dict(sorted(self.failed_steps.items())),
            "timeline": self.timeline.to_dict(),
        }


def _bucket_width(elapsed_s: float) -> float:
    wanted = elapsed_s / _BUCKETS_MAX
    return next((w for w in _NICE_WIDTHS_S if w >= wanted), _NICE_WIDTHS_S[-1])


def _histogram(times: Sequence[float], width: float, buckets: int) -> tuple[int, ...]:
    counts = [0] * buckets
    for t in times:
        counts[min(buckets - 1, max(0, int(t // width)))] += 1
    return tuple(counts)


def _timeline(run: FleetRun) -> Timeline:
    width = _bucket_width(run.elapsed_s)
    buckets = max(1, math.ceil(run.elapsed_s / width))
    return Timeline(
        bucket_s=width,
        enrolled=_histogram([r.ended_s for r in run.results
                             if r.ok and r.ended_s is not None], width, buckets),
        arrived=_histogram([r.arrival_s for r in run.results], width, buckets),
        failed_attempts=_histogram([e.at_s for e in run.errors], width, buckets),
    )  # fmt: skip


def summarize(run: FleetRun, plan: EnrollmentPlan) -> FleetSummary:
    """The numbers of ``run`` (the steps ``plan`` leaves out are left out)."""
    skipped = {Step.CSR.value} if not plan.csr else set()
    if plan.mqtt is None:
        skipped.add(Step.MQTT.value)
    by_step: dict[str, list[float]] = {s.value: [] for s in Step if s.value not in skipped}
    for sample in run.samples:
        by_step[sample.step.value].append(sample.elapsed_s)
    steps = []
    for name, values in by_step.items():
        values.sort()
        steps.append(StepStats(name, len(values), percentile(values, 50),
                               percentile(values, 95), percentile(values, 99),
                               values[-1] if values else math.nan))  # fmt: skip
    failed = [r for r in run.results if not r.ok]
    return FleetSummary(
        gateways=len(run.results),
        enrolled=len(run.results) - len(failed),
        failed=len(failed),
        attempts=sum(r.attempts for r in run.results),
        retries=sum(r.retries for r in run.results),
        mappings_created=sum(r.created_mapping for r in run.results),
        elapsed_s=run.elapsed_s,
        cpu_s=run.cpu_s,
        concurrency=run.concurrency,
        started_at=iso(run.started_at),
        steps=tuple(steps),
        attempt_errors=dict(Counter(e.kind for e in run.errors)),
        failures=dict(Counter(r.error.kind if r.error else "NotStarted" for r in failed)),
        failed_steps=dict(Counter(e.step.value for e in run.errors)),
        timeline=_timeline(run),
    )
