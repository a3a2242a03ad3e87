"""Certificate renewal, credential checks and self-repair (``edge-provision renew``).

One run, under the store lock:

* **renew** (certificates due per :mod:`edge_provision.agent.renew.policy`, or ``force``): a new key
  on the gateway and a CSR to the lab server (``POST /certs/csr``); against an upstream
  Mainflux Certs service without a CSR path, ``POST /certs`` (server-made key). The new
  certificate must chain to the CA this gateway already trusts (the current generation's
  ``ca.crt``; the server's CA only when none is stored) and match its key. It goes into a
  NEW generation (the other files copied from the current one), which is checked over
  MQTT when configured and only then becomes ``current``. Hand-off and prune follow.
* **check** (``State.next_action == "check"``, no certificates, or not yet due): the
  current credentials are checked over MQTT (and, on the check path, the bootstrap
  config is fetched again and compared).
* **reprovision**: when the platform refuses our credentials (MQTT auth refused, TLS
  client certificate rejected e.g. revoked, CSR signing refused), the bootstrap config is
  fetched again: gone (404) or a different thing id/key -> enrollment again
  (:func:`edge_provision.agent.enroll.enroll` with ``force``); the same thing with
  certificates -> new certificates. Every repair is journalled and visible in ``status``.

On failure the previous generation stays current; ``State.last_error``, the journal and
``next_action_at`` (capped exponential backoff with full jitter; ``permanent_retry_s`` for
errors a human must fix) record it, and the error is raised (non-zero exit) with
``exc.step`` set to the part that failed (``renew``, ``check`` or ``reprovision``; the
enrollment's own step when a reprovisioning enrollment failed).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

from edge_provision.agent.backoff import backoff_delay_s
from edge_provision.agent.certificates import CertFacts, certificate_infos, schedule_for
from edge_provision.agent.enroll import EnrollClients, Verifier, enroll
from edge_provision.agent.handoff import hand_off
from edge_provision.agent.identity import identity_for, mismatch_error
from edge_provision.agent.renew.policy import RenewalPolicy, renewal_time
from edge_provision.agent.store import Generation, GenerationData, Phase, State, Store
from edge_provision.clock import iso, later, parse_iso
from edge_provision.crypto import pki
from edge_provision.errors import (
    CertificateError,
    ConfigError,
    EdgeProvisionError,
    MqttAuthError,
    StoreError,
    TransientError,
    Unauthorized,
)
from edge_provision.logs import register_secret
from edge_provision.settings import AgentSettings

__all__ = ["RenewResult", "renew"]

logger = logging.getLogger(__name__)

_DUE_TOLERANCE_S = 1.0  # next_action_at is stored with whole seconds
_ATTEMPT = "renew_attempt"


@dataclass(frozen=True)
class RenewResult:
    """What one ``renew`` run did (the ``--json`` document, without secrets)."""

    ok: bool
    renewed: bool
    generation: Optional[int]
    serial: Optional[str]
    not_after: Optional[str]
    next_renewal_at: Optional[str]
    reason: str
    reprovisioned: bool = False
    next_action: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        """``{ok, renewed, generation, serial, not_after, next_renewal_at, reason, ...}``."""
        return dataclasses.asdict(self)


@dataclass
class _Run:
    settings: AgentSettings
    store: Store
    clients: EnrollClients
    verifier: Optional[Verifier]
    clock: Callable[[], datetime]
    rng: random.Random
    step: str = "renew"

    def update(self, change: Callable[[State], State]) -> State:
        return self.store.update_state(change)

    def journal(self, status: str, detail: Mapping[str, str] | None = None) -> None:
        at = iso(self.clock())
        self.update(lambda s: s.record(self.step, status, detail, at=at))


def _schedule(generation: Generation, settings: AgentSettings, now: datetime
              ) -> tuple[str, str, Optional[str]]:  # fmt: skip
    """(next_action, next_action_at, next renewal time or None) for ``generation``."""
    planned = schedule_for(generation, settings.renew_before_s, now)
    renewal = iso(planned.renewal_at) if planned.renewal_at is not None else None
    return planned.action, iso(planned.at), renewal


# --------------------------------------------------------------------------- entry points


def renew(
    settings: AgentSettings,
    store: Store,
    clients: EnrollClients,
    *,
    verifier: Verifier | None = None,
    force: bool = False,
    clock: Callable[[], datetime] | None = None,
    rng: random.Random | None = None,
) -> RenewResult:
    """Renew, check or repair this gateway's credentials (see the module docstring)."""
    run = _Run(settings, store, clients, verifier,
               clock or (lambda: datetime.now(timezone.utc)), rng or random.Random())  # fmt: skip
    with store.lock(blocking=False):
        store.cleanup_temp()
        current = store.current_generation()
        lost = None if current is not None else (store.linked_generation()
                                                 or store.load_state().current_generation)
        if current is None and lost is None:
            raise StoreError(
                f"{store.state_dir}: this gateway has no current credentials; run "
                "`edge-provision enroll` first"
            )
        try:
            if current is None:
                return _repair_damaged(run, lost)
            return _renew(run, current, force)
        except EdgeProvisionError as exc:
            _record_failure(run, exc)
            if exc.step is None:  # an enrollment inside (reprovision) keeps its own step
                exc.step = run.step
            raise


