"""The enrollment step runner with in-memory ports (no server): steps, journal, errors, events.

The same steps against real HTTP: tests/integration/test_agent_enroll_steps.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge_provision.agent.enroll import EnrollClients, EnrollResult, Step, StepEvent, enroll
from edge_provision.agent.enroll.runner import (
    Begin,
    Outcome,
    StepDef,
    StepRunner,
    StepStatus,
    done,
    skipped,
)
from edge_provision.agent.enroll.steps import HANDOFF, IDENTITY, STEPS
from edge_provision.agent.store import Phase, Store
from edge_provision.cli.enroll import ProgressPrinter
from edge_provision.errors import (
    AlreadyProvisioned,
    EdgeProvisionError,
    Reason,
    RetryClass,
    ServiceUnavailable,
    Unauthorized,
)
from edge_provision.platform import (
    BootstrapConfig,
    MappingResult,
    PlatformChannel,
    PlatformThing,
)
from edge_provision.settings import AgentSettings, load_agent_settings

EXT_ID = "02:42:ac:11:00:42"
EXT_KEY = "external-key-0042-secret"
THING = PlatformThing("thing-1", "gw-42", "thing-key-1-secret", {"external_id": EXT_ID})
CONTROL = PlatformChannel("chan-c", "control-channel", {"type": "control"})
DATA = PlatformChannel("chan-d", "data-channel", {"type": "data"})
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class Platform:
    """Provision and bootstrap ports in memory: a /mapping makes a bootstrap config."""

    def __init__(self, *, config: BootstrapConfig | None = None,
                 fetch_error: EdgeProvisionError | None = None,
                 mapping_error: EdgeProvisionError | None = None) -> None:  # fmt: skip
        self.config = config
        self.fetch_error = fetch_error
        self.mapping_error = mapping_error
        self.calls: list[str] = []

    def fetch(self, external_id: str, external_key: str, *,
              secure: bool = False) -> BootstrapConfig | None:  # fmt: skip
        self.calls.append(f"fetch {external_id}")
        if self.fetch_error is not None:
            raise self.fetch_error
        return self.config

    def create_mapping(self, external_id: str, external_key: str,
                       name: str | None = None) -> MappingResult:  # fmt: skip
        self.calls.append(f"mapping {external_id}")
        if self.mapping_error is not None:
            raise self.mapping_error
        self.config = BootstrapConfig(THING.id, THING.key, (DATA, CONTROL), "{}")
        return MappingResult((THING,), (CONTROL, DATA))


def settings_for(tmp_path: Path) -> AgentSettings:
    """Settings with a fixed identity and no verification."""
    return load_agent_settings({"state_dir": tmp_path / "agent", "external_id": EXT_ID,
                                "external_key": EXT_KEY, "mqtt_verify": "never"}, env={})


def run(tmp_path: Path, platform: Platform, events: list[StepEvent] | None = None,
        **kwargs: object) -> EnrollResult:  # fmt: skip
    """One enrollment against ``platform`` (no certificate service)."""
    clients = EnrollClients(provision=platform, bootstrap=platform, certs=None,
                            provision_url="http://127.0.0.1:9", bootstrap_url="http://127.0.0.1:9")
    return enroll(settings_for(tmp_path), Store(tmp_path / "agent"), clients,
                  progress=None if events is None else events.append,
                  clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def test_the_table_lists_every_step_in_order() -> None:
    """identity, then lookup ... handoff: the table is the order of an enrollment."""
    assert [IDENTITY.step, *(s.step for s in STEPS)] == list(Step)
    assert STEPS[-1] is HANDOFF and not HANDOFF.journal  # the hand-off journals itself


def test_fresh_enrollment_runs_every_step_and_journals_before_each(tmp_path: Path) -> None:
    """Every journalled step has 'started' ahead of its outcome; mapping then bootstrap."""
    platform = Platform()
    result = run(tmp_path, platform)
    assert platform.calls == [f"fetch {EXT_ID}", f"mapping {EXT_ID}", f"fetch {EXT_ID}"]
    assert result.changed and result.created_mapping and result.generation == 1
    journal = [(e.step, e.status) for e in Store(tmp_path / "agent").load_state().journal]
    for step in ("identity", "lookup", "mapping", "bootstrap", "store", "switch"):
        assert journal.index((step, "started")) < journal.index((step, "done")), step
    assert journal.index(("mapping", "done")) < journal.index(("bootstrap", "started"))
    assert ("verify", "started") not in journal  # skipped steps are not journalled


def test_a_failing_step_raises_with_its_step_and_reason(tmp_path: Path) -> None:
    """A refused lookup: .step and .reason are attributes; the hint comes from the reason."""
    refused = Unauthorized("config held for another key", reason=Reason.KEY_MISMATCH)
    with pytest.raises(Unauthorized) as info:
        run(tmp_path, Platform(fetch_error=refused))
    exc = info.value
    assert exc is refused and exc.step == "lookup" and exc.reason is Reason.KEY_MISMATCH
    assert exc.retry_class is RetryClass.NEEDS_PERSON
    assert exc.hint is not None and "original external_key" in exc.hint and EXT_ID in exc.hint
    assert str(exc).startswith("step lookup failed: config held for another key")
    state = Store(tmp_path / "agent").load_state()
    failed = state.journal[-1]
    assert (failed.step, failed.status) == ("lookup", "failed")
    assert failed.detail == {"error": "Unauthorized", "reason": "key-mismatch"}
    assert state.last_error is not None and state.last_error.kind == "Unauthorized"
    assert state.last_error.message.startswith("step lookup: config held for another key")
    assert state.phase is Phase.FAILED_PERMANENT and state.next_action == "enroll"


def test_conflict_on_mapping_is_known_and_clears_the_flight(tmp_path: Path) -> None:
    """409 on /mapping: step mapping, reason conflict, nothing in flight, what to do said."""
    with pytest.raises(AlreadyProvisioned) as info:
        run(tmp_path, Platform(mapping_error=AlreadyProvisioned("409 Conflict")))
    assert (info.value.step, info.value.reason) == ("mapping", Reason.CONFLICT)
    assert "EDGE_PROVISION_EXTERNAL_KEY" in str(info.value)
    assert not Store(tmp_path / "agent").load_state().mapping_in_flight


def test_transient_failure_on_mapping_keeps_it_in_flight(tmp_path: Path) -> None:
    """A timeout on /mapping: retryable, outcome unknown (in flight), no hint."""
    with pytest.raises(ServiceUnavailable) as info:
        run(tmp_path, Platform(mapping_error=ServiceUnavailable("read timeout",
                                                               retry_after_s=4)))
    exc = info.value
    assert (exc.step, exc.reason, exc.hint) == ("mapping", Reason.UNAVAILABLE, None)
    assert exc.retry_class is RetryClass.TRANSIENT
    state = Store(tmp_path / "agent").load_state()
    assert state.mapping_in_flight and state.phase is Phase.UNPROVISIONED
    assert state.next_action_at == "2030-01-02T03:04:09+00:00"  # NOW + Retry-After


def test_progress_events_are_the_result_steps_and_print_the_same(tmp_path: Path) -> None:
    """The callback gets exactly result.steps; text printed from either view is identical."""
    events: list[StepEvent] = []
    result = run(tmp_path, Platform(), events)
    assert tuple(events) == result.steps
    from_json = [StepEvent(Step(d["step"]), StepStatus(d["status"]), str(d["message"]),
                           d["url"])  # type: ignore[arg-type]
                 for d in result.to_dict()["steps"]]  # type: ignore[attr-defined]
    lines = printed(events)
    assert lines == printed(from_json)
    assert [line.split()[1] for line in lines] == [s.value for s in Step]


def printed(events: list[StepEvent]) -> list[str]:
    """The lines the text printer makes of ``events``."""
    printer = ProgressPrinter()
    return [line for line in map(printer.line, events) if line is not None]


def test_no_op_skips_every_step_and_reports_them(tmp_path: Path) -> None:
    """A second run for the same id: nothing called, every step after identity skipped."""
    platform = Platform()
    run(tmp_path, platform)
    platform.calls.clear()
    events: list[StepEvent] = []
    again = run(tmp_path, platform, events)
    assert platform.calls == [] and not again.changed and again.generation == 1
    assert [(e.step, e.status) for e in events if e.status is not StepStatus.STARTED] == [
        (Step.IDENTITY, StepStatus.DONE),
        *((s.step, StepStatus.SKIPPED) for s in STEPS)]


@dataclasses.dataclass
class Probe:
    """A context for hand-made step tables: what each step saw in the journal."""

    store: Store
    seen: list[list[tuple[str, str]]] = dataclasses.field(default_factory=list)

    def look(self) -> None:
        self.seen.append([(e.step, e.status) for e in self.store.load_state().journal])


@contextmanager
def locked_runner(tmp_path: Path, events: list[StepEvent]) -> Iterator[tuple[StepRunner, Probe]]:
    """A runner over a fresh store, with the lock held as enroll holds it."""
    store = Store(tmp_path / "s")
    with store.lock():
        yield (StepRunner(store, clock=lambda: NOW, progress=events.append,
                          permanent_retry_s=60.0), Probe(store))  # fmt: skip


def test_runner_journals_started_before_the_step_runs(tmp_path: Path) -> None:
    """begin -> 'started' in the journal -> run; skipped never journalled; journal=False."""
    def probe_run(p: Probe) -> Outcome:
        p.look()
        return done("did it", "http://127.0.0.1:1/x", thing="t1")

    table = [StepDef(Step.LOOKUP, lambda p: Begin("going", "http://127.0.0.1:1/x"), probe_run),
             StepDef(Step.MAPPING, lambda p: skipped("not needed"), probe_run),
             StepDef(Step.HANDOFF, lambda p: Begin("quietly"), probe_run, journal=False)]
    events: list[StepEvent] = []
    with locked_runner(tmp_path, events) as (runner, probe):
        for spec in table:
            runner.perform(probe, spec)
    assert probe.seen[0] == [("lookup", "started")]
    assert len(probe.seen) == 2  # the skipped step never ran
    journal = probe.store.load_state().journal
    assert [(e.step, e.status) for e in journal] == [("lookup", "started"), ("lookup", "done")]
    assert journal[0].detail == {"url": "http://127.0.0.1:1/x"}
    assert journal[1].detail == {"thing": "t1", "url": "http://127.0.0.1:1/x"}
    assert [(e.step, e.status) for e in events] == [
        (Step.LOOKUP, StepStatus.STARTED), (Step.LOOKUP, StepStatus.DONE),
        (Step.MAPPING, StepStatus.SKIPPED),
        (Step.HANDOFF, StepStatus.STARTED), (Step.HANDOFF, StepStatus.DONE)]


def test_runner_keeps_the_inner_step_of_a_nested_run(tmp_path: Path) -> None:
    """An error that already names its step (renew -> enroll) keeps it; failure recorded."""
    inner = ServiceUnavailable("down")
    inner.step = "mapping"

    def boom(p: Probe) -> Outcome:
        raise inner

    events: list[StepEvent] = []
    with locked_runner(tmp_path, events) as (runner, probe), \
            pytest.raises(ServiceUnavailable) as info, runner.failures(lambda: None):
        runner.perform(probe, StepDef(Step.STORE, lambda p: None, boom))
    assert info.value.step == "mapping" and info.value.hint is None
    assert events[-1].step is Step.STORE and events[-1].status is StepStatus.FAILED
    assert probe.store.load_state().journal[-1].step == "store"
