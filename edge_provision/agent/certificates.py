"""The client certificates of a stored generation: what they say, and when to renew them.

One reader for everyone who looks at a generation's certificates -- the status use case
(which shows an unreadable certificate as such), enrollment and renewal (which stop on
one) -- and the schedule that follows from them (:func:`schedule_for`, per
:mod:`edge_provision.agent.renew.policy`). ``cryptography`` is imported only when a
certificate is actually read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Optional

from edge_provision.agent.renew.policy import NextAction, RenewalPolicy, next_action
from edge_provision.errors import CertificateError

if TYPE_CHECKING:
    from edge_provision.agent.store import Generation
    from edge_provision.crypto.pki import CertInfo

__all__ = ["CertificateRead", "certificate_infos", "read_certificates", "schedule_for"]


@dataclass(frozen=True)
class CertificateRead:
    """One stored certificate: what it says, or why it cannot be read."""

    thing_id: str
    info: Optional[CertInfo]
    error: Optional[str] = None


def read_certificates(generation: Generation) -> Iterator[CertificateRead]:
    """Every certificate of ``generation`` (a missing file is left out; a bad one says so)."""
    from edge_provision.crypto import pki

    for thing_id in generation.certificates:
        pem = generation.read_certificate(thing_id)
        if pem is None:
            continue
        try:
            yield CertificateRead(thing_id, pki.parse_certificate(pem[0]))
        except CertificateError as exc:
            yield CertificateRead(thing_id, None, str(exc))


def certificate_infos(generation: Generation) -> dict[str, CertInfo]:
    """``{thing_id: CertInfo}`` of ``generation``; raises CertificateError for a bad one."""
    out: dict[str, CertInfo] = {}
    for read in read_certificates(generation):
        if read.info is None:
            raise CertificateError(f"{generation.path}: certificate of thing {read.thing_id}: "
                                   f"{read.error}")  # fmt: skip
        out[read.thing_id] = read.info
    return out


def schedule_for(generation: Generation, renew_before_s: float | None,
                 now: datetime) -> NextAction:  # fmt: skip
    """What the gateway does next with the certificates of ``generation``."""
    infos = certificate_infos(generation).values()
    return next_action(((i.serial, i.not_before, i.not_after) for i in infos),
                       RenewalPolicy(renew_before_s=renew_before_s), now)  # fmt: skip
