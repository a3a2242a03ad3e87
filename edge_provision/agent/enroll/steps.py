"""The steps of one enrollment, each a function of the :class:`Enrollment` it advances.

:data:`STEPS` is the table :func:`edge_provision.agent.enroll.enroll` hands to the
:class:`~edge_provision.agent.enroll.runner.StepRunner` after the identity step
(:data:`IDENTITY`); :data:`HANDOFF` alone finishes an interrupted hand-off on the
"already provisioned" path. A step's ``begin`` decides whether it applies and announces
what it is about to do; its ``run`` calls the platform or the store. What the platform
refused, and why, comes back as the error's ``reason`` (never read from its message).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Optional

from edge_provision.agent.certificates import schedule_for
from edge_provision.agent.enroll._credentials import (
    CredentialSet,
    from_bootstrap,
    from_mapping,
    issue_certificates,
)
from edge_provision.agent.enroll.ports import EnrollClients, Verified, Verifier
from edge_provision.agent.enroll.runner import (
    Begin,
    Outcome,
    Step,
    StepDef,
    StepStatus,
    done,
    skipped,
)
from edge_provision.agent.identity import Identity, InterfaceInfo, identity_for
from edge_provision.agent.store import Generation, GenerationData, Phase, State, Store
from edge_provision.clock import iso
from edge_provision.errors import (
    AlreadyProvisioned,
    EdgeProvisionError,
    Reason,
    RetryClass,
    ServiceUnavailable,
    TransientError,
)
from edge_provision.settings import AgentSettings

if TYPE_CHECKING:
    from edge_provision.agent.handoff import HandoffReport
    from edge_provision.platform import BootstrapConfig, MappingResult

__all__ = ["HANDOFF", "IDENTITY", "STEPS", "Enrollment", "handoff_pending"]

logger = logging.getLogger(__name__)

REFUSED_BEFORE_CREATING = frozenset({Reason.CONFLICT, Reason.REFUSED, Reason.KEY_MISMATCH,
                                     Reason.REJECTED})  # fmt: skip
"""A ``/mapping`` refused for these reasons created nothing: its outcome is known."""


@dataclass
class Enrollment:
    """What one enrollment knows so far, passed from step to step."""

    settings: AgentSettings
    store: Store
    clients: EnrollClients
    verifier: Optional[Verifier]
    interfaces: Optional[Sequence[InterfaceInfo]]
    clock: Callable[[], datetime]
    report: Callable[[Begin], None]  # announce a further part of the running step
    ident: Optional[Identity] = None
    config: Optional[BootstrapConfig] = None
    mapping: Optional[MappingResult] = None
    creds: Optional[CredentialSet] = None
    certificates: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    ca_pem: Optional[str] = field(default=None, repr=False)
    generation: Optional[Generation] = None
    next_action: Optional[str] = None
    next_action_at: Optional[str] = None
    handoff: Optional[HandoffReport] = None

    @property
    def identity(self) -> Identity:
        """The identity the first step resolved."""
        if self.ident is None:
            raise RuntimeError("enrollment step run before the identity step")
        return self.ident

    @property
    def new_generation(self) -> Generation:
        """The generation the store step wrote."""
        if self.generation is None:
            raise RuntimeError("enrollment step run before the store step")
        return self.generation

    @property
    def lookup_url(self) -> str:
        """The device endpoint this gateway's bootstrap config is fetched from."""
        secure = "secure/" if self.settings.secure_bootstrap else ""
        return (f"{self.clients.bootstrap_url}/things/bootstrap/{secure}"
                f"{self.identity.external_id}")  # fmt: skip

    def fetch(self) -> BootstrapConfig | None:
        """This gateway's bootstrap config, or None when the platform has none."""
        ident = self.identity
        return self.clients.bootstrap.fetch(ident.external_id, ident.external_key,
                                            secure=self.settings.secure_bootstrap)  # fmt: skip


# --------------------------------------------------------------------------- identity


