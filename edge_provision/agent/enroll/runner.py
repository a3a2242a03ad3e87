"""The step runner: journal each step before it runs, report progress, map errors.

A step is a row of a table (:class:`StepDef`): ``begin(ctx)`` says what the step is about
to do (a :class:`Begin`: journalled as ``started`` and reported *before* anything
happens), or that it does not apply (an :class:`Outcome`, reported without running), or
``None`` (nothing to announce); ``run(ctx)`` does the work and returns its
:class:`Outcome` (``done``, ``skipped``, or ``failed`` for a failure that does not stop
the run), journalled and reported in turn. ``skipped`` is reported, never journalled.

A step that raises an :class:`~edge_provision.errors.EdgeProvisionError` stops the run
(:meth:`StepRunner.failures`): the runner adds the hint of the error's ``reason``
(:data:`HINTS`), reports and journals the failure, sets ``State.last_error``, the phase and
the next attempt, and sets ``exc.step``. Every event goes to the progress callback
and into :attr:`StepRunner.events`, so the text printer and ``--json`` see the same list.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Callable, Generic, Optional, TypeVar, Union

from edge_provision import deadline
from edge_provision.agent.store import Phase, State, Store
from edge_provision.clock import iso, later
from edge_provision.errors import EdgeProvisionError, Reason, RetryClass, TransientError

__all__ = [
    "HINTS",
    "Begin",
    "Outcome",
    "Step",
    "StepDef",
    "StepEvent",
    "StepRunner",
    "StepStatus",
]

logger = logging.getLogger(__name__)

C = TypeVar("C")


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

    step: Step
    status: StepStatus
    message: str
    url: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` shape."""
        return {"step": self.step.value, "status": self.status.value, "message": self.message,
                "url": self.url}  # fmt: skip


@dataclass(frozen=True)
class Begin:
    """What a step is about to do (and the URL it will call)."""

    message: str
    url: Optional[str] = None


@dataclass(frozen=True)
class Outcome:
    """How a step ended; ``detail`` goes into the journal (never a secret)."""

    status: StepStatus
    message: str
    url: Optional[str] = None
    detail: Mapping[str, str] = field(default_factory=dict)


def done(message: str, url: str | None = None, **detail: str) -> Outcome:
    """A ``done`` outcome."""
    return Outcome(StepStatus.DONE, message, url, detail)


def skipped(message: str) -> Outcome:
    """A ``skipped`` outcome."""
    return Outcome(StepStatus.SKIPPED, message)


@dataclass(frozen=True)
class StepDef(Generic[C]):
    """One row of a step table. ``journal=False``: the step journals itself (hand-off)."""

    step: Step
    begin: Callable[[C], Union[Begin, Outcome, None]]
    run: Callable[[C], Outcome]
    journal: bool = True


_ORIGINAL_KEY = (
    "the platform holds external_id {external_id} with another external_key: enroll with "
    "the original external_key (EDGE_PROVISION_EXTERNAL_KEY or --external-key), or have an "
    "operator delete the bootstrap config of {external_id} on the platform, then run enroll "
    "again"
)

HINTS: Mapping[Reason, str] = {
    Reason.KEY_MISMATCH: _ORIGINAL_KEY,
    Reason.CONFLICT: _ORIGINAL_KEY,
}
"""What to do about a failed enrollment, by reason (``{external_id}`` is filled in)."""


