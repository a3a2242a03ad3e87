"""Pure readers of edge_provision.platform.models and certs helpers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from edge_provision.errors import ProtocolError
from edge_provision.platform.certs import normalize_serial
from edge_provision.platform.models import (
    PlatformChannel,
    parse_channel,
    parse_list,
    parse_rfc3339,
    parse_thing,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-02T03:04:05Z", datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2027-01-02T03:04:05.5Z", datetime(2027, 1, 2, 3, 4, 5, 500000, tzinfo=timezone.utc)),
        (
            "2027-01-02T03:04:05.123456789Z",
            datetime(2027, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc),
        ),
        ("2027-01-02T05:34:05+02:30", datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2027-01-01T23:04:05-04:00", datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2027-01-02 03:04:05z", datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime) -> None:
    """Go's RFC 3339 output (Z, offsets, nanoseconds) parses to aware UTC."""
    value = parse_rfc3339(text)
    assert value == expected
    assert value.tzinfo == timezone.utc


@pytest.mark.parametrize(
    "text", ["2027-01-02", "2027-01-02T03:04:05", "2027-13-02T03:04:05Z", "soon"]
)
def test_parse_rfc3339_rejects(text: str) -> None:
    """Dates without a zone or impossible dates are ProtocolErrors."""
    with pytest.raises(ProtocolError):
        parse_rfc3339(text, "expiration")


def test_channel_type_and_metadata_forms() -> None:
    """Channel metadata may be null, an object or a JSON string; type comes from it."""
    assert parse_channel({"id": "c"}, "c").metadata == {}
    assert parse_channel({"id": "c", "metadata": None}, "c").type is None
    assert parse_channel({"id": "c", "metadata": '{"type":"data"}'}, "c").type == "data"
    assert PlatformChannel("c", "n", {"type": 5}).type is None
    with pytest.raises(ProtocolError, match="metadata"):
        parse_channel({"id": "c", "metadata": [1]}, "channels[0]")


def test_thing_requires_id_and_key() -> None:
    """A thing needs a non-empty id and key; the key is not in its repr."""
    thing = parse_thing({"id": "t", "key": "sekrit", "name": "n"}, "t")
    assert "sekrit" not in repr(thing)
    with pytest.raises(ProtocolError, match="field 'key' is empty"):
        parse_thing({"id": "t", "key": ""}, "things[0]")
    with pytest.raises(ProtocolError, match="expected an object"):
        parse_thing("t", "things[0]")


def test_normalize_serial() -> None:
    """Serials compare as lower hex without separators."""
    assert normalize_serial("1A:2b:3C") == "1a2b3c"
    assert normalize_serial(" ff ") == "ff"


def test_parse_list_reads_each_item_with_its_place() -> None:
    """A list field is read item by item; null or absent is empty; errors name key[i]."""
    data: dict[str, object] = {"channels": [{"id": "c1"}, {"id": "c2", "name": "n"}],
                               "things": None}
    channels = parse_list(data, "channels", parse_channel, "reply")
    assert [c.id for c in channels] == ["c1", "c2"]
    assert parse_list(data, "things", parse_thing, "reply") == ()
    assert parse_list(data, "absent", parse_thing, "reply") == ()
    with pytest.raises(ProtocolError, match=r"reply: 'channels' is not a list"):
        parse_list({"channels": {"id": "c1"}}, "channels", parse_channel, "reply")
    with pytest.raises(ProtocolError, match=r"channels\[1\]: missing field 'id'"):
        parse_list({"channels": [{"id": "c1"}, {}]}, "channels", parse_channel, "reply")


def test_platform_package_names_load_lazily_and_resolve() -> None:
    """Every name platform/__init__ promises resolves to the class of its home module."""
    import importlib

    import edge_provision.platform as platform

    for name in platform.__all__:
        home = importlib.import_module(platform._HOMES[name])
        assert getattr(platform, name) is getattr(home, name)
    assert sorted(platform.__all__) == sorted(platform._HOMES)
