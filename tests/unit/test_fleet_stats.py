"""Run numbers: percentiles, the summary document and its timeline (pure)."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from edge_provision.fleet.journey import (
    AttemptError,
    EnrollmentPlan,
    GatewayResult,
    Step,
    StepSample,
)
from edge_provision.fleet.runner import FleetRun
from edge_provision.fleet.stats import percentile, summarize


@pytest.mark.parametrize(("q", "expected"), [(0, 1.0), (50, 2.5), (100, 4.0), (25, 1.75)])
def test_percentile_interpolates_between_ranks(q: float, expected: float) -> None:
    """Linear interpolation between the two nearest ranks, as numpy does by default."""
    assert percentile([1.0, 2.0, 3.0, 4.0], q) == pytest.approx(expected)


def test_percentile_of_nothing_is_nan() -> None:
    """No samples: NaN (rendered as null), and an out-of-range q is refused."""
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def _run() -> FleetRun:
    results = [GatewayResult(i, f"gw{i}", True, 1, 0.0, 0.0, 0.5 + i, created_mapping=True)
               for i in range(3)]
    results.append(GatewayResult(3, "gw3", False, 2, 0.0, 0.0, 1.2, error=AttemptError(
        "Unauthorized", Step.MAPPING, 1.2, False, "no")))
    errors = (AttemptError("ServiceUnavailable", Step.LOOKUP, 0.1, True, "down"),
              results[3].error)
    samples = [StepSample(Step.LOOKUP, 0.1 * i, 0.010 * (i + 1)) for i in range(5)]
    samples += [StepSample(Step.ENROLLMENT, 0.5 + i, 0.5) for i in range(3)]
    return FleetRun(tuple(results), tuple(samples), tuple(e for e in errors if e),
                    datetime(2026, 11, 30, tzinfo=timezone.utc), 2.5, 0.25, 4)


def test_summary_counts_and_rates() -> None:
    """Enrolled, gave up, retries, errors by class and step, gateways/s, CPU per gateway."""
    doc = summarize(_run(), EnrollmentPlan(csr=False)).to_dict()
    assert (doc["gateways"], doc["enrolled"], doc["failed"]) == (4, 3, 1)
    assert (doc["attempts"], doc["retries"], doc["mappings_created"]) == (5, 1, 3)
    assert doc["gateways_per_s"] == 1.2  # 3 enrolled in 2.5 s
    assert doc["simulator_cpu_per_gateway_ms"] == 62.5
    assert doc["attempt_errors"] == {"ServiceUnavailable": 1, "Unauthorized": 1}
    assert doc["failures"] == {"Unauthorized": 1}
    assert doc["failed_steps"] == {"lookup": 1, "mapping": 1}
    assert doc["started_at"].startswith("2026-11-30T00:00:00")


def test_steps_left_out_by_the_plan_are_not_reported() -> None:
    """Without CSR and MQTT those rows are absent; a step without success has null times."""
    steps = summarize(_run(), EnrollmentPlan(csr=False))
    doc = steps.to_dict()["steps"]
    assert set(doc) == {"lookup", "mapping", "bootstrap", "enrollment"}
    assert doc["lookup"] == {"count": 5, "p50_ms": 30.0, "p95_ms": 48.0, "p99_ms": 49.6,
                             "max_ms": 50.0}
    assert doc["mapping"]["count"] == 0 and doc["mapping"]["p50_ms"] is None
    assert "csr" in summarize(_run(), EnrollmentPlan(csr=True)).to_dict()["steps"]


def test_timeline_buckets_add_up() -> None:
    """Every enrolled gateway, arrival and failed attempt falls in exactly one bucket."""
    timeline = summarize(_run(), EnrollmentPlan()).timeline
    assert timeline.bucket_s == 0.05  # 2.5 s / 60 buckets at most -> 0.05 s
    assert sum(timeline.enrolled) == 3
    assert sum(timeline.arrived) == 4
    assert sum(timeline.failed_attempts) == 2
    assert len(timeline.enrolled) == 50
