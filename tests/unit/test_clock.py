"""The shared time formats: ISO 8601 / RFC 3339 in UTC, and a tolerant reader."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from edge_provision.clock import LATEST, iso, later, parse_iso, rfc3339

LATER = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00+00:00", LATER),
        ("2026-12-01T10:00:00Z", LATER),
        ("2026-12-01T10:00:00z", LATER),
        (" 2026-12-01T10:00:00Z ", LATER),
        ("2026-12-01T10:00:00", LATER),
        ("2026-12-01T12:00:00+02:00", LATER),
        ("not a time", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_iso(text: str | None, expected: datetime | None) -> None:
    """Journal and schedule times: ISO 8601, naive means UTC, junk means unknown."""
    assert parse_iso(text) == expected


def test_parse_iso_at_the_edge_of_the_calendar() -> None:
    """Year 1 with a positive offset cannot be moved to UTC: unknown, not an OverflowError."""
    assert parse_iso("0001-01-01T00:00:00+05:00") is None
    assert parse_iso("9999-12-31T23:59:59+00:00") == datetime(9999, 12, 31, 23, 59, 59,
                                                              tzinfo=timezone.utc)


def test_writers_round_trip() -> None:
    """What iso() and rfc3339() write, parse_iso() reads back to the same moment."""
    moment = datetime(2026, 11, 30, 14, 2, 7, 999_999, tzinfo=timezone(timedelta(hours=3)))
    assert iso(moment) == "2026-11-30T11:02:07+00:00"
    assert rfc3339(moment) == "2026-11-30T11:02:07Z"
    assert parse_iso(iso(moment)) == moment.replace(microsecond=0)
    assert parse_iso(rfc3339(moment)) == moment.replace(microsecond=0)
    assert iso(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05+00:00"


@pytest.mark.parametrize(
    ("moment", "seconds", "expected"),
    [
        (LATER, 60.0, LATER + timedelta(minutes=1)),
        (LATER, float("nan"), LATER),
        (LATER, float("inf"), LATEST),
        (LATER, 1e300, LATEST),
        (LATEST - timedelta(hours=1), 86400.0, LATEST),
        (datetime(1, 1, 1, tzinfo=timezone.utc), -60.0, datetime(1, 1, 1, tzinfo=timezone.utc)),
    ],
)
def test_later_clamps_to_what_a_datetime_holds(moment: datetime, seconds: float,
                                               expected: datetime) -> None:
    """A clock at year 9999 or an absurd delay gives the last representable time, no error."""
    assert later(moment, seconds) == expected
    assert iso(later(moment, seconds))  # and it can be written to the journal
