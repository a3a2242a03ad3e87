"""One simulated gateway's enrollment, attempt by attempt, as the agent does it.

An attempt is what one ``edge-provision enroll`` run does on a fresh gateway:

1. **lookup** -- ``GET /things/bootstrap/<external_id>`` (or the secure variant): a
   config found means an earlier attempt's mapping went through, so no second mapping;
2. **mapping** -- ``POST /mapping`` (only when the lookup found nothing);
3. **bootstrap** -- fetch the config the mapping made;
4. **csr** -- for every thing: a key made here (:mod:`edge_provision.crypto`), a CSR
   signed by the certs service, the certificate checked against the key;
5. **mqtt** -- optionally, connect with the new credentials and publish on the control
   channel (the agent's own check, :func:`edge_provision.agent.mqtt.verify_credentials`).

A failed attempt raises the :mod:`edge_provision.errors` class of the failure; the
runner decides, as the daemon would, whether and when the gateway tries again (always
from the lookup). Every step's duration is kept for the latency table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, TypeVar

from edge_provision.errors import CertificateError, EdgeProvisionError, ProtocolError
from edge_provision.fleet.clients import GatewayClients
from edge_provision.fleet.gateways import SimGateway
from edge_provision.platform import BootstrapConfig, MappingResult

__all__ = [
    "AttemptError",
    "EnrollmentPlan",
    "GatewayResult",
    "Journey",
    "MqttCheck",
    "Step",
    "StepSample",
]

_T = TypeVar("_T")


class Step(str, Enum):
    """The measured steps of an enrollment; ``enrollment`` is a whole gateway, retries included."""

    LOOKUP = "lookup"
    MAPPING = "mapping"
    BOOTSTRAP = "bootstrap"
    CSR = "csr"
    MQTT = "mqtt"
    ENROLLMENT = "enrollment"


@dataclass(frozen=True)
class MqttCheck:
    """Connect to this broker with the new credentials after enrolling."""

    url: str
    timeout_s: float = 10.0
    ca_path: Path | None = None
    insecure: bool = False
    new_credentials_grace_s: float = 10.0
    """A refusal of credentials this gateway's /mapping just made is retried this long."""


@dataclass(frozen=True)
class EnrollmentPlan:
    """What every gateway of the run does."""

    csr: bool = True
    secure: bool = False
    key_type: str = "ec"
    key_bits: int | None = None
    mqtt: MqttCheck | None = None


@dataclass(frozen=True)
class StepSample:
    """One successful step: which, when it ended (s from the run start) and how long it took."""

    step: Step
    ended_s: float
    elapsed_s: float


@dataclass(frozen=True)
class AttemptError:
    """One failed attempt: the error class, the step it failed in, when, whether retried."""

    kind: str
    step: Step
    at_s: float
    retryable: bool
    message: str


@dataclass(frozen=True)
class GatewayResult:
    """How one gateway's enrollment ended (no secrets)."""

    index: int
    external_id: str
    ok: bool
    attempts: int
    arrival_s: float
    started_s: float | None
    ended_s: float | None
    created_mapping: bool = False
    gateway_thing_id: str | None = None
    thing_ids: tuple[str, ...] = ()
    channel_ids: tuple[str, ...] = ()
    error: AttemptError | None = None

    @property
    def retries(self) -> int:
        """Attempts after the first."""
        return max(0, self.attempts - 1)


