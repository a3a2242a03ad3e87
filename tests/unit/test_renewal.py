"""Renewal schedule: documented fractions, clamps and properties (hypothesis)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_provision.agent.renew.policy import (
    CHECK_INTERVAL,
    NextAction,
    RenewalPolicy,
    earliest_renewal,
    next_action,
    renewal_due,
    renewal_time,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
NO_JITTER = RenewalPolicy(jitter_s=0)


def test_long_lifetime_renews_at_two_thirds() -> None:
    """A 90-day certificate renews at 60 days (no jitter)."""
    t = renewal_time(T0, T0 + timedelta(days=90), NO_JITTER, random.Random(1))
    assert t == T0 + timedelta(days=60)


def test_short_lifetime_renews_at_half() -> None:
    """A 5-day certificate renews at 2.5 days."""
    t = renewal_time(T0, T0 + timedelta(days=5), NO_JITTER, random.Random(1))
    assert t == T0 + timedelta(days=2, hours=12)


def test_explicit_renew_before() -> None:
    """renew_before_s counts back from not_after."""
    policy = RenewalPolicy(renew_before_s=86_400, jitter_s=0)
    t = renewal_time(T0, T0 + timedelta(days=30), policy, random.Random(1))
    assert t == T0 + timedelta(days=29) - timedelta(hours=0)
    # the default margin (1 h) does not move it: 1 day before is earlier than 1 h before
    assert t <= T0 + timedelta(days=30) - timedelta(hours=1)


def test_safety_margin_caps_a_tiny_renew_before() -> None:
    """renew_before smaller than the margin still renews margin before expiry."""
    policy = RenewalPolicy(renew_before_s=1, jitter_s=0)
    t = renewal_time(T0, T0 + timedelta(days=30), policy, random.Random(1))
    assert t == T0 + timedelta(days=30) - timedelta(hours=1)


def test_jitter_only_moves_earlier_and_default_is_bounded() -> None:
    """Default jitter is at most min(5 % lifetime, 1 h) and never past the base time."""
    nb, na = T0, T0 + timedelta(days=90)
    base = T0 + timedelta(days=60)
    times = [renewal_time(nb, na, RenewalPolicy(), random.Random(i)) for i in range(200)]
    assert all(base - timedelta(hours=1) <= t <= base for t in times)
    assert len(set(times)) > 100


def test_margin_larger_than_lifetime_renews_at_once() -> None:
    """An absurd margin gives not_before (renew now)."""
    policy = RenewalPolicy(safety_margin_s=10_000)
    assert renewal_time(T0, T0 + timedelta(seconds=60), policy, random.Random(3)) == T0


def test_due() -> None:
    """renewal_due compares now with the renewal time."""
    na = T0 + timedelta(days=90)
    assert not renewal_due(T0, na, T0 + timedelta(days=59), NO_JITTER, random.Random(1))
    assert renewal_due(T0, na, T0 + timedelta(days=60), NO_JITTER, random.Random(1))


def test_earliest_renewal_seeds_with_serial() -> None:
    """earliest_renewal takes the minimum, each seeded by its serial; None for no certs."""
    certs = [("aa", T0, T0 + timedelta(days=90)), ("bb", T0, T0 + timedelta(days=30))]
    want = renewal_time(T0, T0 + timedelta(days=30), RenewalPolicy(), random.Random("bb"))
    assert earliest_renewal(certs, RenewalPolicy()) == want
    assert earliest_renewal([], RenewalPolicy()) is None


def test_bad_policy_values_rejected() -> None:
    """Negative or infinite knobs are refused."""
    with pytest.raises(ValueError, match="renew_before_s"):
        RenewalPolicy(renew_before_s=-1)
    with pytest.raises(ValueError, match="jitter_s"):
        RenewalPolicy(jitter_s=float("inf"))


lifetimes = st.floats(min_value=1, max_value=5 * 365 * 86_400, allow_nan=False)
optional_s = st.none() | st.floats(min_value=0, max_value=400 * 86_400, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(lifetime=lifetimes, before=optional_s, jitter=optional_s, margin=optional_s,
       seed=st.integers())
def test_property_bounds(lifetime: float, before: float | None, jitter: float | None,
                         margin: float | None, seed: int) -> None:
    """not_before <= t <= max(not_before, not_after - margin)."""
    na = T0 + timedelta(seconds=lifetime)
    policy = RenewalPolicy(renew_before_s=before, jitter_s=jitter, safety_margin_s=margin)
    t = renewal_time(T0, na, policy, random.Random(seed))
    effective_margin = min(0.1 * lifetime, 3600.0) if margin is None else margin
    assert t >= T0
    assert t <= max(T0, na - timedelta(seconds=effective_margin)) + timedelta(microseconds=1)


@settings(max_examples=300, deadline=None)
@given(lifetime=lifetimes, a=st.floats(min_value=0, max_value=400 * 86_400),
       b=st.floats(min_value=0, max_value=400 * 86_400), seed=st.integers())
def test_property_monotone_in_renew_before(lifetime: float, a: float, b: float, seed: int) -> None:
    """Renewing "longer before expiry" never gives a later time (same seed)."""
    small, large = sorted((a, b))
    na = T0 + timedelta(seconds=lifetime)
    t_small = renewal_time(T0, na, RenewalPolicy(renew_before_s=small), random.Random(seed))
    t_large = renewal_time(T0, na, RenewalPolicy(renew_before_s=large), random.Random(seed))
    assert t_large <= t_small


@settings(max_examples=100, deadline=None)
@given(lifetime=lifetimes, serial=st.text(min_size=1, max_size=40))
def test_property_deterministic_for_seeded_rng(lifetime: float, serial: str) -> None:
    """The same serial gives the same time, whatever else ran before."""
    na = T0 + timedelta(seconds=lifetime)
    first = renewal_time(T0, na, RenewalPolicy(), random.Random(serial))
    random.random()
    assert renewal_time(T0, na, RenewalPolicy(), random.Random(serial)) == first


def test_next_action_renews_the_earliest_else_checks_daily() -> None:
    """With certificates: renew at the earliest renewal; without: check in 24 h."""
    now = T0 + timedelta(days=1)
    certs = [("a1", T0, T0 + timedelta(days=90)), ("b2", T0, T0 + timedelta(days=30))]
    planned = next_action(certs, RenewalPolicy(), now)
    earliest = earliest_renewal(certs, RenewalPolicy())
    assert earliest is not None and earliest < T0 + timedelta(days=30)
    assert planned == NextAction("renew", earliest, earliest)
    assert next_action([], RenewalPolicy(), now) == NextAction("check",
                                                               now + timedelta(hours=24))
    assert next_action([], RenewalPolicy(), now).at - now == CHECK_INTERVAL
    late = datetime.max.replace(tzinfo=timezone.utc) - timedelta(hours=1)  # a clock at 9999
    assert next_action([], RenewalPolicy(), late).at == datetime.max.replace(tzinfo=timezone.utc)
