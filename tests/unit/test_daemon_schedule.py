"""The supervisor's pure decision function: state + event -> next action, delay, status."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_provision.agent.backoff import Backoff
from edge_provision.agent.daemon.schedule import (
    BUSY_REASON,
    MIN_RERUN_S,
    PERMANENT_RECHECK_MAX_S,
    ChildResult,
    Decision,
    Event,
    EventKind,
    Machine,
    Outcome,
    Policy,
    Snapshot,
    classify,
    decide,
    human_delay,
)
from edge_provision.agent.store import Phase, State

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
POLICY = Policy(Backoff(initial_s=2.0, cap_s=300.0), permanent_retry_s=3600.0)
EMPTY = Snapshot()
GEN2_LATER = Snapshot(2, "renew", LATER)
GEN2_PAST = Snapshot(2, "renew", NOW - timedelta(minutes=1))


class _Top:
    """An rng that always returns the top of the range (makes backoff delays exact)."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _decide(machine: Machine, kind: EventKind, snap: Snapshot = EMPTY,
            child: ChildResult | None = None, note: str | None = None) -> Decision:
    return decide(machine, Event(kind, NOW, snap, child, note), POLICY, _Top())


def _exited(code: int, kind: str | None = None, message: str | None = None,
            command: str = "enroll") -> ChildResult:
    return ChildResult(command, code, kind, message, has_error_doc=kind is not None)


@pytest.mark.parametrize(
    ("code", "has_doc", "outcome"),
    [
        (0, True, Outcome.OK),
        (75, True, Outcome.TRANSIENT),
        (75, False, Outcome.TRANSIENT),
        (77, True, Outcome.PERMANENT),
        (2, False, Outcome.PERMANENT),
        (2, True, Outcome.PERMANENT),
        (1, True, Outcome.PERMANENT),
        (1, False, Outcome.TRANSIENT),  # uncaught exception: a crash
        (-9, False, Outcome.TRANSIENT),
        (-15, False, Outcome.TRANSIENT),
        (120, False, Outcome.TRANSIENT),
        (137, False, Outcome.TRANSIENT),
    ],
)
def test_exit_code_table(code: int, has_doc: bool, outcome: Outcome) -> None:
    """0 ok; 75, crashes and signals transient; 1 (with an error document), 2, 77 permanent."""
    assert classify(code, has_doc) is outcome


@pytest.mark.parametrize(
    ("snap", "run", "state", "status"),
    [
        (EMPTY, "enroll", Phase.ENROLLING, "enrolling"),
        (GEN2_PAST, "renew", Phase.RENEWING, "renewing: generation 2"),
        (Snapshot(2, "check", None), "renew", Phase.RENEWING, "renewing: generation 2"),
        (Snapshot(2, "enroll", LATER), "enroll", Phase.ENROLLING, "enrolling"),
        (GEN2_LATER, None, Phase.PROVISIONED,
         "provisioned: generation 2, next renewal 2026-12-01 10:00 UTC"),
        (Snapshot(3, "check", LATER), None, Phase.PROVISIONED,
         "provisioned: generation 3, next check 2026-12-01 10:00 UTC"),
        (Snapshot(2, None, None), None, Phase.PROVISIONED,
         "provisioned: generation 2, no renewal scheduled"),
    ],
)
def test_start_table(snap: Snapshot, run: str | None, state: Phase, status: str) -> None:
    """At start: enroll without a generation, renew when due, else sleep until it is."""
    decision = _decide(Machine(), EventKind.START, snap)
    assert (decision.run, decision.machine.state, decision.status) == (run, state, status)


def test_sleep_until_the_scheduled_wall_clock_time() -> None:
    """Not due: the delay is the time to next_action_at, on the wall clock."""
    decision = _decide(Machine(), EventKind.START, GEN2_LATER)
    assert decision.delay_s == (LATER - NOW).total_seconds()
    assert decision.wall_clock and not decision.keep_timer
    idle = _decide(Machine(), EventKind.START, Snapshot(2, None, None))
    assert math.isinf(idle.delay_s) and idle.wall_clock