def _renew(run: _Run, current: Generation, force: bool) -> RenewResult:
    now = run.clock()
    state = run.store.load_state()
    infos = certificate_infos(current)
    policy = RenewalPolicy(renew_before_s=run.settings.renew_before_s)
    scheduled = parse_iso(state.next_action_at) if state.next_action == "renew" else None
    due = force or (scheduled is not None and scheduled <= now) or any(
        later(now, _DUE_TOLERANCE_S) >= renewal_time(i.not_before, i.not_after, policy,
                                             random.Random(i.serial))
        for i in infos.values()
    )
    if infos and due:
        run.step = "renew"
        reason = "forced" if force else "due"
        try:
            return _replace_certificates(run, current, reason)
        except Unauthorized as exc:
            logger.warning("certificate service refused our key error=%s; reprovisioning", exc)
            return _reprovision(run, current, f"certificate service refused our key: {exc}")
    run.step = "check"
    checking = state.next_action == "check" or not infos
    try:
        if checking:
            changed = _bootstrap_changed(run, current)
            if changed is not None:
                return _reprovision(run, current, changed, changed=changed)
        if run.verifier is not None:
            run.verifier(current)
    except (MqttAuthError, Unauthorized) as exc:
        logger.warning("credentials refused generation=%s error=%s; reprovisioning",
                       current.number, exc)  # fmt: skip
        return _reprovision(run, current, f"credentials refused: {exc}")
    action, action_at, renewal = _schedule(current, run.settings, now)
    verified = "credentials verified over MQTT" if run.verifier is not None else "nothing checked"
    reason = (f"checked: {verified}" if checking else f"not due until {renewal}; {verified}")
    state = run.store.load_state()
    settled = dataclasses.replace(state, phase=Phase.PROVISIONED, last_error=None,
                                  next_action=action, next_action_at=action_at)  # fmt: skip
    if settled != state:  # a check that changes nothing writes nothing (a full disk, flash)
        run.store.save_state(settled.record("check", "done", {"result": reason[:200]},
                                            at=iso(now)))  # fmt: skip
    gateway = infos.get(current.gateway_thing_id)
    return RenewResult(ok=True, renewed=False, generation=current.number,
                       serial=gateway.serial if gateway else None,
                       not_after=iso(gateway.not_after) if gateway else None,
                       next_renewal_at=renewal, reason=reason, next_action=action)  # fmt: skip


# --------------------------------------------------------------------------- repair


def _bootstrap_changed(run: _Run, current: Generation) -> str | None:
    """Why the platform's bootstrap config differs from ``current`` (None if it does not).

    An identity that is not the one ``current`` was enrolled with (``identity.json`` edited,
    another ``external_id`` set) is refused: looking it up would find nothing and
    reprovisioning would create a second set of things.
    """
    ident = identity_for(run.settings)
    if ident.external_id != current.external_id:
        raise mismatch_error(ident, current.number, current.external_id)
    config = run.clients.bootstrap.fetch(ident.external_id, ident.external_key,
                                         secure=run.settings.secure_bootstrap)  # fmt: skip
    if config is None:
        return "the platform no longer has our bootstrap config (404)"
    register_secret(config.thing_key)
    gateway = current.gateway_thing
    if config.thing_id != gateway.id or config.thing_key != gateway.key:
        return f"the platform now maps us to thing {config.thing_id} (was {gateway.id})"
    return None


def _repair_damaged(run: _Run, lost: int | None) -> RenewResult:
    """The current generation is damaged and no older one is valid: enroll again.

    The identity is kept, so the lookup finds the same bootstrap config and the same things
    come back in a new generation (never a second set of things).
    """
    run.step = "reprovision"
    why = f"generation {lost} is damaged and no older valid generation exists"
    logger.warning("current generation damaged number=%s; enrolling again", lost)
    run.journal("started", {"reason": why})
    return _enroll_again(run, f"repaired: {why}; enrolled again", force=False)


