"""Values of the credential store and their on-disk JSON forms.

The values (:class:`State`, :class:`Generation` ...) are re-exported by
:mod:`edge_provision.agent.store`: import them from there. The on-disk helpers (sealing,
parsing, rendering a generation, field readers) serve the
:class:`~edge_provision.agent.store.Store` only. Standard library only: the lean daemon
imports this module.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

from edge_provision import fileio
from edge_provision.clock import iso, utc_now
from edge_provision.errors import StoreError
from edge_provision.logs import register_secret

__all__ = [
    "JOURNAL_LIMIT",
    "ErrorInfo",
    "Generation",
    "GenerationData",
    "JournalEntry",
    "Phase",
    "State",
    "StoredChannel",
    "StoredThing",
]

JOURNAL_LIMIT = 50
STATE_VERSION = 1
_STATUSES = ("started", "done", "failed")
_SOURCES = ("mapping", "bootstrap", "renewal")
_GEN_NAME_RE = re.compile(r"^[1-9][0-9]{0,8}$")
_THING_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Phase(str, Enum):
    """Where the gateway stands in its life cycle (DESIGN.md "Daemon states")."""

    UNPROVISIONED = "unprovisioned"
    ENROLLING = "enrolling"
    PROVISIONED = "provisioned"
    RENEWING = "renewing"
    FAILED_PERMANENT = "failed-permanent"
    DAMAGED = "damaged"  # status only, never stored: the only generation is damaged


@dataclass(frozen=True)
class JournalEntry:
    """One step outcome: ``status`` is ``started``, ``done`` or ``failed``."""

    step: str
    status: str
    at: str
    detail: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"journal status {self.status!r}: expected one of {_STATUSES}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.detail.items()):
            raise ValueError("journal detail must map strings to strings")
        object.__setattr__(self, "detail", dict(self.detail))


@dataclass(frozen=True)
class ErrorInfo:
    """The last error: its class name (``kind``), message and when it happened."""

    kind: str
    message: str
    at: str


@dataclass(frozen=True)
class State:
    """The persisted state machine and journal (the last :data:`JOURNAL_LIMIT` entries)."""

    phase: Phase = Phase.UNPROVISIONED
    journal: tuple[JournalEntry, ...] = ()
    current_generation: Optional[int] = None
    last_error: Optional[ErrorInfo] = None
    next_action: Optional[str] = None
    next_action_at: Optional[str] = None
    mapping_in_flight: bool = False
    counters: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "phase", Phase(self.phase))
        object.__setattr__(self, "journal", tuple(self.journal)[-JOURNAL_LIMIT:])
        object.__setattr__(self, "counters", dict(self.counters))

    def record(
        self,
        step: str,
        status: str,
        detail: Mapping[str, str] | None = None,
        *,
        at: str | None = None,
    ) -> State:
        """A copy with one journal entry appended (oldest dropped beyond the limit)."""
        entry = JournalEntry(step, status, at or iso(utc_now()), dict(detail or {}))
        return dataclasses.replace(self, journal=(*self.journal, entry))

    def with_error(self, kind: str, message: str, *, at: str | None = None) -> State:
        """A copy with ``last_error`` set."""
        return dataclasses.replace(self, last_error=ErrorInfo(kind, message, at or iso(utc_now())))

    def bump(self, counter: str, by: int = 1) -> State:
        """A copy with ``counters[counter]`` increased by ``by``."""
        counters = dict(self.counters)
        counters[counter] = counters.get(counter, 0) + by
        return dataclasses.replace(self, counters=counters)

    def to_dict(self) -> dict[str, object]:
        """The JSON shape stored in ``state.json`` under ``"state"``."""
        err = self.last_error
        return {
            "phase": self.phase.value,
            "current_generation": self.current_generation,
            "last_error": None
            if err is None
            else {"kind": err.kind, "message": err.message, "at": err.at},
            "next_action": self.next_action,
            "next_action_at": self.next_action_at,
            "mapping_in_flight": self.mapping_in_flight,
            "counters": dict(self.counters),
            "journal": [
                {"step": e.step, "status": e.status, "at": e.at, "detail": dict(e.detail)}
                for e in self.journal
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> State:
        """Rebuild a State; ``ValueError`` on any shape problem."""
        err = data.get("last_error")
        journal = data.get("journal", [])
        counters = data.get("counters", {})
        gen = data.get("current_generation")
        if not isinstance(journal, list) or not isinstance(counters, dict):
            raise ValueError("journal must be a list and counters an object")
        if gen is not None and (type(gen) is not int or gen < 1):
            raise ValueError("current_generation must be a positive integer or null")
        if not all(isinstance(k, str) and type(v) is int for k, v in counters.items()):
            raise ValueError("counters must map strings to integers")
        if type(data.get("mapping_in_flight", False)) is not bool:
            raise ValueError("mapping_in_flight must be a boolean")
        entries = []
        for item in journal:
            if not isinstance(item, dict):
                raise ValueError("journal entries must be objects")
            raw_detail = object_field(item, "detail")
            detail = {str(k): v for k, v in raw_detail.items() if isinstance(v, str)}
            if len(detail) != len(raw_detail):
                raise ValueError("journal detail values must be strings")
            entries.append(
                JournalEntry(str_field(item, "step"), str_field(item, "status"),
                             str_field(item, "at"), detail)
            )
        if err is not None and not isinstance(err, dict):
            raise ValueError("last_error must be an object or null")
        return cls(
            phase=Phase(str_field(data, "phase")),
            journal=tuple(entries),
            current_generation=gen,
            last_error=None
            if err is None
            else ErrorInfo(str_field(err, "kind"), str_field(err, "message"), str_field(err, "at")),
            next_action=optional_str_field(data, "next_action"),
            next_action_at=optional_str_field(data, "next_action_at"),
            mapping_in_flight=bool(data.get("mapping_in_flight", False)),
            counters=counters,
        )


@dataclass(frozen=True)
class StoredThing:
    """A thing as stored: ``key`` is its secret (kept in ``credentials.json``)."""

    id: str
    name: str
    key: str
    metadata: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Wherever a thing key is loaded (store, mapping, bootstrap config) it becomes a
        # StoredThing: from then on the log redaction filter masks it (it is also the
        # thing's MQTT password, and upstream Certs puts it in certificate CNs).
        register_secret(self.key)

    def __repr__(self) -> str:  # the key must never reach a log line
        return f"StoredThing(id={self.id!r}, name={self.name!r}, key=<redacted>)"


@dataclass(frozen=True)
class StoredChannel:
    """A channel as stored."""

    id: str
    name: str
    metadata: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationData:
    """Everything that goes into a new generation.

    ``certificates`` maps thing_id -> (cert_pem, key_pem); ``source`` is ``mapping``,
    ``bootstrap`` or ``renewal``.
    """

    things: tuple[StoredThing, ...]
    channels: tuple[StoredChannel, ...]
    gateway_thing_id: str
    bootstrap_content: str
    source: str
    external_id: str
    certificates: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    ca_pem: Optional[str] = None

    def __repr__(self) -> str:
        return (
            f"GenerationData(gateway_thing_id={self.gateway_thing_id!r}, "
            f"things={len(self.things)}, "
            f"channels={len(self.channels)}, certificates={sorted(self.certificates)}, "
            f"source={self.source!r})"
        )


@dataclass(frozen=True)
class Generation:
    """A verified generation read from disk. Paths point into its real directory.

    ``fallback_from`` is the number the ``current`` link named when it was damaged and
    this older generation was returned instead (``None`` normally); ``fallback_reason`` why.
    """

    number: int
    path: Path
    things: tuple[StoredThing, ...]
    channels: tuple[StoredChannel, ...]
    gateway_thing_id: str
    bootstrap_content: str
    source: str
    external_id: str
    created: str
    certificates: tuple[str, ...]
    has_ca: bool
    fallback_from: Optional[int] = None
    fallback_reason: Optional[str] = None
    cert_facts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """What each certificate file says (``{"<id>.crt": {"subject", "issuer", "serial",
    "not_before", "not_after"}}``), recorded when it was written; empty for older ones."""

    def __repr__(self) -> str:
        return (
            f"Generation(number={self.number}, path={str(self.path)!r}, things={len(self.things)}, "
            f"source={self.source!r}, fallback_from={self.fallback_from!r})"
        )

    @property
    def gateway_thing(self) -> StoredThing:
        """The gateway (bootstrap) thing, with its key."""
        return next(t for t in self.things if t.id == self.gateway_thing_id)

    @property
    def is_fallback(self) -> bool:
        """True when the ``current`` link was damaged and this is an older generation."""
        return self.fallback_from is not None

    def cert_path(self, thing_id: str) -> Path | None:
        """The client certificate of ``thing_id``, or ``None`` if it has none."""
        return self.path / f"{thing_id}.crt" if thing_id in self.certificates else None

    def key_path(self, thing_id: str) -> Path | None:
        """The private key of ``thing_id``'s certificate, or ``None``."""
        return self.path / f"{thing_id}.key" if thing_id in self.certificates else None

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate, or ``None`` if the platform gave none."""
        return self.path / "ca.crt" if self.has_ca else None

    def read_certificate(self, thing_id: str) -> tuple[str, str] | None:
        """(cert_pem, key_pem) of ``thing_id``, or ``None``; StoreError if unreadable."""
        cert, key = self.cert_path(thing_id), self.key_path(thing_id)
        if cert is None or key is None:
            return None
        try:
            return cert.read_text("utf-8"), key.read_text("utf-8")
        except OSError as exc:
            raise fileio.os_error(self.path, "read the certificate", exc) from exc
        except UnicodeDecodeError:
            raise StoreError(
                f"{self.path}: certificate of {thing_id} is not text; enroll again"
            ) from None


def read_file(path: Path) -> bytes:
    """File bytes; FileNotFoundError as is, permission -> StoreError, other I/O -> ValueError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except PermissionError as exc:
        raise fileio.os_error(path, "read", exc) from exc
    except OSError as exc:
        raise ValueError(f"{path.name}: unreadable: {exc.strerror or exc}") from None


