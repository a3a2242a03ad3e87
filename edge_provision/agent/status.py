"""The status use case: what this gateway is and what it will do next, as one typed value.

:func:`gateway_status` reads the store (state, current generation), the stored identity
and the settings, and returns a :class:`GatewayStatus`. Every view is rendered from it:
``edge-provision status`` (text and ``--json``: :meth:`GatewayStatus.to_dict`), the
things/channels/certificates an ``enroll`` prints (:func:`summarize`, the same
:class:`CredentialSummary`), and the agent's Prometheus textfile (:func:`metrics_text`).
No view ever holds a secret: thing keys, private keys and the external key are never
read into these values, and a certificate subject that contains a thing key (upstream
Mainflux Certs puts the thing key in the CN) shows ``<thing key>`` in its place.

Status always works, whatever is damaged, and says what is true: each :class:`Damage`
names the file and the fix (an unreadable or edited ``identity.json``, a damaged
generation, a key file readable by others); a store whose only generation is damaged is
in the state ``damaged`` with the next action ``enroll``. Reading never writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from edge_provision.agent.certificates import read_ca, read_certificates
from edge_provision.agent.identity import Identity, load_identity
from edge_provision.agent.permissions import find_loose
from edge_provision.agent.store import ErrorInfo, Generation, JournalEntry, Phase, Store
from edge_provision.clock import iso, parse_iso, utc_now
from edge_provision.errors import CertificateError, IdentityError
from edge_provision.settings import AgentSettings, describe

__all__ = [
    "CaSummary",
    "CertificateSummary",
    "ChannelSummary",
    "CredentialSummary",
    "Damage",
    "GatewayStatus",
    "GenerationSummary",
    "ThingSummary",
    "gateway_status",
    "metrics_text",
    "summarize",
]

JOURNAL_SHOWN = 20
"""How many journal entries ``status --verbose`` shows."""


@dataclass(frozen=True)
class ThingSummary:
    """A thing of the current generation (its key is not here)."""

    id: str
    name: str
    gateway: bool

    def to_dict(self) -> dict[str, object]:
        """``{id, name, gateway}``."""
        return {"id": self.id, "name": self.name, "gateway": self.gateway}


@dataclass(frozen=True)
class ChannelSummary:
    """A channel and its role (``metadata.type``: control, data, export or None)."""

    id: str
    name: str
    type: Optional[str]

    def to_dict(self) -> dict[str, object]:
        """``{id, name, type}``."""
        return {"id": self.id, "name": self.name, "type": self.type}


@dataclass(frozen=True)
class CertificateSummary:
    """A client certificate: subject, issuer, serial, validity; or why it is unreadable."""

    thing_id: str
    subject: str = ""
    issuer: str = ""
    serial: str = ""
    not_before: str = ""
    not_after: str = ""
    expires_in_s: int = 0
    expired: bool = False
    error: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        """The full row, or ``{thing_id, error}`` for an unreadable certificate."""
        if self.error is not None:
            return {"thing_id": self.thing_id, "error": self.error}
        return {"thing_id": self.thing_id, "subject": self.subject, "issuer": self.issuer,
                "serial": self.serial, "not_before": self.not_before,
                "not_after": self.not_after, "expires_in_s": self.expires_in_s,
                "expired": self.expired}  # fmt: skip


@dataclass(frozen=True)
class CaSummary:
    """The CA certificate stored with the generation."""

    subject: str = ""
    not_after: str = ""
    error: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        """``{subject, not_after}`` or ``{error}``."""
        if self.error is not None:
            return {"error": self.error}
        return {"subject": self.subject, "not_after": self.not_after}


@dataclass(frozen=True)
class CredentialSummary:
    """The things, channels and certificates of one generation, without a secret."""

    things: tuple[ThingSummary, ...] = ()
    channels: tuple[ChannelSummary, ...] = ()
    certificates: tuple[CertificateSummary, ...] = ()
    ca: Optional[CaSummary] = None
    expiry: Mapping[str, float] = field(default_factory=dict)  # thing id -> Unix time

    def to_dict(self) -> dict[str, object]:
        """``{things, channels, certificates, ca}`` (lists of rows; ca may be None)."""
        return {
            "things": [t.to_dict() for t in self.things],
            "channels": [c.to_dict() for c in self.channels],
            "certificates": [c.to_dict() for c in self.certificates],
            "ca": None if self.ca is None else self.ca.to_dict(),
        }


def summarize(generation: Generation, now: datetime) -> CredentialSummary:
    """The :class:`CredentialSummary` of ``generation`` (expiry counted from ``now``)."""
    keys = [t.key for t in generation.things]
    certificates: list[CertificateSummary] = []
    expiry: dict[str, float] = {}
    for read in read_certificates(generation):
        if read.info is None:
            certificates.append(CertificateSummary(read.thing_id,
                                                   error=_hide(read.error or "", keys)))
            continue
        info = read.info
        expiry[read.thing_id] = info.not_after.timestamp()
        certificates.append(CertificateSummary(
            read.thing_id, subject=_hide(info.subject, keys), issuer=_hide(info.issuer, keys),
            serial=info.serial, not_before=iso(info.not_before), not_after=iso(info.not_after),
            expires_in_s=int((info.not_after - now).total_seconds()),
            expired=info.not_after <= now))  # fmt: skip
    return CredentialSummary(
        things=tuple(ThingSummary(t.id, t.name, t.id == generation.gateway_thing_id)
                     for t in generation.things),
        channels=tuple(ChannelSummary(c.id, c.name, _type_of(c.metadata))
                       for c in generation.channels),
        certificates=tuple(certificates), ca=_ca_summary(generation, keys), expiry=expiry,
    )  # fmt: skip


def _hide(text: str, keys: list[str]) -> str:
    """``text`` with every thing key in it replaced (a CN may be a thing key)."""
    for key in sorted((k for k in keys if k), key=len, reverse=True):
        text = text.replace(key, "<thing key>")
    return text


def _type_of(metadata: Mapping[str, object]) -> str | None:
    value = metadata.get("type")
    return value if isinstance(value, str) else None


def _ca_summary(generation: Generation, keys: list[str]) -> CaSummary | None:
    try:
        info = read_ca(generation)
    except CertificateError as exc:
        return CaSummary(error=_hide(str(exc), keys))
    if info is None:
        return None
    return CaSummary(subject=_hide(info.subject, keys), not_after=iso(info.not_after))


@dataclass(frozen=True)
class Damage:
    """Something wrong in the state directory: what (``kind``), where and the fix (``message``).

    Kinds: ``identity-unreadable``, ``identity-mismatch``, ``generation-damaged``,
    ``file-mode``.
    """

    kind: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """``{kind, message}``."""
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class GenerationSummary:
    """Where the current generation came from (and whether it stands in for a damaged one)."""

    number: int
    created: str
    source: str
    path: str
    external_id: str
    fallback_from: Optional[int] = None
    fallback_reason: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        """Every field, as in ``status --json``."""
        return {"number": self.number, "created": self.created, "source": self.source,
                "path": self.path, "external_id": self.external_id,
                "fallback_from": self.fallback_from,
                "fallback_reason": self.fallback_reason}  # fmt: skip


@dataclass(frozen=True)
class GatewayStatus:
    """What this gateway is, holds and does next (no secrets)."""

    state_dir: Path
    phase: Phase
    external_id: Optional[str]
    generations: tuple[int, ...]
    generation: Optional[GenerationSummary]
    credentials: CredentialSummary
    last_error: Optional[ErrorInfo]
    next_action: Optional[str]
    next_action_at: Optional[str]
    mapping_in_flight: bool
    counters: Mapping[str, int]
    recovered_from: Optional[str]
    journal: tuple[JournalEntry, ...]
    settings: tuple[Mapping[str, object], ...] = ()
    damage: tuple[Damage, ...] = ()

    @property
    def current_generation(self) -> int | None:
        """The number of the generation in use (None: not provisioned)."""
        return self.generation.number if self.generation is not None else None

    @property
    def last_renewal_at(self) -> datetime | None:
        """When certificates were last renewed (from the journal), or None."""
        last = next((e.detail.get("last_renewal") for e in reversed(self.journal)
                     if e.step == "renew" and e.status == "done"), None)  # fmt: skip
        return parse_iso(last)

    def to_dict(self, *, verbose: bool = False) -> dict[str, object]:
        """The ``status --json`` document; ``verbose`` adds settings and the recent journal."""
        err = self.last_error
        doc: dict[str, object] = {
            "ok": True,
            "state_dir": str(self.state_dir),
            "state": self.phase.value,
            "external_id": self.external_id,
            "current_generation": self.current_generation,
            "generations": list(self.generations),
            "last_error": None if err is None else {"kind": err.kind, "message": err.message,
                                                    "at": err.at},
            "next_action": self.next_action,
            "next_action_at": self.next_action_at,
            "mapping_in_flight": self.mapping_in_flight,
            "counters": dict(self.counters),
            "recovered_from": self.recovered_from,
            "generation": None if self.generation is None else self.generation.to_dict(),
            "damage": [d.to_dict() for d in self.damage],
            **self.credentials.to_dict(),
        }  # fmt: skip
        if verbose:
            doc["settings"] = [dict(row) for row in self.settings]
            doc["journal"] = [{"step": e.step, "status": e.status, "at": e.at,
                               "detail": dict(e.detail)}
                              for e in self.journal[-JOURNAL_SHOWN:]]  # fmt: skip
        return doc


def gateway_status(settings: AgentSettings, store: Store, *,
                   now: datetime | None = None) -> GatewayStatus:  # fmt: skip
    """Read the store, the stored identity and ``settings`` into a :class:`GatewayStatus`.

    Never raises for damage in the state directory: it becomes a :class:`Damage`.
    """
    now = now or utc_now()
    state = store.load_state()
    current = store.current_generation()
    damage: list[Damage] = []
    ident: Identity | None = None
    try:
        ident = load_identity(settings.state_dir)
    except IdentityError as exc:
        damage.append(Damage("identity-unreadable", str(exc)))
    phase, next_action, next_action_at = state.phase, state.next_action, state.next_action_at
    generation = None
    credentials = CredentialSummary()
    if current is not None:
        generation = GenerationSummary(
            current.number, current.created, current.source, str(current.path),
            current.external_id, current.fallback_from, current.fallback_reason)
        credentials = summarize(current, now)
        if current.is_fallback:
            damage.append(Damage("generation-damaged", (
                f"the current link names a damaged generation ({current.fallback_reason}); "
                f"generation {current.number} is used instead; run edge-provision enroll to "
                "fetch fresh credentials")))
        in_use = settings.external_id or (ident.external_id if ident is not None else None)
        if in_use and in_use != current.external_id:
            damage.append(Damage("identity-mismatch", (
                f"{settings.state_dir / 'identity.json'}: external_id {in_use!r} is not "
                f"{current.external_id!r}, the id generation {current.number} was enrolled "
                "with; enroll refuses to go on without --force (it would provision a second "
                f"set of things and orphan the first); restore external_id "
                f"{current.external_id!r} to keep this gateway as it is")))
    else:
        lost = store.linked_generation() or state.current_generation
        if lost is not None:
            why = "; ".join(store.verify_generation(lost)) or "not found"
            damage.append(Damage("generation-damaged", (
                f"{store.generations_dir / str(lost)}: generation {lost} is damaged ({why}) and "
                "no older valid generation exists; run edge-provision enroll: it fetches the "
                "same credentials again (the identity is kept)")))
            phase, next_action, next_action_at = Phase.DAMAGED, "enroll", None
    damage += [Damage("file-mode", f"{loose}: readable by others; enroll or renew restores it")
               for loose in find_loose(store)]
    return GatewayStatus(
        state_dir=settings.state_dir, phase=phase,
        external_id=ident.external_id if ident is not None else None,
        generations=tuple(store.list_generations()), generation=generation,
        credentials=credentials, last_error=state.last_error,
        next_action=next_action, next_action_at=next_action_at,
        mapping_in_flight=state.mapping_in_flight, counters=dict(state.counters),
        recovered_from=store.recovered_from, journal=tuple(state.journal),
        settings=tuple(describe(settings)), damage=tuple(damage),
    )  # fmt: skip


def metrics_text(status: GatewayStatus) -> str:
    """The Prometheus textfile view of ``status``."""
    last = status.last_renewal_at
    failures = {k.split(":", 1)[1]: v for k, v in status.counters.items()
                if k.startswith("failures:")}  # fmt: skip
    from edge_provision.metrics import agent_metrics, render

    return render(agent_metrics(
        cert_expiry=status.credentials.expiry,
        last_renewal_ts=last.timestamp() if last is not None else None,
        renewals_total=int(status.counters.get("renewals", 0)), failures_by_class=failures,
        generation=status.current_generation))  # fmt: skip
