"""The client certificates of a stored generation: what they say, and when to renew them.

One reader for everyone who looks at a generation's certificates -- the status use case
(which shows an unreadable certificate as such), enrollment and renewal (which stop on
one) -- and the schedule that follows from them (:func:`schedule_for`, per
:mod:`edge_provision.agent.renew.policy`).

What a certificate says (:class:`CertFacts`: subject, issuer, serial, validity) is recorded
in the generation's manifest when the generation is written (:func:`describe`, which the
composition root hands to the store), so that reading it back needs no crypto library:
``status`` and the no-op ``enroll`` never import ``cryptography``. Generations written
before that, or a certificate the recorded facts do not cover, are parsed with
:mod:`edge_provision.crypto.pki` (imported only then).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Optional

from edge_provision.clock import iso, parse_iso
from edge_provision.errors import CertificateError

if TYPE_CHECKING:
    from edge_provision.agent.renew.policy import NextAction
    from edge_provision.agent.store import Generation

__all__ = ["CertFacts", "CertificateRead", "certificate_infos", "describe", "read_ca",
           "read_certificates", "schedule_for"]  # fmt: skip


@dataclass(frozen=True)
class CertFacts:
    """What a certificate says about itself (serial lower hex, times aware UTC)."""

    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime

    def to_record(self) -> dict[str, str]:
        """The form recorded in a generation's manifest."""
        return {"subject": self.subject, "issuer": self.issuer, "serial": self.serial,
                "not_before": iso(self.not_before), "not_after": iso(self.not_after)}

    @classmethod
    def from_record(cls, record: Mapping[str, str]) -> CertFacts | None:
        """The facts of a manifest record (None when its times are unreadable)."""
        not_before, not_after = parse_iso(record["not_before"]), parse_iso(record["not_after"])
        if not_before is None or not_after is None:
            return None
        return cls(record["subject"], record["issuer"], record["serial"], not_before, not_after)


def parse(pem: str | bytes) -> CertFacts:
    """The facts of a PEM certificate (loads ``cryptography``); CertificateError if bad."""
    from edge_provision.crypto import pki

    info = pki.parse_certificate(pem)
    return CertFacts(info.subject, info.issuer, info.serial, info.not_before, info.not_after)


def describe(pem: bytes) -> Mapping[str, str]:
    """The manifest record of a PEM certificate (see the module docstring)."""
    return parse(pem).to_record()


@dataclass(frozen=True)
class CertificateRead:
    """One stored certificate: what it says, or why it cannot be read."""

    thing_id: str
    info: Optional[CertFacts]
    error: Optional[str] = None


def _facts(generation: Generation, name: str, pem: str | None) -> CertFacts:
    """Recorded facts of file ``name``, else parsed from ``pem`` (CertificateError if bad)."""
    record = generation.cert_facts.get(name)
    recorded = CertFacts.from_record(record) if record is not None else None
    if recorded is not None:
        return recorded
    if pem is None:
        path = generation.path / name
        try:
            pem = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CertificateError(f"{path}: unreadable: {exc}") from exc
    return parse(pem)


def read_certificates(generation: Generation) -> Iterator[CertificateRead]:
    """Every certificate of ``generation`` (a missing file is left out; a bad one says so)."""
    for thing_id in generation.certificates:
        name = f"{thing_id}.crt"
        pem = None
        if name not in generation.cert_facts:
            found = generation.read_certificate(thing_id)
            if found is None:
                continue
            pem = found[0]
        try:
            yield CertificateRead(thing_id, _facts(generation, name, pem))
        except CertificateError as exc:
            yield CertificateRead(thing_id, None, str(exc))


def read_ca(generation: Generation) -> CertFacts | None:
    """The facts of the generation's CA certificate (None: it has none); CertificateError."""
    if not generation.has_ca:
        return None
    return _facts(generation, "ca.crt", None)


def certificate_infos(generation: Generation) -> dict[str, CertFacts]:
    """``{thing_id: CertFacts}`` of ``generation``; raises CertificateError for a bad one."""
    out: dict[str, CertFacts] = {}
    for read in read_certificates(generation):
        if read.info is None:
            raise CertificateError(f"{generation.path}: certificate of thing {read.thing_id}: "
                                   f"{read.error}")  # fmt: skip
        out[read.thing_id] = read.info
    return out


def schedule_for(generation: Generation, renew_before_s: float | None,
                 now: datetime) -> NextAction:  # fmt: skip
    """What the gateway does next with the certificates of ``generation``."""
    from edge_provision.agent.renew.policy import RenewalPolicy, next_action

    infos = certificate_infos(generation).values()
    return next_action(((i.serial, i.not_before, i.not_after) for i in infos),
                       RenewalPolicy(renew_before_s=renew_before_s), now)  # fmt: skip