def _sha256_constructor() -> Callable[[bytes], Any]:
    """CPython's own SHA-256 (``_sha2``, ``_sha256`` before 3.12), else hashlib's.

    ``hashlib`` maps OpenSSL's libcrypto (about 3.5 MB of RSS) into the process; the lean
    daemon verifies checksums too, and needs nothing of OpenSSL for it. These are
    integrity checksums of our own files, not MACs: no secret takes part, so comparing
    them takes no constant-time compare either.
    """
    for name in ("_sha2",) if sys.version_info >= (3, 12) else ("_sha256",):
        try:
            constructor = getattr(importlib.import_module(name), "sha256", None)
        except ImportError:
            continue
        if callable(constructor):
            return constructor  # type: ignore[no-any-return]
    import hashlib

    return hashlib.sha256


_SHA256 = _sha256_constructor()


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in lower-case hex (see :func:`_sha256_constructor`)."""
    return str(_SHA256(data).hexdigest())


def _canonical(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def seal(body: Mapping[str, object]) -> bytes:
    """Pretty JSON of ``body`` plus ``"sha256"`` of its canonical form."""
    doc = dict(body, sha256=sha256_hex(_canonical(body)))
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def unseal(raw: bytes) -> dict[str, object]:
    """The body of a sealed document; ``ValueError`` if it is not one or its checksum is wrong."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    digest = doc.pop("sha256", None)
    if not isinstance(digest, str):
        raise ValueError("no sha256 checksum")
    if digest != sha256_hex(_canonical(doc)):
        raise ValueError("sha256 checksum mismatch")
    return doc