def _enroll_again(run: _Run, reason: str, *, force: bool) -> RenewResult:
    """Enroll inside this renew run (same lock, same identity); its result as a renewal's."""
    enrolled = enroll(run.settings, run.store, run.clients, verifier=run.verifier, force=force,
                      clock=run.clock)  # fmt: skip
    run.step = "reprovision"
    run.journal("done", {"result": "enrolled again", "generation": str(enrolled.generation)})
    run.update(lambda s: s.bump("reprovisions"))
    generation = run.store.load_generation(enrolled.generation)
    infos = certificate_infos(generation).get(generation.gateway_thing_id)
    _, _, renewal = _schedule(generation, run.settings, run.clock())
    return RenewResult(ok=True, renewed=bool(generation.certificates),
                       generation=generation.number, serial=infos.serial if infos else None,
                       not_after=iso(infos.not_after) if infos else None,
                       next_renewal_at=renewal, reason=reason, reprovisioned=True,
                       next_action=enrolled.next_action)  # fmt: skip


def _reprovision(run: _Run, current: Generation, why: str, *,
                 changed: str | None = None) -> RenewResult:  # fmt: skip
    """Recover from refused credentials: enroll again, or renew the certificates.

    ``changed`` is how the bootstrap config differs when the caller already fetched it.
    """
    run.step = "reprovision"
    run.journal("started", {"reason": why[:200]})
    if changed is None:
        changed = _bootstrap_changed(run, current)
    if changed is None and current.certificates:
        result = _replace_certificates(run, current, f"reprovision: {why}")
        run.step = "reprovision"
        run.journal("done", {"result": "new certificates", "generation": str(result.generation)})
        return dataclasses.replace(result, reprovisioned=True)
    if changed is None:
        raise MqttAuthError(
            f"{why}; the platform's bootstrap config is unchanged, so the thing key itself is "
            "refused by the broker. What to do: check the broker's auth (is the thing connected "
            "to its channels?) or have an operator re-create the bootstrap config"
        )
    logger.warning("reprovisioning reason=%s", changed)
    return _enroll_again(run, f"reprovisioned: {changed}", force=True)


# --------------------------------------------------------------------------- renewal


def _trusted_ca(current: Generation) -> str | None:
    if current.ca_path is None:
        return None
    try:
        return current.ca_path.read_text("utf-8")
    except OSError as exc:
        raise StoreError(f"{current.ca_path}: cannot read the trusted CA: {exc.strerror}") from exc


def _new_certificate(run: _Run, thing_id: str, thing_key: str, old: CertFacts,
                     csr: bool) -> tuple[str, str, str]:  # fmt: skip
    """(cert_pem, key_pem, ca_pem from the server) for ``thing_id``."""
    certs, settings = run.clients.certs, run.settings
    if certs is None:
        raise ConfigError("no certificate service configured; set server.certs_url")
    if csr:
        key = pki.generate_key(settings.key_type, settings.key_bits)
        signed = certs.sign_csr(thing_id, thing_key, pki.make_csr(key, thing_id))
        return signed.cert_pem, pki.key_to_pem(key), signed.ca_pem
    if not settings.token:
        raise ConfigError(
            "the certificate service has no CSR path (upstream Mainflux Certs) and needs a user "
            "token to issue certificates; set server.token (EDGE_PROVISION_TOKEN)"
        )
    ttl = max(1, int((old.not_after - old.not_before).total_seconds()))
    bits = settings.key_bits or (256 if settings.key_type == "ec" else 2048)
    issued = certs.issue(thing_id, settings.token, settings.key_type, bits, ttl)
    return issued.cert_pem, issued.key_pem, issued.ca_pem


def _check_new(thing_id: str, cert_pem: str, key_pem: str, trusted: str | None,
               server_ca: str) -> str | None:  # fmt: skip
    """Refuse a certificate that does not match its key or chain to the trusted CA."""
    if not pki.cert_matches_key(cert_pem, key_pem):
        raise CertificateError(
            f"the new certificate of thing {thing_id} does not match its private key; the "
            "certificate server is misbehaving; the previous certificate stays in use"
        )
    anchor = trusted or server_ca or None
    if anchor is None:
        logger.warning("certificate chain not checked thing_id=%s reason=no CA known", thing_id)
        return None
    try:
        pki.verify_chain(cert_pem, anchor)
    except CertificateError as exc:
        issuer = pki.parse_certificate(cert_pem).issuer
        raise CertificateError(
            f"the new certificate of thing {thing_id} (issuer {issuer!r}) does not chain to the "
            f"CA this gateway trusts: {exc}; the previous certificate stays in use. If the "
            "platform changed its CA on purpose, run `edge-provision enroll --force`"
        ) from exc
    return anchor


