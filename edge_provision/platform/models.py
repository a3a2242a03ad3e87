"""Values the platform clients return, and the tolerant JSON readers that build them.

Secrets (thing keys, private keys, bootstrap content) are left out of ``repr``
so that logging one of these objects by mistake leaks nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, TypeVar

from edge_provision.errors import ProtocolError

__all__ = [
    "PlatformChannel",
    "PlatformThing",
    "parse_channel",
    "parse_list",
    "parse_rfc3339",
    "parse_thing",
]

T = TypeVar("T")


@dataclass(frozen=True)
class PlatformThing:
    """A thing as the platform reports it (``key`` is its MQTT/HTTP password)."""

    id: str
    name: str
    key: str = field(repr=False)
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PlatformChannel:
    """A channel; its role (control/data/export) is ``metadata["type"]``."""

    id: str
    name: str
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def type(self) -> str | None:
        """The channel role from ``metadata.type`` (``None`` if absent or not a string)."""
        value = self.metadata.get("type")
        return value if isinstance(value, str) else None


def _str(obj: dict[str, object], key: str, where: str, *, required: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"{where}: missing field {key!r}")
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{where}.{key}: expected a string, got {type(value).__name__}")
    if required and not value:
        raise ProtocolError(f"{where}: field {key!r} is empty")
    return value


def _metadata(value: object, where: str) -> dict[str, object]:
    """Metadata is an object; tolerate ``null`` and a JSON-encoded object string."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ProtocolError(f"{where}.metadata: a string that is not a JSON object") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}.metadata: expected an object, got {type(value).__name__}")
    return value


def parse_thing(value: object, where: str) -> PlatformThing:
    """Read ``{id, name, key, metadata}``; ``id`` and ``key`` are required."""
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
    return PlatformThing(
        id=_str(value, "id", where, required=True),
        name=_str(value, "name", where, required=False),
        key=_str(value, "key", where, required=True),
        metadata=_metadata(value.get("metadata"), where),
    )


def parse_channel(value: object, where: str) -> PlatformChannel:
    """Read ``{id, name?, metadata?}``; only ``id`` is required."""
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
    return PlatformChannel(
        id=_str(value, "id", where, required=True),
        name=_str(value, "name", where, required=False),
        metadata=_metadata(value.get("metadata"), where),
    )


def parse_list(data: dict[str, object], key: str, parse: Callable[[object, str], T],
               where: str) -> tuple[T, ...]:  # fmt: skip
    """The items of list field ``key`` of ``data`` (absent or ``null``: none), each read
    by ``parse`` with its place (``key[i]``) for error messages."""
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: {key!r} is not a list")
    return tuple(parse(item, f"{key}[{i}]") for i, item in enumerate(value))


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))"
)


def parse_rfc3339(text: str, where: str = "time") -> datetime:
    """Parse an RFC 3339 time as Go writes it (``Z`` or offset, up to nanoseconds) to UTC."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ProtocolError(f"{where}: not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction = match.group(7) or ""
    micro = int((fraction + "000000")[:6])
    offset = timedelta(0)
    if match.group(9):
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        if match.group(9) == "-":
            offset = -offset
    try:
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
    except ValueError as exc:
        raise ProtocolError(f"{where}: invalid time {text!r}: {exc}") from None
    return moment.astimezone(timezone.utc)