def parse_state(raw: bytes) -> State:
    doc = unseal(raw)
    if doc.get("version") != STATE_VERSION:
        raise ValueError(f"unsupported state version {doc.get('version')!r}")
    body = doc.get("state")
    if not isinstance(body, dict):
        raise ValueError("no state object")
    return State.from_dict(body)


def render_generation(data: GenerationData, now: str) -> dict[str, tuple[bytes, int]]:
    """File name -> (content, mode) of a generation; StoreError if ``data`` is inconsistent."""
    ids = [t.id for t in data.things]
    bad = [i for i in ids if not _THING_ID_RE.match(i) or i == "ca"]
    problems = [f"thing id {i!r} is not usable as a file name" for i in bad]
    if len(set(ids)) != len(ids):
        problems.append("duplicate thing ids")
    if data.gateway_thing_id not in ids:
        problems.append(f"gateway thing {data.gateway_thing_id!r} is not among the things")
    problems += [f"certificate for unknown thing {i!r}" for i in data.certificates if i not in ids]
    if data.source not in _SOURCES:
        problems.append(f"source {data.source!r}: expected one of {', '.join(_SOURCES)}")
    if problems:
        raise StoreError("cannot store generation: " + "; ".join(problems))

    def js(obj: object) -> bytes:
        try:
            return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(
                "utf-8"
            )
        except (TypeError, ValueError) as exc:
            raise StoreError(f"cannot store generation: metadata is not JSON ({exc})") from None

    secret, public = fileio.SECRET_MODE, fileio.PUBLIC_MODE
    files = {
        "things.json": (
            js([{"id": t.id, "name": t.name, "metadata": dict(t.metadata)} for t in data.things]),
            secret,
        ),
        "channels.json": (
            js([{"id": c.id, "name": c.name, "metadata": dict(c.metadata)} for c in data.channels]),
            secret,
        ),
        "credentials.json": (js({"things": {t.id: t.key for t in data.things}}), secret),
        "bootstrap.json": (
            js(
                {
                    "content": data.bootstrap_content,
                    "gateway_thing_id": data.gateway_thing_id,
                    "external_id": data.external_id,
                    "source": data.source,
                    "created": now,
                }
            ),
            secret,
        ),
    }
    for thing_id, (cert_pem, key_pem) in sorted(data.certificates.items()):
        files[f"{thing_id}.crt"] = (cert_pem.encode("utf-8"), public)
        files[f"{thing_id}.key"] = (key_pem.encode("utf-8"), secret)
    if data.ca_pem is not None:
        files["ca.crt"] = (data.ca_pem.encode("utf-8"), public)
    return files


