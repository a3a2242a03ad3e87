"""Enrollment on a hostile network: the real lab server behind the fault proxy.

In-process runs go through the composition root (``wiring.run_enroll``); the command
line runs are real ``edge-provision enroll --json`` processes, bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _agent_lab import agent_env, agent_settings, lab_total
from _daemon_util import cli

from edge_provision.agent import wiring
from edge_provision.agent.store import Phase, Store
from edge_provision.errors import (
    EXIT_TEMPFAIL,
    AlreadyProvisioned,
    BadReply,
    Reason,
    RetryClass,
    ServiceUnavailable,
)
from edge_provision.lab.server import RunningLabServer
from edge_provision.settings import AgentSettings
from edge_provision.testing import Fault, FaultProxy

EXT_ID = "02:42:ac:11:00:27"
EXT_KEY = "fault-campaign-external-key"
IDENTITY = (EXT_ID, EXT_KEY)
LOOKUP = f"/things/bootstrap/{EXT_ID}"
RUN_S = 60  # bound on any one command line run in these tests


@pytest.fixture
def proxy(lab: RunningLabServer) -> Iterator[FaultProxy]:
    """The hostile network between the agent and the lab server."""
    with FaultProxy(lab.url) as p:
        yield p


def _settings(tmp_path: Path, url: str, **flags: object) -> AgentSettings:
    return agent_settings(tmp_path, url, IDENTITY, **flags)


def _env(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    return agent_env(tmp_path, url, IDENTITY, **extra)


def _enroll_cli(env: dict[str, str]) -> tuple[int, dict[str, object], str]:
    """``enroll --json`` as a process: (exit code, JSON document, stderr)."""
    done = subprocess.run(cli("enroll", "--json"), env=env, capture_output=True, text=True,
                          timeout=RUN_S, check=False)  # fmt: skip
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


def _lock_is_free(state_dir: Path) -> bool:
    """Whether another process can take the state lock at once."""
    code = ("import sys; from edge_provision.agent.store import Store\n"
            f"with Store({str(state_dir)!r}).lock(blocking=False): sys.exit(0)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=RUN_S,
                          check=False).returncode == 0  # fmt: skip


def _lab_things(lab: RunningLabServer, tmp_path: Path) -> int:
    return lab_total(lab.url, tmp_path / "lab")


# --------------------------------------------------------------------------- row 1: deadlines


def test_a_dripping_lookup_ends_the_run_at_its_deadline(tmp_path: Path,
                                                        proxy: FaultProxy) -> None:
    """Drip at 5 bytes/s, request deadline 30 s: the 2 s run deadline ends it, lock free."""
    proxy.set(Fault.DRIP, interval_s=0.2)
    settings = _settings(tmp_path, proxy.url, request_deadline_s=30, run_deadline_s=2)
    with pytest.raises(ServiceUnavailable) as info:
        wiring.run_enroll(settings)
    assert info.value.reason is Reason.DEADLINE and info.value.step == "lookup"
    assert "2 s enroll run deadline (agent.run_deadline)" in str(info.value)
    state = Store(tmp_path / "agent").load_state()
    assert state.phase is Phase.UNPROVISIONED and state.last_error is not None
    assert _lock_is_free(tmp_path / "agent")


def test_enroll_command_on_a_dripping_server_exits_75_and_frees_the_lock(
        tmp_path: Path, lab: RunningLabServer, proxy: FaultProxy) -> None:  # fmt: skip
    """Exit 75, a transient JSON error and no traceback; the next run enrolls."""
    proxy.set(Fault.DRIP, interval_s=0.05)  # cut in the middle of the headers
    env = _env(tmp_path, proxy.url, EDGE_PROVISION_REQUEST_DEADLINE="1.5",
               EDGE_PROVISION_RUN_DEADLINE="20s")
    code, doc, stderr = _enroll_cli(env)
    assert code == EXIT_TEMPFAIL and "Traceback" not in stderr
    error = doc["error"]
    assert isinstance(error, dict)
    assert (error["retry_class"], error["reason"], error["step"]) == (
        RetryClass.TRANSIENT.value, Reason.DEADLINE.value, "lookup")
    assert "server.request_deadline_s" in str(error["message"])
    assert _lock_is_free(tmp_path / "agent")
    proxy.set(Fault.PASS)
    code, doc, _ = _enroll_cli(env)
    assert code == 0 and doc["changed"] is True and _lab_things(lab, tmp_path) == 1


def test_a_hook_that_hangs_is_ended_by_the_backstop(tmp_path: Path, lab: RunningLabServer,
                                                    proxy: FaultProxy) -> None:
    """What nothing can interrupt (a hung hand-off hook) is ended just after the deadline."""
    hook, pid_file = tmp_path / "hang.sh", tmp_path / "hook.pid"
    hook.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 30\n")
    hook.chmod(0o755)
    env = _env(tmp_path, proxy.url, EDGE_PROVISION_RUN_DEADLINE="2s",
               EDGE_PROVISION_HOOK_COMMANDS=str(hook), EDGE_PROVISION_HOOK_TIMEOUT="1m")
    try:
        code, _, stderr = _enroll_cli(env)
    finally:  # the hook outlives the process the backstop ended: end it here
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert code == EXIT_TEMPFAIL
    assert "did not stop at its 2 s deadline (agent.run_deadline)" in stderr
    assert _lock_is_free(tmp_path / "agent")
    assert Store(tmp_path / "agent").current_generation() is not None  # the switch was made


# --------------------------------------------------------------------------- row 2: bad replies

GARBAGE = [Fault.HTML, Fault.TRUNCATED_JSON, Fault.OVERSIZED, Fault.REDIRECT]


@pytest.mark.parametrize("fault", GARBAGE, ids=lambda f: f.value)
def test_garbage_makes_enroll_wait_and_retry_not_give_up(tmp_path: Path, lab: RunningLabServer,
                                                         proxy: FaultProxy,
                                                         fault: Fault) -> None:  # fmt: skip
    """A captive portal and friends: transient, phase unprovisioned, retried with backoff."""
    proxy.set(fault, size=3 * 1024 * 1024)
    settings = _settings(tmp_path, proxy.url)
    with pytest.raises(BadReply) as info:
        wiring.run_enroll(settings)
    assert info.value.retry_class is RetryClass.TRANSIENT and info.value.step == "lookup"
    state = Store(tmp_path / "agent").load_state()
    assert state.phase is Phase.UNPROVISIONED and state.counters.get("permanent_failures", 0) == 0
    proxy.set(Fault.PASS)
    assert wiring.run_enroll(settings).changed and _lab_things(lab, tmp_path) == 1


def test_enroll_command_behind_a_captive_portal_exits_75(tmp_path: Path,
                                                         proxy: FaultProxy) -> None:
    """Exit 75 and a JSON error whose retry class is transient (the daemon backs off)."""
    proxy.set(Fault.HTML)
    code, doc, _ = _enroll_cli(_env(tmp_path, proxy.url))
    assert code == EXIT_TEMPFAIL
    error = doc["error"]
    assert isinstance(error, dict)
    assert (error["kind"], error["retry_class"], error["reason"]) == (
        "BadReply", "transient", "bad-reply")


# --------------------------------------------------------------------------- row 5: 201 + 409


def test_a_409_for_a_mapping_that_completed_converges_on_it(tmp_path: Path,
                                                           lab: RunningLabServer,
                                                           proxy: FaultProxy) -> None:
    """The mapping went through, its answer came back as 201 + '409': look up, carry on."""
    proxy.add(Fault.CONFLICT_201, method="POST", path="/mapping", times=1, forward=True)
    result = wiring.run_enroll(_settings(tmp_path, proxy.url))
    assert result.changed and not result.created_mapping and result.generation == 1
    assert _lab_things(lab, tmp_path) == 1  # one thing-set: the one the lost answer made
    (mapping,) = [s for s in result.steps if (s.step.value, s.status.value) == ("mapping", "done")]
    assert "already holds our bootstrap config" in mapping.message
    state = Store(tmp_path / "agent").load_state()
    assert not state.mapping_in_flight and state.phase is Phase.PROVISIONED
    assert [(s.method, s.path) for s in proxy.seen][:3] == [
        ("GET", LOOKUP), ("POST", "/mapping"), ("GET", LOOKUP)]


def test_a_409_the_lookup_confirms_needs_a_person(tmp_path: Path, lab: RunningLabServer,
                                                  proxy: FaultProxy) -> None:
    """201 + '409' and still no config for our key: a real conflict (exit 1, needs a person)."""
    proxy.add(Fault.CONFLICT_201, method="POST", path="/mapping", forward=False)
    with pytest.raises(AlreadyProvisioned) as info:
        wiring.run_enroll(_settings(tmp_path, proxy.url))
    assert info.value.retry_class is RetryClass.NEEDS_PERSON and info.value.exit_code == 1
    assert "confirmed" in str(info.value) and "original external_key" in str(info.value)
    state = Store(tmp_path / "agent").load_state()
    assert state.phase is Phase.FAILED_PERMANENT and not state.mapping_in_flight
    assert _lab_things(lab, tmp_path) == 0
