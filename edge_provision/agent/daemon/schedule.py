"""The supervisor's brain: a pure decision function over its states (no I/O).

``decide(machine, event, policy, rng) -> Decision`` takes the daemon's in-memory state
(:class:`Machine`), one :class:`Event` (start, timer due, SIGUSR1, a child exited, a
reload) carrying a :class:`Snapshot` of ``state.json`` and the wall-clock time, and says
what to do next: start a child command now, or sleep for so long, and which one-line
status to show. :mod:`edge_provision.agent.daemon.supervisor` is the thin I/O loop around it.

States (:class:`~edge_provision.agent.store.Phase`, shared with ``state.json``)::

    unprovisioned --> enrolling --> provisioned <--> renewing
          ^              |               |               |
          +--transient---+               +---transient---+   (backoff, retry forever)
    failed-permanent <-- exit 1/2/77 from either child; retried every permanent_retry_s

Child exit codes: 0 ok; 75 temporary, a crash (exit 1 without a JSON error document,
any other code) or a death by signal: exponential backoff with full jitter; 1 (with an
error document), 2 and 77: a human must act, retry slowly (every ``permanent_retry_s``,
but at least every :data:`PERMANENT_RECHECK_MAX_S`) and say why. Exit 75 whose error
document gives the reason ``busy`` means another ``edge-provision`` process (a person's
``enroll``) held the state lock: never an error, retried as soon as a transient failure.
"""

from __future__ import annotations

import dataclasses
import math
import signal
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Optional

from edge_provision.agent.backoff import Backoff, UniformSource
from edge_provision.agent.store.model import Phase, State
from edge_provision.clock import parse_iso
from edge_provision.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_NOPERM, EXIT_OK, EXIT_TEMPFAIL

__all__ = [
    "BUSY_REASON",
    "PERMANENT_RECHECK_MAX_S",
    "ChildResult",
    "Decision",
    "Event",
    "EventKind",
    "Machine",
    "Outcome",
    "Policy",
    "Snapshot",
    "classify",
    "decide",
    "human_delay",
]

MIN_RERUN_S = 60.0  # after a success, never rerun sooner even if state.json says "due"
PERMANENT_RECHECK_MAX_S = 3600.0  # a failure a person must fix is re-checked at least hourly
BUSY_REASON = "busy"  # the error reason of a child that found the state lock held
_MAX_ERROR_CHARS = 300


class Outcome(str, Enum):
    """What a child's exit means for the schedule."""

    OK = "ok"
    TRANSIENT = "transient"
    BUSY = "busy"  # another edge-provision process held the state lock: retry soon
    PERMANENT = "permanent"


class EventKind(str, Enum):
    """Why the loop asks :func:`decide` what to do."""

    START = "start"
    DUE = "due"  # the timer set by the previous decision ran out
    CHECK_NOW = "check-now"  # SIGUSR1
    CHILD_EXITED = "child-exited"
    RELOADED = "reloaded"  # SIGHUP, new settings in force
    RELOAD_FAILED = "reload-failed"  # SIGHUP, bad settings, old ones kept
    RENEW_NOW = "renew-now"  # control command "renew": ``renew --force`` now
    REPROVISION_NOW = "reprovision-now"  # control command "reprovision": ``enroll --force`` now


@dataclass(frozen=True)
class Snapshot:
    """What the daemon reads from ``state.json`` (written by the child commands)."""

    current_generation: Optional[int] = None
    next_action: Optional[str] = None  # "enroll" | "renew" | "check"
    next_action_at: Optional[datetime] = None  # aware, UTC

    @classmethod
    def from_state(cls, state: State) -> Snapshot:
        """The scheduling-relevant part of a :class:`State`."""
        return cls(state.current_generation, state.next_action, parse_iso(state.next_action_at))

    @property
    def command(self) -> str:
        """The child command that moves this state forward: ``enroll`` or ``renew``."""
        if self.current_generation is None or self.next_action == "enroll":
            return "enroll"
        return "renew"

    def is_due(self, now: datetime) -> bool:
        """True when there is no generation, or the scheduled action's time has come."""
        if self.command == "enroll":
            return True
        if self.next_action not in ("renew", "check"):
            return False
        return self.next_action_at is None or self.next_action_at <= now


