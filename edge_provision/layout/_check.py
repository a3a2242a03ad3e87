"""Checking half of :mod:`edge_provision.layout`: validation of a parsed layout.

Private to the layout engine; :func:`check_layout` turns ``config.toml`` text into plain
validated values (or one :class:`LayoutError` listing every problem) that the package
wraps in its public dataclasses. Parsing, line numbers and syntax errors come from the
shared TOML front end (:mod:`edge_provision.tomlfile`), ``[cert].ttl`` from the shared
duration grammar (:mod:`edge_provision.duration`). Standard library only.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from edge_provision import tomlfile
from edge_provision.duration import MAX_GO_TEXT, MAX_NS, format_duration, parse_duration
from edge_provision.errors import LayoutError, Problem

__all__ = [
    "CHANNEL_TYPES",
    "KEY_BITS",
    "MAX_NAME_LENGTH",
    "Checked",
    "check_layout",
    "describe",
    "json_problems",
]

CHANNEL_TYPES: tuple[str, ...] = ("control", "data", "export")
MAX_NAME_LENGTH = 1024
KEY_BITS: dict[str, tuple[int, ...]] = {"ec": (256, 384, 521), "rsa": (2048, 3072, 4096)}
DEFAULT_TTL = "2400h"
DEFAULT_TTL_S = 8_640_000

_KEY_TYPE_SPELLINGS = ("keyType", "KeyType", "keytype", "KEYTYPE", "key_type")
_SERVER_MISSPELLINGS = {
    "LogLevel": "log_level",
    "things_location": "things_url",
    "users_location": "users_url",
}
_ENTRY_KEYS = {"things": ("name", "metadata", "id", "key"), "channels": ("name", "metadata", "id")}
_TOP_KEYS = ("file", "server", "bootstrap", "cert", "things", "channels")
_BOOTSTRAP_KEYS = ("provision", "autowhite_list", "x509_provision", "content")

_DATETIME_MESSAGE = (
    'a TOML date/time cannot be sent as JSON; quote it as a string, e.g. "2024-01-31T12:00:00Z"'
)


def describe(value: object) -> str:
    """Name the TOML type of ``value`` for an error message ("a string", "a table")."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date/time"
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "an array"
    return type(value).__name__


