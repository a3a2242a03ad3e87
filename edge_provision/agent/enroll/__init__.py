"""Enrollment as a table of resumable steps (DESIGN.md "Enrollment, as resumable steps").

identity -> lookup (bootstrap config for our external_id) -> mapping (``POST /mapping``,
only when the lookup found nothing) -> bootstrap (fetch the config the mapping made) ->
certificates (CSR with a key generated here when the server offers it; else the
platform's) -> store (new generation) -> verify (optional) -> switch (``current``) ->
prune -> handoff.

Each step is a function (:mod:`.steps`); one runner (:mod:`.runner`) journals each step
in the store *before* it runs, under the store lock held for the whole run, reports
progress (one :class:`StepEvent` list feeds the text printer and ``--json``) and maps
errors: the failed step and the reason are attributes of the raised error
(``exc.step``, ``exc.reason``). ``State.mapping_in_flight`` is set before ``POST /mapping``
and cleared once its outcome is known: a run that finds it set (the previous run died
with the answer unknown) always looks up first and never maps while a lookup answers. A
conflict reported by ``/mapping`` (Mainflux's 201 + "409 Conflict" for a mapping whose
answer was lost) is looked up before it is believed: a config that answers our key is
ours, and the run continues from it. Re-running at any point therefore converges on one
set of things on the platform.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Optional

from edge_provision.agent.certificates import schedule_for
from edge_provision.agent.enroll.ports import EnrollClients, Verified, Verifier
from edge_provision.agent.enroll.runner import Step, StepEvent, StepRunner, StepStatus
from edge_provision.agent.enroll.steps import (
    HANDOFF,
    IDENTITY,
    STEPS,
    Enrollment,
    handoff_pending,
)
from edge_provision.agent.identity import InterfaceInfo, mismatch_error
from edge_provision.agent.status import CredentialSummary, summarize
from edge_provision.agent.store import Generation, Phase, Store
from edge_provision.clock import iso, utc_now
from edge_provision.settings import AgentSettings

if TYPE_CHECKING:
    from edge_provision.agent.handoff import HandoffReport

__all__ = [
    "EnrollClients",
    "EnrollResult",
    "Step",
    "StepEvent",
    "StepStatus",
    "Verified",
    "Verifier",
    "enroll",
]

logger = logging.getLogger(__name__)

_NOOP_SKIPPED = (Step.LOOKUP, Step.MAPPING, Step.BOOTSTRAP, Step.CERTIFICATES, Step.STORE,
                 Step.VERIFY, Step.SWITCH, Step.PRUNE)  # fmt: skip


@dataclass(frozen=True)
class EnrollResult:
    """What an enrollment did (``changed`` is False for the "already provisioned" no-op)."""

    external_id: str
    generation: int
    changed: bool
    created_mapping: bool
    thing_id: str
    credentials: CredentialSummary
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
            **self.credentials.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "handoff": None if self.handoff is None else self.handoff.to_dict(),
            "next_action": self.next_action,
            "next_action_at": self.next_action_at,
        }


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
    Raises the :mod:`edge_provision.errors` class of the failure with ``step`` set to the
    failed step; the failure is recorded in ``State.last_error`` first.
    """
    clock = clock or utc_now
    runner = StepRunner(store, clock=clock, progress=progress,
                        permanent_retry_s=settings.permanent_retry_s)  # fmt: skip
    e = Enrollment(settings, store, clients, verifier, interfaces, clock, runner.started)
    with store.lock(blocking=False):
        store.cleanup_temp()
        with runner.failures(lambda: e.ident.external_id if e.ident else None):
            runner.hold()  # the no-op below must write nothing
            runner.perform(e, IDENTITY)
            current = store.current_generation()
            if current is not None and not force and current.external_id != e.identity.external_id:
                raise mismatch_error(e.identity, current.number, current.external_id)
            if (current is not None and not force and not current.is_fallback
                    and current.external_id == e.identity.external_id):
                runner.drop()
                return _already_provisioned(runner, e, current)
            runner.release()
            before = store.update_state(lambda s: dataclasses.replace(
                s.bump("enroll_runs"), phase=Phase.ENROLLING))
            if before.mapping_in_flight:
                logger.warning("previous mapping outcome unknown external_id=%s; looking up "
                               "first", e.identity.external_id)  # fmt: skip
            for spec in STEPS:
                runner.perform(e, spec)
        logger.info("enrolled external_id=%s generation=%s created_mapping=%s",
                    e.identity.external_id, e.new_generation.number, e.mapping is not None)
        return _result(e, e.new_generation, runner, changed=True)


def _already_provisioned(runner: StepRunner, e: Enrollment, current: Generation
                         ) -> EnrollResult:  # fmt: skip
    """The no-op: keep everything; finish a hand-off that did not complete last time."""
    for step in _NOOP_SKIPPED:
        runner.skip(step, f"already provisioned (generation {current.number}); "
                          "use --force to redo")  # fmt: skip
    e.generation = current
    if handoff_pending(e.store.load_state(), current.number):
        runner.perform(e, HANDOFF)
    else:
        runner.skip(Step.HANDOFF, "done for this generation already")
    state = e.store.load_state()
    if state.phase is not Phase.PROVISIONED or state.next_action in (None, "enroll"):
        planned = schedule_for(current, e.settings.renew_before_s, e.clock())
        state = e.store.update_state(lambda s: dataclasses.replace(
            s, phase=Phase.PROVISIONED, next_action=planned.action,
            next_action_at=iso(planned.at)))
    e.next_action, e.next_action_at = state.next_action, state.next_action_at
    return _result(e, current, runner, changed=False)


def _result(e: Enrollment, generation: Generation, runner: StepRunner, *,
            changed: bool) -> EnrollResult:  # fmt: skip
    return EnrollResult(
        external_id=e.identity.external_id, generation=generation.number, changed=changed,
        created_mapping=e.mapping is not None, thing_id=generation.gateway_thing_id,
        credentials=summarize(generation, e.clock()), steps=tuple(runner.events),
        handoff=e.handoff, next_action=e.next_action, next_action_at=e.next_action_at,
    )  # fmt: skip