@dataclass
class Journey:
    """The mutable state of one gateway during the run (one worker at a time holds it)."""

    gateway: SimGateway
    arrival_s: float
    attempts: int = 0
    failures: int = 0  # consecutive failed attempts
    started_s: float | None = None
    samples: list[StepSample] = field(default_factory=list)
    errors: list[AttemptError] = field(default_factory=list)
    created_mapping: bool = False

    def attempt(self, clients: GatewayClients, plan: EnrollmentPlan,
                clock: Callable[[], float]) -> GatewayResult:  # fmt: skip
        """Run one attempt; the result on success, the :mod:`errors` class raised otherwise."""
        self.attempts += 1
        start = clock()
        if self.started_s is None:
            self.started_s = start
        gw = self.gateway
        step = Step.LOOKUP
        try:
            config = self._timed(step, clock, lambda: clients.bootstrap.fetch(
                gw.external_id, gw.external_key, secure=plan.secure))  # fmt: skip
            mapping: MappingResult | None = None
            if config is None:
                step = Step.MAPPING
                mapping = self._timed(step, clock, lambda: clients.provision.create_mapping(
                    gw.external_id, gw.external_key, gw.name))  # fmt: skip
                self.created_mapping = True
                step = Step.BOOTSTRAP
                config = self._timed(step, clock, lambda: clients.bootstrap.fetch(
                    gw.external_id, gw.external_key, secure=plan.secure))  # fmt: skip
                if config is None:
                    raise ProtocolError(
                        f"the mapping for {gw.external_id} made no bootstrap config; the "
                        "simulator needs a layout whose gateway thing declares external_id"
                    )
            things = _things(config, mapping)
            if plan.csr:
                step = Step.CSR
                self._timed(step, clock, lambda: _sign_all(clients, things, plan))
            if plan.mqtt is not None:
                step = Step.MQTT
                grace = plan.mqtt.new_credentials_grace_s if mapping is not None else 0.0
                self._timed(step, clock, lambda: _verify_mqtt(plan.mqtt, config, grace))
        except EdgeProvisionError as exc:
            self.failures += 1
            self.errors.append(AttemptError(exc.kind, step, clock(), exc.retryable, str(exc)))
            raise
        end = clock()
        self.samples.append(StepSample(Step.ENROLLMENT, end, end - self.started_s))
        return GatewayResult(
            index=gw.index, external_id=gw.external_id, ok=True, attempts=self.attempts,
            arrival_s=self.arrival_s, started_s=self.started_s, ended_s=end,
            created_mapping=self.created_mapping, gateway_thing_id=config.thing_id,
            thing_ids=tuple(t for t, _ in things),
            channel_ids=tuple(c.id for c in config.channels),
        )  # fmt: skip

    def failed(self) -> GatewayResult:
        """The result of a gateway that gave up (or never started)."""
        last = self.errors[-1] if self.errors else None
        return GatewayResult(
            index=self.gateway.index, external_id=self.gateway.external_id, ok=False,
            attempts=self.attempts, arrival_s=self.arrival_s, started_s=self.started_s,
            ended_s=last.at_s if last else None, created_mapping=self.created_mapping,
            error=last,
        )  # fmt: skip

    def _timed(self, step: Step, clock: Callable[[], float], call: Callable[[], _T]) -> _T:
        begin = clock()
        value = call()
        end = clock()
        self.samples.append(StepSample(step, end, end - begin))
        return value


def _things(config: BootstrapConfig, mapping: MappingResult | None) -> list[tuple[str, str]]:
    """(thing id, thing key) of every thing of the gateway, gateway thing first."""
    out = [(config.thing_id, config.thing_key)]
    seen = {config.thing_id}
    extra = [(t.id, t.key) for t in config.extra_things]
    if mapping is not None:
        extra += [(t.id, t.key) for t in mapping.things]
    for thing_id, key in extra:
        if thing_id not in seen:
            seen.add(thing_id)
            out.append((thing_id, key))
    return out


def _sign_all(clients: GatewayClients, things: list[tuple[str, str]],
              plan: EnrollmentPlan) -> None:  # fmt: skip
    """A key made here and a signed CSR for every thing; the certificate must match the key."""
    from edge_provision.crypto import pki

    for thing_id, thing_key in things:
        key = pki.generate_key(plan.key_type, plan.key_bits)
        signed = clients.certs.sign_csr(thing_id, thing_key, pki.make_csr(key, thing_id))
        if not pki.cert_matches_key(signed.cert_pem, key):
            raise CertificateError(
                f"the certificate signed for thing {thing_id} does not match the key sent in "
                "the CSR; the certificate server is misbehaving"
            )


def _verify_mqtt(check: MqttCheck | None, config: BootstrapConfig, grace_s: float) -> None:
    """The agent's MQTT check, with its grace for brand-new credentials."""
    from edge_provision.agent.mqtt import retry_refusals, verify_credentials

    assert check is not None
    control = config.channel_of_type("control")
    retry_refusals(lambda: verify_credentials(
        check.url, config.thing_id, config.thing_key, control.id if control is not None else None,
        ca_path=check.ca_path, timeout_s=check.timeout_s, insecure=check.insecure), grace_s)