@dataclass(frozen=True)
class ChildResult:
    """How a child command ended. ``returncode`` < 0: killed by that signal."""

    command: str
    returncode: int
    error_kind: Optional[str] = None
    error_message: Optional[str] = None
    has_error_doc: bool = False
    timed_out_s: Optional[float] = None
    error_reason: Optional[str] = None

    @property
    def outcome(self) -> Outcome:
        """See :func:`classify`; a temporary failure for the reason ``busy`` is BUSY."""
        outcome = classify(self.returncode, self.has_error_doc)
        if outcome is Outcome.TRANSIENT and self.error_reason == BUSY_REASON:
            return Outcome.BUSY
        return outcome

    @property
    def description(self) -> str:
        """``<kind>: <message>`` for the status line (never stdout wholesale)."""
        if self.timed_out_s is not None:
            return f"{self.command} did not finish within {self.timed_out_s:g} s and was stopped"
        if self.error_message:
            return _one_line(f"{self.error_kind or 'Error'}: {self.error_message}")
        if self.returncode < 0:
            return f"{self.command} was killed by {_signal_name(-self.returncode)}"
        if self.returncode == EXIT_CONFIG:
            return f"{self.command} exited with code 2 (usage or configuration error; see the log)"
        if self.returncode == EXIT_FAILED and not self.has_error_doc:
            return f"{self.command} crashed (exit code 1; see the log)"
        return f"{self.command} exited with code {self.returncode}"


def classify(returncode: int, has_error_doc: bool = True) -> Outcome:
    """0 ok; 2, 77 and 1 with an error document permanent; everything else transient.

    Exit 1 *without* ``{"ok": false, "error": ...}`` on stdout is an uncaught exception
    (Python's own exit code), a crash, hence transient like a death by signal.
    """
    if returncode == EXIT_OK:
        return Outcome.OK
    if returncode == EXIT_TEMPFAIL:
        return Outcome.TRANSIENT
    if returncode in (EXIT_CONFIG, EXIT_NOPERM):
        return Outcome.PERMANENT
    if returncode == EXIT_FAILED and has_error_doc:
        return Outcome.PERMANENT
    return Outcome.TRANSIENT


@dataclass(frozen=True)
class Event:
    """One input to :func:`decide`; ``now`` is wall-clock UTC."""

    kind: EventKind
    now: datetime
    snapshot: Snapshot = Snapshot()
    child: Optional[ChildResult] = None
    note: Optional[str] = None  # RELOAD_FAILED: what was wrong


@dataclass(frozen=True)
class Policy:
    """The settings the schedule depends on."""

    backoff: Backoff
    permanent_retry_s: float
    min_rerun_s: float = MIN_RERUN_S


@dataclass(frozen=True)
class Machine:
    """The daemon's in-memory state between events."""

    state: Phase = Phase.UNPROVISIONED
    attempt: int = 0  # consecutive transient failures
    retry_pending: bool = False  # the timer re-runs a failed command
    base_status: str = "starting"
    note: Optional[str] = None  # appended to the status (a failed reload)

    @property
    def status(self) -> str:
        """The STATUS= line: base status plus the note, if any."""
        return f"{self.base_status}; {self.note}" if self.note else self.base_status


@dataclass(frozen=True)
class Decision:
    """What the loop does next.

    ``run``: start this child command now, with ``args`` after it (``--force``), no timer
    while it runs. Otherwise, unless
    ``keep_timer``, sleep ``delay_s`` (``math.inf``: until a signal) and then send a
    ``DUE`` event; ``wall_clock`` timers follow a wall-clock time and are re-checked
    at least hourly, in case the clock is set (NTP at boot) meanwhile. ``outcome`` is how
    the schedule read the child that just exited (CHILD_EXITED events only).
    """

    machine: Machine
    run: Optional[str] = None
    delay_s: float = math.inf
    wall_clock: bool = False
    keep_timer: bool = False
    args: tuple[str, ...] = ()
    outcome: Optional[Outcome] = None

    @property
    def status(self) -> str:
        """The STATUS= line."""
        return self.machine.status


def decide(machine: Machine, event: Event, policy: Policy, rng: UniformSource) -> Decision:
    """The next action for ``event`` in ``machine``; pure (randomness from ``rng``)."""
    kind = event.kind
    if kind is EventKind.RELOAD_FAILED:
        note = f"config reload failed, keeping the previous settings: {_one_line(event.note or '')}"
        return Decision(dataclasses.replace(machine, note=note), keep_timer=True)
    if kind is EventKind.RELOADED:
        machine = dataclasses.replace(machine, note=None)
        if machine.state is Phase.FAILED_PERMANENT:  # the fix may be in the new settings
            return _evaluate(machine, event, force=True)
        return Decision(machine, keep_timer=True)
    if kind is EventKind.CHILD_EXITED:
        if event.child is None:
            raise ValueError("a CHILD_EXITED event needs its ChildResult")
        return _after_child(machine, event, event.child, policy, rng)
    if kind is EventKind.RENEW_NOW:
        return _start(machine, event.snapshot, force_flag=True)
    if kind is EventKind.REPROVISION_NOW:
        return _start(machine, event.snapshot, reprovision=True)
    force = kind is EventKind.CHECK_NOW or (kind is EventKind.DUE and machine.retry_pending)
    return _evaluate(machine, event, force=force)


