"""Enrollment as resumable steps (DESIGN.md "Enrollment, as resumable steps").

identity -> lookup (bootstrap config for our external_id) -> mapping (``POST /mapping``,
only when the lookup found nothing) -> bootstrap (fetch the config the mapping made) ->
certificates (CSR with a key generated here when the server offers it; else the
platform's) -> store (new generation) -> verify (optional) -> switch (``current``) ->
prune -> handoff.

Every step is journalled in the store *before* its network call, under the store lock
held for the whole run. ``State.mapping_in_flight`` is set before ``POST /mapping`` and
cleared once its outcome is recorded: a run that finds it set (the previous run died
with the answer unknown) always looks up first and never maps while a lookup answers.
Re-running at any point therefore converges on one set of things on the platform.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Callable, Optional

from edge_provision.agent.enroll._credentials import (
    CredentialSet,
    cert_summary,
    from_bootstrap,
    from_mapping,
    issue_certificates,
    next_action_for,
)
from edge_provision.agent.handoff import HandoffReport, hand_off
from edge_provision.agent.identity import Identity, InterfaceInfo, MacFormat, resolve_identity
from edge_provision.agent.mqtt import Verifier
from edge_provision.agent.store import Generation, GenerationData, Phase, State, Store
from edge_provision.clock import iso
from edge_provision.errors import (
    AlreadyProvisioned,
    EdgeProvisionError,
    Rejected,
    TransientError,
    Unauthorized,
)
from edge_provision.platform import (
    BootstrapClient,
    BootstrapConfig,
    CertsClient,
    MappingResult,
    ProvisionClient,
)
from edge_provision.settings import AgentSettings

__all__ = [
    "EnrollClients",
    "EnrollResult",
    "Step",
    "StepEvent",
    "StepStatus",
    "Verifier",
    "enroll",
]

logger = logging.getLogger(__name__)



class Step(str, Enum):
    """The steps of one enrollment, in order."""

    IDENTITY = "identity"
    LOOKUP = "lookup"
    MAPPING = "mapping"
    BOOTSTRAP = "bootstrap"
    CERTIFICATES = "certificates"
    STORE = "store"
    VERIFY = "verify"
    SWITCH = "switch"
    PRUNE = "prune"
    HANDOFF = "handoff"


class StepStatus(str, Enum):
    """How a step went."""

    STARTED = "started"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class StepEvent:
    """One progress report: which step, how it went, a human message (with the URL)."""

    step: str
    status: str
    message: str
    url: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` shape."""
        return {"step": self.step, "status": self.status, "message": self.message,
                "url": self.url}  # fmt: skip


@dataclass(frozen=True)
class EnrollClients:
    """The platform clients one enrollment uses, with their base URLs (for messages)."""

    provision: ProvisionClient
    bootstrap: BootstrapClient
    certs: Optional[CertsClient]
    provision_url: str
    bootstrap_url: str
    certs_url: Optional[str] = None


@dataclass(frozen=True)
class EnrollResult:
    """What an enrollment did (``changed`` is False for the "already provisioned" no-op)."""

    external_id: str
    generation: int
    changed: bool
    created_mapping: bool
    thing_id: str
    things: tuple[Mapping[str, object], ...]
    channels: tuple[Mapping[str, object], ...]
    certificates: tuple[Mapping[str, object], ...]
    steps: tuple[StepEvent, ...]
    handoff: Optional[HandoffReport] = None
    next_action: Optional[str] = None
    next_action_at: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        """The ``enroll --json`` document (no secrets)."""
        return {
            "ok": True,
            "changed": self.changed,
            "external_id": self.external_id,
            "generation": self.generation,
            "created_mapping": self.created_mapping,
            "thing_id": self.thing_id,
            "things": [dict(t) for t in self.things],
            "channels": [dict(c) for c in self.channels],
            "certificates": [dict(c) for c in self.certificates],
            "steps": [s.to_dict() for s in self.steps],
            "handoff": None if self.handoff is None else self.handoff.to_dict(),
            "next_action": self.next_action,
            "next_action_at": self.next_action_at,
        }