def test_transient_failures_back_off_exponentially_and_say_so() -> None:
    """75 while enrolling: unprovisioned, "waiting for network, retry n in d: error", forever."""
    machine = _decide(Machine(), EventKind.START).machine
    delays, statuses = [], []
    for _ in range(10):
        child = _exited(75, "ServiceUnavailable", "connection refused by 127.0.0.1:9")
        decision = _decide(machine, EventKind.CHILD_EXITED, EMPTY, child)
        assert decision.run is None and decision.machine.state is Phase.UNPROVISIONED
        delays.append(decision.delay_s)
        statuses.append(decision.status)
        machine = _decide(decision.machine, EventKind.DUE).machine  # the retry starts
        assert machine.state is Phase.ENROLLING
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert statuses[0] == (
        "waiting for network, retry 1 in 2.0 s: ServiceUnavailable: connection refused by "
        "127.0.0.1:9"
    )
    assert statuses[2].startswith("waiting for network, retry 3 in 8.0 s: ")
    assert statuses[8].startswith("waiting for network, retry 9 in 5 min: ")
    assert machine.base_status == "enrolling (retry 10)"


def test_transient_delay_uses_full_jitter() -> None:
    """With a real rng the delay is anywhere in [0, ceiling]."""
    machine = Machine(state=Phase.ENROLLING, attempt=3)
    delays = {
        decide(machine, Event(EventKind.CHILD_EXITED, NOW, EMPTY, _exited(75)), POLICY,
               random.Random(seed)).delay_s
        for seed in range(50)
    }
    assert all(0 <= d <= 16 for d in delays) and min(delays) < 4 and max(delays) > 12


@pytest.mark.parametrize(
    ("child", "status"),
    [
        (_exited(77, "Unauthorized", "token refused: check server.token"),
         "failed: Unauthorized: token refused: check server.token; retrying in 60 min"),
        (_exited(2, "ConfigError", "config.toml:3: server.url: expected a URL"),
         "failed: ConfigError: config.toml:3: server.url: expected a URL; retrying in 60 min"),
        (_exited(2), "failed: enroll exited with code 2 (usage or configuration error; see the "
         "log); retrying in 60 min"),
        (_exited(1, "Rejected", "layout rejected\nby the server"),
         "failed: Rejected: layout rejected by the server; retrying in 60 min"),
    ],
)
def test_permanent_failures_retry_slowly_and_say_why(child: ChildResult, status: str) -> None:
    """1/2/77: failed-permanent, retried every permanent_retry_s, the reason in the status."""
    decision = _decide(Machine(state=Phase.ENROLLING, attempt=4), EventKind.CHILD_EXITED,
                       EMPTY, child)
    assert decision.machine.state is Phase.FAILED_PERMANENT
    assert decision.delay_s == 3600.0 and not decision.wall_clock
    assert decision.status == status
    assert decision.machine.attempt == 0 and decision.machine.retry_pending
    retry = _decide(decision.machine, EventKind.DUE)
    assert (retry.run, retry.machine.state) == ("enroll", Phase.ENROLLING)


@pytest.mark.parametrize("permanent_retry_s", [3600.0, 7200.0, 7 * 86400.0])
def test_failures_a_person_must_fix_are_rechecked_at_least_hourly(
        permanent_retry_s: float) -> None:  # fmt: skip
    """permanent_retry above an hour (the setting allows 7 d): the daemon still retries hourly."""
    policy = Policy(Backoff(initial_s=2.0, cap_s=300.0), permanent_retry_s=permanent_retry_s)
    child = _exited(77, "Unauthorized", "token refused")
    decision = decide(Machine(state=Phase.ENROLLING), Event(EventKind.CHILD_EXITED, NOW, EMPTY,
                                                            child), policy, _Top())
    assert decision.delay_s == PERMANENT_RECHECK_MAX_S == 3600.0
    assert decision.status.endswith("; retrying in 60 min")
    assert decision.outcome is Outcome.PERMANENT