def _identity_begin(e: Enrollment) -> Begin:
    return Begin("working out external_id and external_key")


def _identity_run(e: Enrollment) -> Outcome:
    e.ident = identity_for(e.settings, interfaces=e.interfaces, persist=True)
    return done(f"external_id {e.ident.external_id} ({e.ident.external_id_source})",
                external_id=e.ident.external_id)  # fmt: skip


# --------------------------------------------------------------------------- lookup


def _lookup_begin(e: Enrollment) -> Begin:
    return Begin(f"GET {e.lookup_url}", e.lookup_url)


def _lookup_run(e: Enrollment) -> Outcome:
    e.config = e.fetch()
    if e.config is None:
        return done("no bootstrap config yet", e.lookup_url, found="no")
    return done(f"found the bootstrap config of thing {e.config.thing_id}", e.lookup_url,
                found="yes", thing_id=e.config.thing_id)  # fmt: skip


# --------------------------------------------------------------------------- mapping


def _mapping_url(e: Enrollment) -> str:
    return f"{e.clients.provision_url}/mapping"


def _mapping_begin(e: Enrollment) -> Begin | Outcome:
    if e.config is not None:
        return skipped("not needed: the platform has our config")
    e.store.update_state(lambda s: dataclasses.replace(s, mapping_in_flight=True))
    return Begin(f"POST {_mapping_url(e)}", _mapping_url(e))


def _landed(e: Enrollment) -> None:
    """The mapping's outcome is known: no longer in flight."""
    e.store.update_state(lambda s: dataclasses.replace(s, mapping_in_flight=False))


def _mapping_run(e: Enrollment) -> Outcome:
    ident = e.identity
    try:
        result = e.clients.provision.create_mapping(ident.external_id, ident.external_key,
                                                    e.settings.name)  # fmt: skip
    except EdgeProvisionError as exc:
        if exc.reason is Reason.CONFLICT:
            return _confirm_conflict(e, exc)
        if exc.reason in REFUSED_BEFORE_CREATING:  # nothing was created: outcome known
            _landed(e)
        raise
    e.mapping = result
    e.store.update_state(lambda s: dataclasses.replace(s.bump("mappings_created"),
                                                       mapping_in_flight=False))  # fmt: skip
    return done(f"created {len(result.things)} thing(s), {len(result.channels)} channel(s)",
                _mapping_url(e), things=",".join(t.id for t in result.things))  # fmt: skip


def _confirm_conflict(e: Enrollment, conflict: EdgeProvisionError) -> Outcome:
    """``/mapping`` says our external_id is taken: is the bootstrap config ours after all?

    Real Mainflux answers 201 + "409 Conflict" when a mapping whose answer was lost (a
    timeout) completed on the server meanwhile. So look the config up with our key: if it
    answers, it is ours: carry on from it. Only a lookup that confirms the conflict (no
    config for our key, or one held for another key) needs a person; a lookup that fails
    for now leaves the conflict unconfirmed: transient, and the mapping still in flight.
    """
    e.report(Begin(f"GET {e.lookup_url} (the platform reports a conflict: is it ours?)",
                   e.lookup_url))  # fmt: skip
    try:
        config = e.fetch()
    except EdgeProvisionError as exc:
        if exc.retry_class is RetryClass.TRANSIENT:
            raise ServiceUnavailable(
                f"POST /mapping reported a conflict and the lookup that would confirm it "
                f"failed, so the conflict is not confirmed: {exc.message}",
                retry_after_s=exc.retry_after_s if isinstance(exc, TransientError) else None,
                reason=exc.reason,
            ) from exc
        _landed(e)
        raise  # e.g. the config is held for another external_key: confirmed
    _landed(e)
    if config is None:
        raise AlreadyProvisioned(
            f"{conflict.message}; confirmed: {e.lookup_url} has no bootstrap config for our "
            "external_key"
        ) from conflict
    e.config = config
    logger.warning("mapping conflict was our own mapping external_id=%s thing_id=%s; "
                   "continuing with its bootstrap config", e.identity.external_id,
                   config.thing_id)  # fmt: skip
    return done(f"the platform already holds our bootstrap config (thing {config.thing_id}; "
                "the answer to an earlier mapping was lost); continuing with it",
                e.lookup_url, converged="yes", thing_id=config.thing_id)  # fmt: skip