@dataclass
class _Run:
    """One enrollment: the journal, the progress callback and the collected events."""

    settings: AgentSettings
    store: Store
    clients: EnrollClients
    progress: Optional[Callable[[StepEvent], None]]
    clock: Callable[[], datetime]
    events: list[StepEvent] = field(default_factory=list)
    step: str = Step.IDENTITY.value

    def emit(self, step: Step, status: StepStatus, message: str, url: str | None = None,
             detail: Mapping[str, str] | None = None) -> None:  # fmt: skip
        """Journal (started/done/failed) the step, then tell the progress callback."""
        self.step = step.value
        if status is not StepStatus.SKIPPED:
            journal = dict(detail or {})
            if url:
                journal["url"] = url
            self.update(lambda s: s.record(step.value, status.value, journal,
                                           at=iso(self.clock())))  # fmt: skip
        self.announce(StepEvent(step.value, status.value, message, url))

    def announce(self, event: StepEvent) -> None:
        """Collect ``event`` and pass it to the progress callback."""
        self.step = event.step
        self.events.append(event)
        if self.progress is not None:
            self.progress(event)

    def update(self, change: Callable[[State], State]) -> State:
        """Load, change and save the state (the run holds the store lock)."""
        state = change(self.store.load_state())
        self.store.save_state(state)
        return state