def _replace_certificates(run: _Run, current: Generation, reason: str) -> RenewResult:
    store, settings = run.store, run.settings
    run.update(lambda s: dataclasses.replace(s, phase=Phase.RENEWING))
    run.journal("started", {"reason": reason[:200], "generation": str(current.number)})
    infos = certificate_infos(current)
    trusted = _trusted_ca(current)
    certs = run.clients.certs
    csr = certs.supports_csr() if certs is not None else False
    keys = {t.id: t.key for t in current.things}
    new: dict[str, tuple[str, str]] = {}
    ca_pem = trusted
    for thing_id, old in infos.items():
        cert_pem, key_pem, server_ca = _new_certificate(run, thing_id, keys[thing_id], old, csr)
        ca_pem = _check_new(thing_id, cert_pem, key_pem, trusted, server_ca) or ca_pem
        new[thing_id] = (cert_pem, key_pem)
    data = GenerationData(
        things=current.things, channels=current.channels,
        gateway_thing_id=current.gateway_thing_id, bootstrap_content=current.bootstrap_content,
        source="renewal", external_id=current.external_id, certificates=new, ca_pem=ca_pem,
    )  # fmt: skip
    number = store.write_generation(data)
    generation = store.load_generation(number)
    if run.verifier is not None:
        run.verifier(generation)
    store.switch_current(number)
    now = run.clock()
    action, action_at, renewal = _schedule(generation, settings, now)
    gateway = certificate_infos(generation).get(generation.gateway_thing_id)
    serial = gateway.serial if gateway else None

    def done(s: State) -> State:
        counters = dict(s.bump("renewals").counters)
        counters[_ATTEMPT] = 0
        s = dataclasses.replace(s, phase=Phase.PROVISIONED, last_error=None, counters=counters,
                                next_action=action, next_action_at=action_at)  # fmt: skip
        return s.record("renew", "done", {"generation": str(number), "serial": serial or "",
                                          "last_renewal": iso(now)}, at=iso(now))  # fmt: skip

    run.update(done)
    removed = store.prune(settings.keep_generations)
    logger.info("certificates renewed generation=%s serial=%s pruned=%s", number, serial,
                ",".join(map(str, removed)) or "-")  # fmt: skip
    hand_off(settings, generation, current.external_id, store=store)
    return RenewResult(ok=True, renewed=True, generation=number, serial=serial,
                       not_after=iso(gateway.not_after) if gateway else None,
                       next_renewal_at=renewal, reason=reason, next_action=action)  # fmt: skip


# --------------------------------------------------------------------------- bookkeeping


def _record_failure(run: _Run, exc: EdgeProvisionError) -> None:
    now = run.clock()
    try:
        state = run.store.load_state()
        attempt = int(state.counters.get(_ATTEMPT, 0))
        if isinstance(exc, TransientError):
            delay = backoff_delay_s(attempt, run.settings.backoff_initial_s,
                                    run.settings.backoff_cap_s, run.rng)  # fmt: skip
            delay = max(delay, exc.retry_after_s or 0.0)
        else:
            delay = run.settings.permanent_retry_s
        has_current = run.store.current_generation() is not None
        step = run.step

        def change(s: State) -> State:
            s = s.bump(_ATTEMPT).bump(f"failures:{exc.kind}")
            s = s.record(step, "failed", {"error": exc.kind, "reason": exc.reason.value},
                         at=iso(now))
            s = s.with_error(exc.kind, f"{step}: {exc}", at=iso(now))
            return dataclasses.replace(
                s, phase=Phase.PROVISIONED if has_current else Phase.FAILED_PERMANENT,
                next_action=s.next_action if s.next_action == "enroll" else "renew",
                next_action_at=iso(later(now, delay)))  # fmt: skip

        run.update(change)
        logger.error("%s failed error=%s retry_in_s=%.1f", step, exc, delay)
    except EdgeProvisionError as store_exc:  # the original error matters more
        logger.error("cannot record the failure error=%s", store_exc)