# --------------------------------------------------------------------------- bootstrap


def _bootstrap_begin(e: Enrollment) -> Begin | Outcome:
    if e.mapping is None:
        return skipped("already fetched by the lookup")
    return Begin(f"GET {e.lookup_url}", e.lookup_url)


def _bootstrap_run(e: Enrollment) -> Outcome:
    e.config = e.fetch()
    return done("fetched the bootstrap config" if e.config is not None
                else "the layout provisions no bootstrap config", e.lookup_url)  # fmt: skip


# --------------------------------------------------------------------------- certificates


def _credential_set(e: Enrollment) -> CredentialSet:
    external_id = e.identity.external_id
    if e.mapping is not None:
        return from_mapping(e.mapping, e.config, external_id)
    if e.config is None:
        raise RuntimeError("no mapping and no bootstrap config to take credentials from")
    return from_bootstrap(e.config, external_id)


def _certificates_begin(e: Enrollment) -> Begin | None:
    e.creds = _credential_set(e)
    url = e.clients.certs_url
    if e.clients.certs is None or url is None:
        return None
    return Begin(f"GET {url}/health (CSR support?)", url)


def _certificates_run(e: Enrollment) -> Outcome:
    creds, certs, url = e.creds, e.clients.certs, e.clients.certs_url
    if creds is None:
        raise RuntimeError("certificates step run without its begin")
    if certs is not None and url is not None and certs.supports_csr():
        sign_url = f"{url}/certs/csr"
        e.report(Begin(f"POST {sign_url} for {len(creds.things)} thing(s); keys made here",
                       sign_url))  # fmt: skip
        e.certificates, e.ca_pem = issue_certificates(certs, creds.things,
                                                      e.settings.key_type, e.settings.key_bits)
        count = len(e.certificates)
        e.store.update_state(lambda s: s.bump("certificates_signed", count))
        return done(f"{count} certificate(s) signed; private keys never left the gateway",
                    sign_url, mode="csr")  # fmt: skip
    e.ca_pem = creds.ca_pem
    if creds.certificates:
        e.certificates = dict(creds.certificates)
        return done(f"{len(creds.certificates)} certificate(s) from the platform "
                    "(server-made keys)", mode="platform")  # fmt: skip
    return skipped("no certificates offered")


# --------------------------------------------------------------------------- store


def _store_begin(e: Enrollment) -> Begin:
    return Begin(f"writing a new generation in {e.store.state_dir}")


def _store_run(e: Enrollment) -> Outcome:
    creds = e.creds
    if creds is None:
        raise RuntimeError("store step run before the certificates step")
    data = GenerationData(
        things=creds.things, channels=creds.channels, gateway_thing_id=creds.gateway_thing_id,
        bootstrap_content=creds.content, source="mapping" if e.mapping else "bootstrap",
        external_id=e.identity.external_id, certificates=e.certificates, ca_pem=e.ca_pem,
    )  # fmt: skip
    number = e.store.write_generation(data)
    e.generation = e.store.load_generation(number)
    return done(f"generation {number} written", generation=str(number))


# --------------------------------------------------------------------------- verify


def _verify_begin(e: Enrollment) -> Begin | Outcome:
    if e.verifier is None:
        return skipped("no MQTT verification configured")
    return Begin("checking the new credentials over MQTT")


def _verify_run(e: Enrollment) -> Outcome:
    if e.verifier is None:
        raise RuntimeError("verify step run without a verifier")
    checked = _verify_with_grace(e, e.verifier)
    if checked is None:
        return skipped("no MQTT broker known (set mqtt.url / EDGE_PROVISION_MQTT_URL)")
    return done(f"connected and published on the control channel in {checked.elapsed_s:.2f} s",
                checked.url)  # fmt: skip