def _evaluate(machine: Machine, event: Event, *, force: bool) -> Decision:
    """Run what is due (or anything, when ``force``), else sleep until it is due."""
    snap, now = event.snapshot, event.now
    if force or snap.is_due(now):
        return _start(machine, snap)
    idle = dataclasses.replace(machine, state=Phase.PROVISIONED, attempt=0, retry_pending=False,
                               base_status=_provisioned_status(snap))
    if snap.next_action_at is None:
        return Decision(idle, delay_s=math.inf, wall_clock=True)
    delay = max(0.0, (snap.next_action_at - now).total_seconds())
    return Decision(idle, delay_s=delay, wall_clock=True)


def _start(machine: Machine, snap: Snapshot, *, force_flag: bool = False,
           reprovision: bool = False) -> Decision:
    """Run the command ``snap`` calls for; ``force_flag``/``reprovision``: a control command.

    ``renew`` becomes ``renew --force``; ``reprovision`` is ``enroll --force`` (plain
    ``enroll`` while there is no generation to replace).
    """
    command = "enroll" if reprovision else snap.command
    has_gen = snap.current_generation is not None
    forced = (force_flag and command == "renew") or (reprovision and has_gen)
    args = ("--force",) if forced else ()
    retry = f" (retry {machine.attempt})" if machine.attempt else ""
    if reprovision and has_gen:
        state, text = Phase.ENROLLING, f"reprovisioning: generation {snap.current_generation}"
    elif command == "enroll":
        state, text = Phase.ENROLLING, f"enrolling{retry}"
    else:
        state, text = Phase.RENEWING, f"renewing: generation {snap.current_generation}{retry}"
    return Decision(dataclasses.replace(machine, state=state, base_status=text), run=command,
                    args=args)


def _after_child(
    machine: Machine, event: Event, child: ChildResult, policy: Policy, rng: UniformSource
) -> Decision:
    snap = event.snapshot
    outcome = child.outcome
    if outcome is Outcome.OK and snap.current_generation is None:
        outcome = Outcome.TRANSIENT
        child = dataclasses.replace(
            child, error_kind="ProtocolError",
            error_message=f"{child.command} succeeded but no current generation was recorded",
        )
    if outcome is Outcome.OK:
        done = dataclasses.replace(machine, state=Phase.PROVISIONED, attempt=0,
                                   retry_pending=False, base_status=_provisioned_status(snap))
        if snap.next_action not in ("renew", "check", "enroll"):
            return Decision(done, delay_s=math.inf, wall_clock=True, outcome=outcome)
        at = snap.next_action_at
        delay = math.inf if at is None else (at - event.now).total_seconds()
        return Decision(done, delay_s=max(delay, policy.min_rerun_s), wall_clock=True,
                        outcome=outcome)
    if outcome is Outcome.PERMANENT:
        delay = min(policy.permanent_retry_s, PERMANENT_RECHECK_MAX_S)
        text = f"failed: {child.description}; retrying in {human_delay(delay)}"
        failed = dataclasses.replace(machine, state=Phase.FAILED_PERMANENT, attempt=0,
                                     retry_pending=True, base_status=text)
        return Decision(failed, delay_s=delay, outcome=outcome)
    delay = policy.backoff.delay_s(machine.attempt, rng)
    retry = machine.attempt + 1
    when = f"retry {retry} in {human_delay(delay)}: {child.description}"
    head = f"provisioned: generation {snap.current_generation}; "
    if snap.current_generation is None:
        state, head = Phase.UNPROVISIONED, ""
    else:
        state = Phase.PROVISIONED
    if outcome is Outcome.BUSY:
        text = f"{head}{child.command} waits for another edge-provision run (state lock), {when}"
    elif snap.current_generation is None:
        text = f"waiting for network, {when}"
    else:
        text = f"{head}{child.command} failed, {when}"
    waiting = dataclasses.replace(machine, state=state, attempt=retry, retry_pending=True,
                                  base_status=text)
    return Decision(waiting, delay_s=delay, outcome=outcome)


def _provisioned_status(snap: Snapshot) -> str:
    head = f"provisioned: generation {snap.current_generation}"
    what = {"renew": "renewal", "check": "check", "enroll": "enrollment"}.get(
        snap.next_action or ""
    )
    if what is None:
        return f"{head}, no renewal scheduled"
    if snap.next_action_at is None:
        return f"{head}, {what} due now"
    return f"{head}, next {what} {snap.next_action_at.strftime('%Y-%m-%d %H:%M')} UTC"


def human_delay(seconds: float) -> str:
    """``0.4 s``, ``41 s``, ``60 min``, ``5 h``, ``3 d``: a delay for people."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds <= 5 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds <= 3 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _one_line(text: str) -> str:
    """Whitespace collapsed, at most a few hundred characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_ERROR_CHARS else flat[: _MAX_ERROR_CHARS - 1] + "…"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