def test_a_held_state_lock_is_retried_soon_and_said_so() -> None:
    """Exit 75 with reason "busy" (a person's enroll held the lock): backoff, never permanent."""
    busy = ChildResult("enroll", 75, "LockBusy", "the state lock is held by pid 4242 (enroll)",
                       has_error_doc=True, error_reason=BUSY_REASON)
    assert busy.outcome is Outcome.BUSY
    decision = _decide(Machine(state=Phase.ENROLLING), EventKind.CHILD_EXITED, EMPTY, busy)
    assert decision.outcome is Outcome.BUSY and decision.delay_s == 2.0
    assert decision.machine.state is Phase.UNPROVISIONED and decision.machine.retry_pending
    assert decision.status == (
        "enroll waits for another edge-provision run (state lock), retry 1 in 2.0 s: "
        "LockBusy: the state lock is held by pid 4242 (enroll)")
    renew = dataclasses.replace(busy, command="renew")
    held = _decide(Machine(state=Phase.RENEWING), EventKind.CHILD_EXITED, GEN2_PAST, renew)
    assert held.machine.state is Phase.PROVISIONED
    assert held.status.startswith("provisioned: generation 2; renew waits for another "
                                  "edge-provision run (state lock), retry 1 in 2.0 s")
    assert _decide(held.machine, EventKind.DUE, GEN2_PAST).run == "renew"


@pytest.mark.parametrize(
    ("child", "fragment"),
    [
        (ChildResult("enroll", -9), "enroll was killed by SIGKILL"),
        (ChildResult("renew", 1), "renew crashed (exit code 1; see the log)"),
        (ChildResult("enroll", 120), "enroll exited with code 120"),
        (ChildResult("enroll", -15, timed_out_s=900.0),
         "enroll did not finish within 900 s and was stopped"),
    ],
)
def test_crashes_and_signals_are_transient(child: ChildResult, fragment: str) -> None:
    """A child killed by a signal, timed out or crashing is retried with backoff."""
    decision = _decide(Machine(state=Phase.ENROLLING), EventKind.CHILD_EXITED, EMPTY, child)
    assert decision.machine.state is Phase.UNPROVISIONED
    assert decision.status.endswith(fragment)
    assert decision.delay_s == 2.0


def test_success_goes_to_provisioned_and_sleeps_until_the_child_schedule() -> None:
    """Exit 0: provisioned, backoff reset, sleep until next_action_at written by the child."""
    machine = Machine(state=Phase.ENROLLING, attempt=5, retry_pending=True)
    decision = _decide(machine, EventKind.CHILD_EXITED, GEN2_LATER, _exited(0))
    assert decision.machine == Machine(
        Phase.PROVISIONED, 0, False, "provisioned: generation 2, next renewal 2026-12-01 10:00 UTC"
    )
    assert decision.delay_s == (LATER - NOW).total_seconds() and decision.wall_clock


def test_success_never_reruns_at_once() -> None:
    """A child that succeeds but leaves its action due does not cause a tight loop."""
    decision = _decide(Machine(state=Phase.RENEWING), EventKind.CHILD_EXITED, GEN2_PAST,
                       _exited(0, command="renew"))
    assert decision.run is None and decision.delay_s == MIN_RERUN_S
    unscheduled = _decide(Machine(state=Phase.RENEWING), EventKind.CHILD_EXITED,
                          Snapshot(2, None, None), _exited(0, command="renew"))
    assert math.isinf(unscheduled.delay_s)


def test_success_without_a_generation_is_retried() -> None:
    """Exit 0 but no current generation on disk: treated as transient, with a clear reason."""
    decision = _decide(Machine(state=Phase.ENROLLING), EventKind.CHILD_EXITED, EMPTY, _exited(0))
    assert decision.machine.state is Phase.UNPROVISIONED
    assert "enroll succeeded but no current generation was recorded" in decision.status