class StepRunner:
    """Runs step tables under the store lock the caller holds; see the module docstring."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime],
                 progress: Callable[[StepEvent], None] | None,
                 permanent_retry_s: float) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.progress = progress
        self.permanent_retry_s = permanent_retry_s
        self.events: list[StepEvent] = []
        self.step = Step.IDENTITY
        self._journal = True
        self._held: list[tuple[str, str, Mapping[str, str], str]] | None = None

    def hold(self) -> None:
        """Keep journal entries in memory from now on: a run that changes nothing writes
        nothing. :meth:`release` writes them, :meth:`drop` forgets them; a failure writes
        them with the failure."""
        self._held = []

    def release(self) -> None:
        """Write the held journal entries (one save) and journal directly again."""
        held, self._held = self._held or [], None
        if held:
            self.store.update_state(lambda s: _replay(s, held))

    def drop(self) -> None:
        """Forget the held journal entries (nothing changed) and journal directly again."""
        self._held = None

    def perform(self, ctx: C, spec: StepDef[C]) -> None:
        """Announce ``spec``'s step (journalled first), run it, report its outcome.

        A run past its deadline (:func:`edge_provision.deadline.current`) stops here.
        """
        self.step, self._journal = spec.step, spec.journal
        due = deadline.current()
        if due is not None and due.expired():
            raise due.error(f"before step {spec.step.value}")
        first = spec.begin(ctx)
        if isinstance(first, Outcome):
            self._finish(first)
            return
        if first is not None:
            self.started(first)
        self._finish(spec.run(ctx))

    def started(self, begin: Begin) -> None:
        """Journal and report that the running step starts (another part of) its work."""
        if self._journal:
            self._record(StepStatus.STARTED.value, {"url": begin.url} if begin.url else {})
        self._announce(StepEvent(self.step, StepStatus.STARTED, begin.message, begin.url))

    def skip(self, step: Step, message: str) -> None:
        """Report ``step`` as skipped without running it."""
        self.step = step
        self._announce(StepEvent(step, StepStatus.SKIPPED, message))

    @contextlib.contextmanager
    def failures(self, external_id: Callable[[], str | None]) -> Iterator[None]:
        """Map, record and re-raise an error of the steps run inside (see module docstring)."""
        try:
            yield
        except EdgeProvisionError as exc:
            template = HINTS.get(exc.reason)
            subject = external_id()
            if exc.hint is None and template is not None and subject is not None:
                exc.hint = template.format(external_id=subject)
            self._record_failure(exc)
            if exc.step is None:  # a nested run (renew -> enroll) keeps the inner step
                exc.step = self.step.value
            raise

    def _finish(self, outcome: Outcome) -> None:
        if self._journal and outcome.status is not StepStatus.SKIPPED:
            detail = dict(outcome.detail)
            if outcome.url:
                detail["url"] = outcome.url
            self._record(outcome.status.value, detail)
        self._announce(StepEvent(self.step, outcome.status, outcome.message, outcome.url))

    def _record(self, status: str, detail: Mapping[str, str]) -> None:
        at = iso(self.clock())
        if self._held is not None:
            self._held.append((self.step.value, status, dict(detail), at))
            return
        self.store.update_state(lambda s: s.record(self.step.value, status, detail, at=at))

    def _announce(self, event: StepEvent) -> None:
        self.events.append(event)
        if self.progress is not None:
            self.progress(event)

    def _record_failure(self, exc: EdgeProvisionError) -> None:
        """Journal the failed step and set last_error, phase and the next planned action."""
        now = self.clock()
        step = self.step.value
        self._announce(StepEvent(self.step, StepStatus.FAILED, str(exc)))
        try:
            has_current = self.store.current_generation() is not None
            if exc.retry_class is RetryClass.TRANSIENT:
                phase = Phase.PROVISIONED if has_current else Phase.UNPROVISIONED
                wait = exc.retry_after_s if isinstance(exc, TransientError) else None
                next_at = later(now, wait or 0.0)
                counter = "transient_failures"
            else:
                phase = Phase.PROVISIONED if has_current else Phase.FAILED_PERMANENT
                next_at = later(now, self.permanent_retry_s)
                counter = "permanent_failures"

            held, self._held = self._held or [], None

            def change(state: State) -> State:
                state = _replay(state, held).record(step, "failed",
                                     {"error": exc.kind, "reason": exc.reason.value},
                                     at=iso(now))  # fmt: skip
                state = state.with_error(exc.kind, f"step {step}: {exc}", at=iso(now))
                return dataclasses.replace(state.bump(counter), phase=phase,
                                           next_action="enroll", next_action_at=iso(next_at))

            self.store.update_state(change)
        except EdgeProvisionError as store_exc:  # the original error matters more
            logger.error("cannot record the failure error=%s", store_exc)


def _replay(state: State, held: list[tuple[str, str, Mapping[str, str], str]]) -> State:
    """``state`` with the held journal entries appended in order."""
    for step, status, detail, at in held:
        state = state.record(step, status, detail, at=at)
    return state