def json_records(
    blobs: Mapping[str, bytes], name: str, *, single: bool = False
) -> list[dict[str, object]]:
    """The objects in JSON file ``name``: a list of objects, or one object when ``single``."""
    try:
        doc = json.loads(blobs[name].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name}: not valid JSON ({exc})") from None
    items = [doc] if single else doc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"{name}: expected {'an object' if single else 'a list of objects'}")
    return items


def str_field(doc: Mapping[str, object], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string")
    return value


def optional_str_field(doc: Mapping[str, object], key: str) -> str | None:
    value = doc.get(key)
    return None if value is None else str_field(doc, key)


def object_field(doc: Mapping[str, object], key: str) -> dict[str, object]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected an object")
    return value


_FACT_KEYS = ("subject", "issuer", "serial", "not_before", "not_after")


def certificate_facts(manifest: Mapping[str, object],
                      blobs: Mapping[str, bytes]) -> dict[str, Mapping[str, str]]:  # fmt: skip
    """The recorded facts of the manifest's certificates that are there and well formed."""
    recorded = manifest.get("certificates")
    if not isinstance(recorded, dict):
        return {}
    facts: dict[str, Mapping[str, str]] = {}
    for name, entry in recorded.items():
        if (name in blobs and isinstance(entry, dict)
                and all(isinstance(entry.get(k), str) for k in _FACT_KEYS)):  # fmt: skip
            facts[name] = {k: entry[k] for k in _FACT_KEYS}
    return facts


def generation_number(name: str) -> int | None:
    return int(name) if _GEN_NAME_RE.match(name) else None


def link_number(target: str) -> int | None:
    parts = target.rstrip("/").split("/")
    return generation_number(parts[1]) if len(parts) == 2 and parts[0] == "generations" else None