def test_renewal_failures_keep_the_gateway_provisioned() -> None:
    """A transient renew failure: still provisioned (credentials valid), retry with backoff."""
    machine = Machine(state=Phase.RENEWING, attempt=1, retry_pending=True)
    child = _exited(75, "ServiceUnavailable", "503 from certs", command="renew")
    decision = _decide(machine, EventKind.CHILD_EXITED, GEN2_PAST, child)
    assert decision.machine.state is Phase.PROVISIONED
    assert decision.status == (
        "provisioned: generation 2; renew failed, retry 2 in 4.0 s: ServiceUnavailable: 503 "
        "from certs"
    )
    retry = _decide(decision.machine, EventKind.DUE, GEN2_PAST)
    assert (retry.run, retry.status) == ("renew", "renewing: generation 2 (retry 2)")


def test_timer_without_a_pending_retry_rereads_the_schedule() -> None:
    """An hourly wall-clock re-check that finds nothing due just sleeps again."""
    idle = _decide(Machine(), EventKind.START, GEN2_LATER).machine
    again = _decide(idle, EventKind.DUE, GEN2_LATER)
    assert again.run is None and again.delay_s == (LATER - NOW).total_seconds()
    due = _decide(idle, EventKind.DUE, GEN2_PAST)
    assert due.run == "renew"


@pytest.mark.parametrize(
    ("snap", "run"), [(GEN2_LATER, "renew"), (Snapshot(2, None, None), "renew"), (EMPTY, "enroll")]
)
def test_sigusr1_runs_the_child_now(snap: Snapshot, run: str) -> None:
    """CHECK_NOW runs renew (or enroll) at once, due or not, even while failed."""
    for machine in (Machine(state=Phase.PROVISIONED), Machine(state=Phase.FAILED_PERMANENT)):
        assert _decide(machine, EventKind.CHECK_NOW, snap).run == run


def test_reload_failure_is_shown_and_changes_nothing_else() -> None:
    """A bad config on SIGHUP: same timer, same state, the problem appended to the status."""
    machine = Machine(Phase.PROVISIONED, base_status="provisioned: generation 2, next renewal x")
    bad = _decide(machine, EventKind.RELOAD_FAILED, GEN2_LATER,
                  note="config.toml:4:1: invalid TOML:\n expected '='")
    assert bad.keep_timer and bad.run is None
    assert bad.machine.state is Phase.PROVISIONED
    assert bad.status == ("provisioned: generation 2, next renewal x; config reload failed, "
                          "keeping the previous settings: config.toml:4:1: invalid TOML: "
                          "expected '='")
    good = _decide(bad.machine, EventKind.RELOADED, GEN2_LATER)
    assert good.keep_timer and good.status == "provisioned: generation 2, next renewal x"


def test_reload_retries_a_permanent_failure_at_once() -> None:
    """The fix for a failed-permanent state is usually in the config: SIGHUP retries now."""
    failed = _decide(Machine(state=Phase.ENROLLING), EventKind.CHILD_EXITED, EMPTY,
                     _exited(77, "Unauthorized", "401")).machine
    decision = _decide(failed, EventKind.RELOADED)
    assert (decision.run, decision.machine.state) == ("enroll", Phase.ENROLLING)


def test_child_event_needs_a_child() -> None:
    """CHILD_EXITED without its ChildResult is a programming error."""
    with pytest.raises(ValueError, match="ChildResult"):
        _decide(Machine(), EventKind.CHILD_EXITED)


def test_long_error_messages_are_cut_to_one_short_line() -> None:
    """Whatever the child says, the status stays one line of bounded length."""
    child = _exited(75, "ServiceUnavailable", "x" * 5000 + "\nsecond line")
    status = _decide(Machine(), EventKind.CHILD_EXITED, EMPTY, child).status
    assert "\n" not in status and len(status) < 400 and status.endswith("…")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0 s"), (0.4, "0.4 s"), (9.94, "9.9 s"), (41.2, "41 s"), (119, "119 s"),
     (120, "2 min"), (3600, "60 min"), (18000, "300 min"), (18001, "5 h"), (86400, "24 h"),
     (3 * 86400 + 1, "3 d"), (-1, "0.0 s")],
)
def test_human_delay(seconds: float, text: str) -> None:
    """Delays in the status line are short and readable."""
    assert human_delay(seconds) == text