def _verify_with_grace(e: Enrollment, verifier: Verifier) -> Verified | None:
    """``verifier``; credentials this run's ``/mapping`` made get ``mqtt.new_credentials_grace``
    before a refusal counts (:func:`edge_provision.agent.mqtt.retry_refusals`); credentials
    that existed before this run get none."""
    from edge_provision.agent.mqtt import retry_refusals

    grace_s = e.settings.mqtt_new_credentials_grace_s if e.mapping is not None else 0.0
    return retry_refusals(lambda: verifier(e.new_generation), grace_s)


# --------------------------------------------------------------------------- switch


def _switch_begin(e: Enrollment) -> Begin:
    return Begin(f"making generation {e.new_generation.number} current")


def _switch_run(e: Enrollment) -> Outcome:
    generation = e.new_generation
    e.store.switch_current(generation.number)
    planned = schedule_for(generation, e.settings.renew_before_s, e.clock())
    e.next_action, e.next_action_at = planned.action, iso(planned.at)
    e.store.update_state(lambda s: dataclasses.replace(
        s.bump("enrollments"), phase=Phase.PROVISIONED, mapping_in_flight=False,
        last_error=None, next_action=planned.action, next_action_at=iso(planned.at)))
    return done(f"generation {generation.number} is current", generation=str(generation.number))


# --------------------------------------------------------------------------- prune


def _no_begin(e: Enrollment) -> None:
    return None


def _prune_run(e: Enrollment) -> Outcome:
    keep = e.settings.keep_generations
    removed = e.store.prune(keep)
    if not removed:
        return skipped(f"nothing to prune (keeping {keep})")
    return done(f"removed generation(s) {', '.join(map(str, removed))}")


# --------------------------------------------------------------------------- handoff


def _handoff_begin(e: Enrollment) -> Begin:
    return Begin("writing service configs and running deploy hooks")


def _handoff_run(e: Enrollment) -> Outcome:
    from edge_provision.agent.handoff import hand_off  # here: a no-op enroll hands off nothing

    report = hand_off(e.settings, e.new_generation, e.identity.external_id, store=e.store)
    e.handoff = report
    if report.ok:
        return done(f"{len(report.files)} file(s) written, {len(report.hooks)} hook(s) run")
    problems = [f"hook {h.name}: {h.error}" for h in report.failed_hooks]
    return Outcome(StepStatus.FAILED,
                   "failed (the enrollment stands): " + "; ".join(problems + list(report.errors)))


def handoff_pending(state: State, number: int) -> bool:
    """True when the last journalled hand-off is not a success for generation ``number``."""
    last = next((e for e in reversed(state.journal) if e.step == Step.HANDOFF.value), None)
    if last is None:
        return False
    return last.status != "done" or last.detail.get("generation") != str(number)


# --------------------------------------------------------------------------- the table

IDENTITY: StepDef[Enrollment] = StepDef(Step.IDENTITY, _identity_begin, _identity_run)
HANDOFF: StepDef[Enrollment] = StepDef(Step.HANDOFF, _handoff_begin, _handoff_run,
                                       journal=False)  # hand_off journals itself
STEPS: tuple[StepDef[Enrollment], ...] = (
    StepDef(Step.LOOKUP, _lookup_begin, _lookup_run),
    StepDef(Step.MAPPING, _mapping_begin, _mapping_run),
    StepDef(Step.BOOTSTRAP, _bootstrap_begin, _bootstrap_run),
    StepDef(Step.CERTIFICATES, _certificates_begin, _certificates_run),
    StepDef(Step.STORE, _store_begin, _store_run),
    StepDef(Step.VERIFY, _verify_begin, _verify_run),
    StepDef(Step.SWITCH, _switch_begin, _switch_run),
    StepDef(Step.PRUNE, _no_begin, _prune_run),
    HANDOFF,
)
"""The steps after identity, in order."""