def _short(text: str, limit: int = 40) -> str:
    """Quote ``text`` for a message, shortened to ``limit`` characters."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def json_problems(value: object, path: str) -> list[tuple[str, str]]:
    """Return ``(path, message)`` for every part of ``value`` that JSON cannot carry."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        here, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{here}.{key}", sub) for key, sub in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((f"{here}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
        elif isinstance(item, (datetime.date, datetime.time)):
            found.append((here, _DATETIME_MESSAGE))
        elif isinstance(item, float) and not math.isfinite(item):
            found.append((here, f"{item} cannot be sent as JSON; use a finite number or a string"))
    return found


@dataclass(frozen=True)
class Checked:
    """Plain validated values of one layout file (layout.py wraps them)."""

    things: tuple[tuple[str, dict[str, object]], ...]
    channels: tuple[tuple[str, dict[str, object]], ...]
    bootstrap: dict[str, bool]
    content: dict[str, object] | None
    ttl: str
    ttl_s: int
    key_bits: int | None
    key_type: str
    server: dict[str, object]
    explicit: frozenset[str]
    warnings: tuple[Problem, ...]


class _Checker:
    """Collects problems and warnings with file, path and line."""

    def __init__(self, document: tomlfile.TomlDocument) -> None:
        self.source = document.source
        self.index = document.lines
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.explicit: set[str] = set()

    def problem(self, path: str, message: str) -> None:
        """Record an error at ``path``."""
        self.problems.append(Problem(message, path, self.source, self.index.line(path)))

    def warn(self, path: str, message: str) -> None:
        """Record a warning at ``path``."""
        self.warnings.append(Problem(message, path, self.source, self.index.line(path)))

    def table(self, doc: dict[str, object], key: str) -> dict[str, object]:
        """``doc[key]`` as a table ({} if absent, a problem if not a table)."""
        value = doc.get(key, {})
        if isinstance(value, dict):
            return value
        self.problem(key, f"expected a table ([{key}]), got {describe(value)}")
        return {}

    def boolean(self, table: dict[str, object], key: str, default: bool) -> bool:
        """``[bootstrap].key`` as a bool."""
        if key not in table:
            return default
        self.explicit.add(f"bootstrap.{key}")
        value = table[key]
        if isinstance(value, bool):
            return value
        self.problem(f"bootstrap.{key}", f"expected true or false, got {describe(value)}")
        return default

    def json_value(self, value: object, path: str) -> None:
        """Report parts of ``value`` that cannot be sent as JSON."""
        for where, message in json_problems(value, path):
            self.problem(where, message)


_Entries = tuple[tuple[str, dict[str, object]], ...]


def _check_entries(doc: dict[str, object], kind: str, check: _Checker) -> _Entries:
    """Validate ``[[things]]`` or ``[[channels]]``; return (name, metadata) of good entries."""
    singular = kind[:-1]
    value = doc.get(kind)
    if value is None or value == []:
        check.problem(kind, f"no {kind}: add at least one [[{kind}]] table with a name")
        return ()
    check.explicit.add(kind)
    if not isinstance(value, list):
        check.problem(kind, f"expected an array of tables ([[{kind}]]), got {describe(value)}")
        return ()
    good: list[tuple[str, dict[str, object]]] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(value):
        path = f"{kind}[{i}]"
        if not isinstance(entry, dict):
            check.problem(path, f"expected a table ([[{kind}]]), got {describe(entry)}")
            continue
        name = _check_name(entry.get("name"), f"{path}.name", kind, check)
        metadata = entry.get("metadata", {})
        if not isinstance(metadata, dict):
            check.problem(
                f"{path}.metadata",
                f"expected a table ([{kind}.metadata]), got {describe(metadata)}",
            )
        else:
            check.json_value(metadata, f"{path}.metadata")
            kind_value = metadata.get("type", CHANNEL_TYPES[0])
            if kind == "channels" and kind_value not in CHANNEL_TYPES:
                shown = repr(kind_value) if isinstance(kind_value, str) else describe(kind_value)
                allowed = ", ".join(repr(t) for t in CHANNEL_TYPES)
                check.problem(
                    f"{path}.metadata.type",
                    f"unknown channel type {shown}; expected one of {allowed} (or leave type out)",
                )
        for key in entry:
            if key not in _ENTRY_KEYS[kind]:
                known = ", ".join(_ENTRY_KEYS[kind])
                check.warn(f"{path}.{key}", f"unknown key {key!r} ignored; known keys: {known}")
        if name is not None and name in seen:
            check.problem(
                f"{path}.name",
                f"duplicate {singular} name {name!r} (also {kind}[{seen[name]}]); "
                f"{singular} names must be unique",
            )
        elif name is not None:
            seen[name] = i
        if name is not None and isinstance(metadata, dict):
            good.append((name, metadata))
    return tuple(good)


def _check_name(value: object, path: str, kind: str, check: _Checker) -> str | None:
    """Validate one entry's name; None if it is unusable."""
    if value is None:
        check.problem(path, f'missing name; every [[{kind}]] entry needs name = "..."')
    elif not isinstance(value, str):
        check.problem(path, f"name must be a string, got {describe(value)}")
    elif not value.strip():
        check.problem(path, f"name is empty; give the {kind[:-1]} a name")
    elif len(value) > MAX_NAME_LENGTH:
        check.problem(path, f"name is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}")
    else:
        return value
    return None


def _check_content(table: dict[str, object], check: _Checker) -> dict[str, object] | None:
    """Validate ``[bootstrap.content]``; ``content = ""`` is no content, with a warning."""
    if "content" not in table:
        return None
    check.explicit.add("bootstrap.content")
    raw = table["content"]
    if isinstance(raw, dict):
        check.json_value(raw, "bootstrap.content")
        return raw
    if raw == "":
        check.warn(
            "bootstrap.content",
            'content = "" read as no content (Mainflux 0.13.0 rejects the whole file for it); '
            "remove the line or write a [bootstrap.content] table",
        )
    else:
        check.problem(
            "bootstrap.content", f"expected a table ([bootstrap.content]), got {describe(raw)}"
        )
    return None


def _check_ttl(table: dict[str, object], check: _Checker) -> tuple[str, int]:
    """Validate ``cert.ttl``; return (text, whole seconds rounded up).

    Go durations up to Go's limit; ``d`` and bare seconds are read too, with a warning
    that Mainflux's own provision service would refuse the file.
    """
    if "ttl" not in table:
        return DEFAULT_TTL, DEFAULT_TTL_S
    check.explicit.add("cert.ttl")
    raw = table["ttl"]
    if not isinstance(raw, str):
        check.problem("cert.ttl", f'expected a duration string like "2400h", got {describe(raw)}')
        return DEFAULT_TTL, DEFAULT_TTL_S
    try:
        duration = parse_duration(raw)
    except ValueError as exc:
        check.problem("cert.ttl", str(exc))
        return DEFAULT_TTL, DEFAULT_TTL_S
    if duration.ns > MAX_NS:
        check.problem(
            "cert.ttl",
            f"ttl {_short(raw)} is too long; the maximum is Go's limit, {MAX_GO_TEXT} "
            "(about 292 years)",
        )
        return DEFAULT_TTL, DEFAULT_TTL_S
    if duration.ns <= 0:
        check.problem("cert.ttl", f'ttl must be positive, got {raw!r}; e.g. "2400h"')
        return DEFAULT_TTL, DEFAULT_TTL_S
    if duration.go_problem is not None:
        go_text = format_duration(duration.ns, days=False)
        check.warn(
            "cert.ttl",
            f"ttl {_short(raw)} is read as {format_duration(duration.ns)}, but Mainflux's own "
            f"provision service would refuse this file (Go durations do not allow "
            f'{duration.go_problem}); write "{go_text}" to stay compatible',
        )
    return raw, duration.whole_seconds


def _check_key_type(table: dict[str, object], check: _Checker) -> str | None:
    """Validate the key type under any upstream spelling; None if invalid."""
    spellings = [k for k in _KEY_TYPE_SPELLINGS if k in table]
    if not spellings:
        return "ec"
    check.explicit.add("cert.key_type")
    if len({repr(table[k]) for k in spellings}) > 1:
        check.problem(
            f"cert.{spellings[1]}",
            f"key type set twice with different values ({', '.join(spellings)}); keep one",
        )
    if "key_type" in spellings:
        check.warn(
            "cert.key_type",
            "Mainflux provision 0.13.0 ignores key_type; write keyType to stay compatible",
        )
    raw = table[spellings[0]]
    if raw == "":
        return "ec"
    if isinstance(raw, str) and raw.lower() in KEY_BITS:
        return raw.lower()
    check.problem(f"cert.{spellings[0]}", f'expected "ec" or "rsa", got {describe(raw)}')
    return None


def _check_key_bits(table: dict[str, object], key_type: str | None, check: _Checker) -> int | None:
    """Validate ``cert.key_bits`` against the key type; None means the type's default."""
    if "key_bits" not in table:
        return None
    check.explicit.add("cert.key_bits")
    raw = table["key_bits"]
    if not isinstance(raw, int) or isinstance(raw, bool):
        check.problem("cert.key_bits", f"expected an integer like 256 or 2048, got {describe(raw)}")
    elif key_type is not None and raw not in KEY_BITS[key_type]:
        allowed = ", ".join(str(b) for b in KEY_BITS[key_type])
        default = "cert.key_type" not in check.explicit
        hint = ' (the default; set keyType = "rsa" for RSA sizes)' if default else ""
        check.problem(
            "cert.key_bits",
            f'key_bits {raw} is not valid for key type "{key_type}"{hint}; use one of {allowed}',
        )
    else:
        return raw
    return None


def _by_line(problems: list[Problem]) -> tuple[Problem, ...]:
    """Problems in file order; those without a line last, in the order found."""
    return tuple(sorted(problems, key=lambda p: (p.line is None, p.line or 0)))


def _declares_external_id(entries: object) -> bool:
    """True if any raw ``[[things]]`` entry has ``metadata.external_id`` (valid or not)."""
    return isinstance(entries, list) and any(
        isinstance(e, dict)
        and isinstance(e.get("metadata"), dict)
        and "external_id" in e["metadata"]
        for e in entries
    )


def check_layout(text: str, source: str) -> Checked:
    """Parse and validate layout text; raise :class:`LayoutError` listing every problem."""
    document = tomlfile.loads(text, source, LayoutError)
    doc = document.doc
    check = _Checker(document)
    for key in doc:
        if key not in _TOP_KEYS:
            check.warn(key, f"unknown top-level key {key!r} ignored")
    server = check.table(doc, "server")
    for key in server:
        check.explicit.add(f"server.{key}")
        if key in _SERVER_MISSPELLINGS:
            right = _SERVER_MISSPELLINGS[key]
            check.warn(f"server.{key}", f"{key} is ignored (by Mainflux too); the key is {right}")
    things = _check_entries(doc, "things", check)
    channels = _check_entries(doc, "channels", check)
    bootstrap = check.table(doc, "bootstrap")
    content = _check_content(bootstrap, check)
    for key in bootstrap:
        if key not in _BOOTSTRAP_KEYS:
            check.warn(f"bootstrap.{key}", f"unknown key {key!r} in [bootstrap] ignored")
    flags = {
        "provision": check.boolean(bootstrap, "provision", True),
        "autowhite_list": check.boolean(bootstrap, "autowhite_list", True),
        "x509_provision": check.boolean(bootstrap, "x509_provision", False),
    }
    cert = check.table(doc, "cert")
    ttl, ttl_s = _check_ttl(cert, check)
    key_type = _check_key_type(cert, check)
    key_bits = _check_key_bits(cert, key_type, check)
    for key in cert:
        if key not in ("ttl", "key_bits", *_KEY_TYPE_SPELLINGS):
            check.warn(f"cert.{key}", f"unknown key {key!r} in [cert] ignored")
    if flags["provision"] and things and not _declares_external_id(doc.get("things")):
        explicit = "bootstrap.provision" in check.explicit
        check.problem(
            "bootstrap.provision" if explicit else "things[0]",
            "bootstrap.provision is true but no thing has metadata.external_id; add "
            'external_id = "" to the gateway thing\'s [things.metadata] or set provision = false',
        )
    if check.problems:
        raise LayoutError(_by_line(check.problems))
    return Checked(
        things=things,
        channels=channels,
        bootstrap=flags,
        content=content,
        ttl=ttl,
        ttl_s=ttl_s,
        key_bits=key_bits,
        key_type=key_type or "ec",
        server=dict(server),
        explicit=frozenset(check.explicit),
        warnings=_by_line(check.warnings),
    )