def test_snapshot_from_state() -> None:
    """The daemon reads only what it schedules by from the persisted State."""
    state = State(phase=Phase.PROVISIONED, current_generation=4, next_action="check",
                  next_action_at="2026-12-01T10:00:00+00:00")
    assert Snapshot.from_state(state) == Snapshot(4, "check", LATER)
    assert Snapshot.from_state(State()).command == "enroll"


_CODES = st.sampled_from([0, 1, 2, 75, 77, -9, 137])


@given(codes=st.lists(st.tuples(_CODES, st.booleans(), st.booleans()), max_size=40),
       seed=st.integers(min_value=0, max_value=2**32))
def test_any_run_of_outcomes_keeps_the_invariants(
    codes: list[tuple[int, bool, bool]], seed: int
) -> None:
    """Property: delays are >= 0, transient ones <= cap, the daemon never gives up."""
    rng = random.Random(seed)
    machine = decide(Machine(), Event(EventKind.START, NOW, EMPTY), POLICY, rng).machine
    for code, has_doc, has_generation in codes:
        snap = GEN2_LATER if has_generation else EMPTY
        child = ChildResult("enroll", code, "Kind" if has_doc else None,
                            "msg" if has_doc else None, has_doc)
        decision = decide(machine, Event(EventKind.CHILD_EXITED, NOW, snap, child), POLICY, rng)
        assert decision.run is None and decision.delay_s >= 0 and not decision.keep_timer
        assert decision.status and "\n" not in decision.status
        outcome = child.outcome
        if outcome is Outcome.TRANSIENT or (outcome is Outcome.OK and not has_generation):
            assert decision.delay_s <= POLICY.backoff.cap_s
            assert decision.machine.retry_pending and decision.machine.attempt >= 1
        elif outcome is Outcome.PERMANENT:
            assert decision.machine.state is Phase.FAILED_PERMANENT
            assert decision.delay_s == POLICY.permanent_retry_s
        else:
            assert decision.machine.state is Phase.PROVISIONED and decision.machine.attempt == 0
        nxt = decide(decision.machine, Event(EventKind.DUE, NOW, snap), POLICY, rng)
        if decision.machine.retry_pending:
            assert nxt.run in ("enroll", "renew")  # retried, never abandoned
        machine = nxt.machine


_ANY_TIME = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59),
                         timezones=st.just(timezone.utc))


@given(at=_ANY_TIME, now=_ANY_TIME, kind=st.sampled_from(list(EventKind)),
       code=_CODES, action=st.sampled_from(["renew", "check", "enroll", None]),
       generation=st.sampled_from([None, 3]))
def test_any_time_in_state_json_or_on_the_clock_is_scheduled_without_error(
    at: datetime, now: datetime, kind: EventKind, code: int, action: str | None,
    generation: int | None,
) -> None:
    """Times from year 1 to 9999 (state.json, or a gateway clock without an RTC): decide()
    never raises and never asks for a negative or NaN sleep."""
    snap = Snapshot.from_state(State(phase=Phase.PROVISIONED, current_generation=generation,
                                     next_action=action, next_action_at=at.isoformat()))
    child = _exited(code, "ServiceUnavailable" if code else None) if (
        kind is EventKind.CHILD_EXITED) else None
    decision = decide(Machine(state=Phase.RENEWING, attempt=3), Event(kind, now, snap, child),
                      POLICY, random.Random(0))
    assert decision.run is not None or decision.keep_timer or decision.delay_s >= 0
    assert not math.isnan(decision.delay_s)