def enroll(
    settings: AgentSettings,
    store: Store,
    clients: EnrollClients,
    *,
    verifier: Verifier | None = None,
    force: bool = False,
    progress: Callable[[StepEvent], None] | None = None,
    interfaces: Sequence[InterfaceInfo] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> EnrollResult:
    """Enroll this gateway (see the module docstring); resumable and idempotent.

    With a valid current generation for the same external_id this is a no-op unless
    ``force`` (then the bootstrap config is fetched again and certificates re-issued into
    a new generation; ``/mapping`` is only called when no bootstrap config exists).
    Raises the :mod:`edge_provision.errors` class of the failure, its message naming the
    step; the failure is recorded in ``State.last_error`` first.
    """
    run = _Run(settings, store, clients, progress, clock or (lambda: datetime.now(timezone.utc)))
    with store.lock(blocking=False):
        store.cleanup_temp()
        try:
            return _enroll(run, verifier, force, interfaces)
        except EdgeProvisionError as exc:
            _record_failure(run, exc)
            raise _with_step(exc, run.step) from exc


def _enroll(run: _Run, verifier: Verifier | None, force: bool,
            interfaces: Sequence[InterfaceInfo] | None) -> EnrollResult:  # fmt: skip
    settings, store, clients = run.settings, run.store, run.clients
    run.emit(Step.IDENTITY, StepStatus.STARTED, "working out external_id and external_key")
    ident = _identity(settings, interfaces)
    run.emit(Step.IDENTITY, StepStatus.DONE, f"external_id {ident.external_id} "
             f"({ident.external_id_source})", detail={"external_id": ident.external_id})
    current = store.current_generation()
    if (current is not None and not force and not current.is_fallback
            and current.external_id == ident.external_id):
        return _already_provisioned(run, current, ident)

    before = run.update(lambda s: dataclasses.replace(s.bump("enroll_runs"),
                                                      phase=Phase.ENROLLING))  # fmt: skip
    if before.mapping_in_flight:
        logger.warning("previous mapping outcome unknown external_id=%s; looking up first",
                       ident.external_id)  # fmt: skip
    lookup_url = f"{clients.bootstrap_url}/things/bootstrap/" + (
        "secure/" if settings.secure_bootstrap else "") + ident.external_id
    run.emit(Step.LOOKUP, StepStatus.STARTED, f"GET {lookup_url}", lookup_url)
    config = _fetch(run, ident)
    created = False
    creds: CredentialSet
    if config is not None:
        run.emit(Step.LOOKUP, StepStatus.DONE,
                 f"found the bootstrap config of thing {config.thing_id}", lookup_url,
                 {"found": "yes", "thing_id": config.thing_id})  # fmt: skip
        run.emit(Step.MAPPING, StepStatus.SKIPPED, "not needed: the platform has our config")
        run.emit(Step.BOOTSTRAP, StepStatus.SKIPPED, "already fetched by the lookup")
        creds = from_bootstrap(config, ident.external_id)
    else:
        run.emit(Step.LOOKUP, StepStatus.DONE, "no bootstrap config yet", lookup_url,
                 {"found": "no"})  # fmt: skip
        mapping_url = f"{clients.provision_url}/mapping"
        run.update(lambda s: dataclasses.replace(s, mapping_in_flight=True))
        run.emit(Step.MAPPING, StepStatus.STARTED, f"POST {mapping_url}", mapping_url)
        result = _map(run, ident)
        run.update(lambda s: dataclasses.replace(s.bump("mappings_created"),
                                                 mapping_in_flight=False))  # fmt: skip
        run.emit(Step.MAPPING, StepStatus.DONE,
                 f"created {len(result.things)} thing(s), {len(result.channels)} channel(s)",
                 mapping_url, {"things": ",".join(t.id for t in result.things)})  # fmt: skip
        created = True
        run.emit(Step.BOOTSTRAP, StepStatus.STARTED, f"GET {lookup_url}", lookup_url)
        config = _fetch(run, ident)
        run.emit(Step.BOOTSTRAP, StepStatus.DONE,
                 "fetched the bootstrap config" if config is not None
                 else "the layout provisions no bootstrap config", lookup_url)  # fmt: skip
        creds = from_mapping(result, config, ident.external_id)

    certificates, ca_pem = _certificates(run, creds)
    data = GenerationData(
        things=creds.things, channels=creds.channels, gateway_thing_id=creds.gateway_thing_id,
        bootstrap_content=creds.content, source="mapping" if created else "bootstrap",
        external_id=ident.external_id, certificates=certificates, ca_pem=ca_pem,
    )  # fmt: skip
    run.emit(Step.STORE, StepStatus.STARTED, f"writing a new generation in {store.state_dir}")
    number = store.write_generation(data)
    generation = store.load_generation(number)
    run.emit(Step.STORE, StepStatus.DONE, f"generation {number} written",
             detail={"generation": str(number)})  # fmt: skip
    if verifier is not None:
        run.emit(Step.VERIFY, StepStatus.STARTED, "checking the new credentials over MQTT")
        checked = verifier(generation)
        if checked is None:
            run.emit(Step.VERIFY, StepStatus.SKIPPED,
                     "no MQTT broker known (set mqtt.url / EDGE_PROVISION_MQTT_URL)")
        else:
            run.emit(Step.VERIFY, StepStatus.DONE,
                     f"connected and published on the control channel in "
                     f"{checked.elapsed_s:.2f} s", url=checked.url)
    else:
        run.emit(Step.VERIFY, StepStatus.SKIPPED, "no MQTT verification configured")
    run.emit(Step.SWITCH, StepStatus.STARTED, f"making generation {number} current")
    store.switch_current(number)
    next_action, next_at = next_action_for(generation, settings, run.clock())
    run.update(lambda s: dataclasses.replace(
        s.bump("enrollments"), phase=Phase.PROVISIONED, mapping_in_flight=False,
        last_error=None, next_action=next_action, next_action_at=next_at))  # fmt: skip
    run.emit(Step.SWITCH, StepStatus.DONE, f"generation {number} is current",
             detail={"generation": str(number)})  # fmt: skip
    removed = store.prune(settings.keep_generations)
    run.emit(Step.PRUNE, StepStatus.DONE if removed else StepStatus.SKIPPED,
             f"removed generation(s) {', '.join(map(str, removed))}" if removed
             else f"nothing to prune (keeping {settings.keep_generations})")  # fmt: skip
    report = _hand_off(run, generation, ident.external_id)
    logger.info("enrolled external_id=%s generation=%s created_mapping=%s",
                ident.external_id, number, created)  # fmt: skip
    return _result(run, generation, ident, created, report, next_action, next_at, True)


def _identity(settings: AgentSettings, interfaces: Sequence[InterfaceInfo] | None
              ) -> Identity:  # fmt: skip
    return resolve_identity(
        settings.state_dir, external_id=settings.external_id,
        external_key=settings.external_key, interface=settings.interface,
        mac_format=MacFormat(settings.mac_format), prefix=settings.id_prefix,
        interfaces=interfaces, persist=True,
    )  # fmt: skip


def _fetch(run: _Run, ident: Identity) -> BootstrapConfig | None:
    try:
        return run.clients.bootstrap.fetch(ident.external_id, ident.external_key,
                                           secure=run.settings.secure_bootstrap)  # fmt: skip
    except Unauthorized as exc:
        if "does not match" not in str(exc):
            raise
        raise Unauthorized(
            f"{exc}. What to do: enroll with the original external_key "
            "(EDGE_PROVISION_EXTERNAL_KEY or --external-key), or have an operator delete the "
            f"bootstrap config of {ident.external_id} on the platform"
        ) from exc


def _map(run: _Run, ident: Identity) -> MappingResult:
    try:
        return run.clients.provision.create_mapping(
            ident.external_id, ident.external_key, run.settings.name)
    except AlreadyProvisioned as exc:
        run.update(lambda s: dataclasses.replace(s, mapping_in_flight=False))
        raise AlreadyProvisioned(
            f"external_id {ident.external_id} is already provisioned on the platform with a "
            f"different external_key ({exc}). What to do: enroll with the original "
            "external_key (EDGE_PROVISION_EXTERNAL_KEY or --external-key), or have an operator "
            f"delete the bootstrap config of {ident.external_id} on the platform, then run "
            "enroll again"
        ) from exc
    except (Unauthorized, Rejected):
        # refused before anything was created: the outcome is known
        run.update(lambda s: dataclasses.replace(s, mapping_in_flight=False))
        raise


def _certificates(run: _Run, creds: CredentialSet) -> tuple[dict[str, tuple[str, str]],
                                                             str | None]:  # fmt: skip
    certs, url = run.clients.certs, run.clients.certs_url
    if certs is not None and url is not None:
        run.emit(Step.CERTIFICATES, StepStatus.STARTED, f"GET {url}/health (CSR support?)", url)
        if certs.supports_csr():
            sign_url = f"{url}/certs/csr"
            run.emit(Step.CERTIFICATES, StepStatus.STARTED,
                     f"POST {sign_url} for {len(creds.things)} thing(s); keys made here",
                     sign_url)  # fmt: skip
            issued, ca = issue_certificates(certs, creds.things, run.settings.key_type,
                                            run.settings.key_bits)  # fmt: skip
            run.update(lambda s: s.bump("certificates_signed", len(issued)))
            run.emit(Step.CERTIFICATES, StepStatus.DONE,
                     f"{len(issued)} certificate(s) signed; private keys never left the gateway",
                     sign_url, {"mode": "csr"})  # fmt: skip
            return issued, ca
    if creds.certificates:
        run.emit(Step.CERTIFICATES, StepStatus.DONE,
                 f"{len(creds.certificates)} certificate(s) from the platform (server-made keys)",
                 detail={"mode": "platform"})  # fmt: skip
        return dict(creds.certificates), creds.ca_pem
    run.emit(Step.CERTIFICATES, StepStatus.SKIPPED, "no certificates offered")
    return {}, creds.ca_pem


def _hand_off(run: _Run, generation: Generation, external_id: str) -> HandoffReport:
    """Run the hand-off (it journals itself) and report it as the last step."""
    run.announce(StepEvent(Step.HANDOFF.value, StepStatus.STARTED.value,
                           "writing service configs and running deploy hooks"))  # fmt: skip
    report = hand_off(run.settings, generation, external_id, store=run.store)
    if report.ok:
        message = f"{len(report.files)} file(s) written, {len(report.hooks)} hook(s) run"
    else:
        problems = [f"hook {h.name}: {h.error}" for h in report.failed_hooks]
        message = "failed (the enrollment stands): " + "; ".join(problems + list(report.errors))
    status = StepStatus.DONE if report.ok else StepStatus.FAILED
    run.announce(StepEvent(Step.HANDOFF.value, status.value, message))
    return report


def _already_provisioned(run: _Run, current: Generation, ident: Identity) -> EnrollResult:
    """The no-op: keep everything; finish a hand-off that did not complete last time."""
    for step in (Step.LOOKUP, Step.MAPPING, Step.BOOTSTRAP, Step.CERTIFICATES, Step.STORE,
                 Step.VERIFY, Step.SWITCH, Step.PRUNE):  # fmt: skip
        run.emit(step, StepStatus.SKIPPED,
                 f"already provisioned (generation {current.number}); use --force to redo")
    state = run.store.load_state()
    report = None
    if _handoff_pending(state, current.number):
        report = _hand_off(run, current, ident.external_id)
    else:
        run.emit(Step.HANDOFF, StepStatus.SKIPPED, "done for this generation already")
    state = run.store.load_state()
    if state.phase is not Phase.PROVISIONED or state.next_action in (None, "enroll"):
        next_action, next_at = next_action_for(current, run.settings, run.clock())
        state = run.update(lambda s: dataclasses.replace(
            s, phase=Phase.PROVISIONED, next_action=next_action, next_action_at=next_at))
    return _result(run, current, ident, False, report, state.next_action,
                   state.next_action_at, False)  # fmt: skip


def _handoff_pending(state: State, number: int) -> bool:
    """True when the last journalled hand-off is not a success for generation ``number``."""
    last = next((e for e in reversed(state.journal) if e.step == Step.HANDOFF.value), None)
    if last is None:
        return False
    return last.status != "done" or last.detail.get("generation") != str(number)


def _result(run: _Run, generation: Generation, ident: Identity, created: bool,
            report: HandoffReport | None, next_action: str | None, next_at: str | None,
            changed: bool) -> EnrollResult:  # fmt: skip
    return EnrollResult(
        external_id=ident.external_id, generation=generation.number, changed=changed,
        created_mapping=created, thing_id=generation.gateway_thing_id,
        things=tuple({"id": t.id, "name": t.name, "gateway": t.id == generation.gateway_thing_id}
                     for t in generation.things),
        channels=tuple({"id": c.id, "name": c.name, "type": c.metadata.get("type")}
                       for c in generation.channels),
        certificates=tuple(cert_summary(generation)), steps=tuple(run.events),
        handoff=report, next_action=next_action, next_action_at=next_at,
    )  # fmt: skip


def _record_failure(run: _Run, exc: EdgeProvisionError) -> None:
    """Journal the failed step and set last_error, phase and the next planned action."""
    now = run.clock()
    run.announce(StepEvent(run.step, StepStatus.FAILED.value, str(exc)))
    has_current = run.store.current_generation() is not None
    if isinstance(exc, TransientError):
        phase = Phase.PROVISIONED if has_current else Phase.UNPROVISIONED
        wait = exc.retry_after_s or 0.0
        next_at = now + timedelta(seconds=wait)
        counter = "transient_failures"
    else:
        phase = Phase.PROVISIONED if has_current else Phase.FAILED_PERMANENT
        next_at = now + timedelta(seconds=run.settings.permanent_retry_s)
        counter = "permanent_failures"

    def change(state: State) -> State:
        state = state.record(run.step, "failed", {"error": exc.kind}, at=iso(now))
        state = state.with_error(exc.kind, f"step {run.step}: {exc}", at=iso(now))
        return dataclasses.replace(state.bump(counter), phase=phase, next_action="enroll",
                                   next_action_at=iso(next_at))  # fmt: skip

    try:
        run.update(change)
    except EdgeProvisionError as store_exc:  # the original error matters more
        logger.error("cannot record the failure error=%s", store_exc)


def _with_step(exc: EdgeProvisionError, step: str) -> EdgeProvisionError:
    """A copy of ``exc`` whose message starts with the failed step."""
    if str(exc).startswith("step "):
        return exc
    try:
        clone = type(exc).__new__(type(exc))
        clone.__dict__.update(exc.__dict__)
        clone.args = (f"step {step} failed: {exc}",)
    except (TypeError, AttributeError):  # pragma: no cover - exotic subclasses
        return exc
    return clone
