"""Time as the project writes and reads it: UTC, ISO 8601, whole seconds.

One place for the formats every zone shares (the agent's journal and schedule, the lab
server's certificate listings), so that a time written by one part reads the same in
another. Standard library only: the lean daemon imports it.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Callable

__all__ = ["LATEST", "Clock", "iso", "later", "parse_iso", "rfc3339", "utc_now"]

LATEST = datetime.max.replace(tzinfo=timezone.utc)
"""The last moment a ``datetime`` holds; :func:`later` never goes past it."""

Clock = Callable[[], datetime]
"""Injected wherever time matters, so that tests can fix it."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def later(moment: datetime, seconds: float) -> datetime:
    """``moment`` plus ``seconds``, clamped to what a ``datetime`` can hold.

    A wall clock set to year 9999 (a gateway without a real-time clock, a bad NTP answer) or
    an absurd delay must never end a run in ``OverflowError``: past :data:`LATEST` the
    answer is :data:`LATEST` (before year 1, year 1); a NaN delay counts as 0.
    """
    if math.isnan(seconds):
        seconds = 0.0
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        earliest = datetime.min.replace(tzinfo=moment.tzinfo)
        return LATEST.replace(tzinfo=moment.tzinfo) if seconds > 0 else earliest


def iso(moment: datetime) -> str:
    """``2026-11-30T14:02:07+00:00``: ISO 8601 in UTC, whole seconds (a naive time is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def rfc3339(moment: datetime) -> str:
    """``2026-11-30T14:02:07Z``: RFC 3339 in UTC, whole seconds, as Mainflux writes times."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; naive is UTC) as aware UTC; None if unreadable."""
    if not text:
        return None
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        return None
