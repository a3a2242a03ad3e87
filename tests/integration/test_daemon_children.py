"""The supervisor loop with real processes: scripted child commands, real signals, sd_notify.

The daemon runs in its own process (``Daemon`` built by a tiny runner script) and its
child commands are a scripted stand-in, so every exit code, crash, hang and signal path is
exercised without a server. Notifications arrive on a real AF_UNIX datagram socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from _daemon_util import WAIT_S, Notify, stop_daemon

from edge_provision.agent.store import Phase, State, Store

# The stand-in for `edge-provision enroll|renew --json`: step N of the plan for run N.
FAKE_CHILD = r'''
import json, os, signal, sys, time
from pathlib import Path
plan = json.loads(Path(os.environ["FAKE_PLAN"]).read_text())
counter = Path(os.environ["FAKE_PLAN"] + ".count")
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
step = plan[min(n, len(plan) - 1)]
def on_term(signum, frame):
    with open(os.environ["FAKE_PLAN"] + ".log", "a") as log:
        log.write(json.dumps({"term": os.getpid()}) + "\n")
    if not step.get("ignore_term"):
        sys.exit(75)
signal.signal(signal.SIGTERM, on_term)  # before the run is logged: a logged run handles TERM
with open(os.environ["FAKE_PLAN"] + ".log", "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "pid": os.getpid(),
                          "env": sorted(k for k in os.environ
                                        if k.startswith(("NOTIFY", "WATCHDOG")))}) + "\n")
if "state" in step:
    from edge_provision.agent.store import State, Store
    store = Store(Path(os.environ["EDGE_PROVISION_STATE_DIR"]))
    with store.lock():
        store.save_state(State(**step["state"]))
if "sleep" in step:
    end = time.monotonic() + step["sleep"]
    while time.monotonic() < end:
        time.sleep(0.05)
if "kill" in step:
    os.kill(os.getpid(), step["kill"])
if "stdout" in step:
    sys.stdout.write(step["stdout"])
elif "error" in step:
    print(json.dumps({"ok": False, "error": step["error"]}))
else:
    print(json.dumps({"ok": True}))
sys.exit(step.get("exit", 0))
'''

RUNNER = r'''
import json, sys
from edge_provision.logs import setup_logging
from edge_provision.agent.daemon.supervisor import Daemon, SystemClock
from edge_provision.settings import load_agent_settings
opts = json.loads(sys.argv[1])
setup_logging("debug")
faults = {"reload": opts.get("faulty_reloads", 0), "now": opts.get("faulty_nows", 0)}

def reload():  # a reload hook with a bug in its first faulty_reloads calls
    if faults["reload"] > 0:
        faults["reload"] -= 1
        raise RuntimeError("a bug in the reload hook")
    return load_agent_settings()

class Clock(SystemClock):  # a wall clock that fails its first faulty_nows readings
    def now(self):
        if faults["now"] > 0:
            faults["now"] -= 1
            raise OSError(22, "clock_gettime failed")
        return super().now()

Daemon(load_agent_settings(), reload_settings=reload, clock=Clock(),
       argv_prefix=[sys.executable, opts["child"]],
       child_timeout_s=opts.get("child_timeout_s", 900.0),
       stop_grace_s=opts.get("stop_grace_s", 10.0)).run()
'''


class Harness:
    """A daemon process with a scripted child plan, its notify socket and its state dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state_dir = tmp_path / "state"
        self.plan = tmp_path / "plan.json"
        (tmp_path / "child.py").write_text(FAKE_CHILD)
        (tmp_path / "runner.py").write_text(RUNNER)
        self.notify = Notify(tmp_path / "notify.sock")
        self.proc: subprocess.Popen[str] | None = None

    def start(self, plan: list[dict[str, object]], *, env: dict[str, str] | None = None,
              **opts: object) -> None:
        self.plan.write_text(json.dumps(plan))
        full_env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path), FAKE_PLAN=str(self.plan),
                        EDGE_PROVISION_STATE_DIR=str(self.state_dir),
                        EDGE_PROVISION_BACKOFF_INITIAL="0.1", EDGE_PROVISION_BACKOFF_CAP="0.3",
                        EDGE_PROVISION_PERMANENT_RETRY="30")
        full_env.update(env or {})
        with open(self.tmp / "daemon.log", "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.tmp / "runner.py"),
                 json.dumps({"child": str(self.tmp / "child.py"), **opts})],
                env=full_env, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
            )
        self.notify.expect(lambda m: m.startswith("READY=1"), consume=False)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 5.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took); STOPPING=1 must arrive."""
        assert self.proc is not None
        return stop_daemon(self.proc, self.notify, timeout_s)

    def runs(self) -> list[dict[str, object]]:
        log = Path(str(self.plan) + ".log")
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def log(self) -> str:
        return (self.tmp / "daemon.log").read_text()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        child = str(self.tmp / "child.py").encode()
        for run in self.runs():  # no stand-in may outlive its test (checked: pids get reused)
            pid = run.get("pid")
            with contextlib.suppress(OSError):
                if isinstance(pid, int) and child in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
        self.notify.sock.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A daemon harness, killed (with its children) whatever the test did."""
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


def wait_for_run(harness: Harness) -> None:
    """Until the stand-in has logged its run (bounded by WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while not harness.runs():
        assert time.monotonic() < deadline, harness.log()
        time.sleep(0.05)


def _iso(delta: timedelta) -> str:
    return (datetime.now(timezone.utc) + delta).isoformat(timespec="seconds")


def _provisioned(gen: int = 1, delta: timedelta = timedelta(days=30),
                 action: str = "renew") -> dict[str, object]:
    return {"phase": "provisioned", "current_generation": gen, "next_action": action,
            "next_action_at": _iso(delta)}


UNAVAILABLE = {"kind": "ServiceUnavailable", "message": "connection refused by 127.0.0.1:9"}


def test_transient_failures_then_success(harness: Harness) -> None:
    """75, 75, then 0: two retry lines, then provisioned with the child's schedule; exit 0."""
    harness.start([
        {"exit": 75, "error": UNAVAILABLE},
        {"exit": 75, "error": UNAVAILABLE},
        {"exit": 0, "state": _provisioned(1)},
    ])
    first = harness.notify.status("retry 1 in")
    assert first.startswith("STATUS=waiting for network, retry 1 in ")
    assert first.endswith(": ServiceUnavailable: connection refused by 127.0.0.1:9")
    harness.notify.status("retry 2 in")
    harness.notify.status("provisioned: generation 1, next renewal ")
    assert harness.stop()[0] == 0
    runs = harness.runs()
    assert len(runs) == 3
    assert all(r["argv"] == ["enroll", "--json"] for r in runs)
    assert all(r["env"] == [] for r in runs)  # NOTIFY_SOCKET / WATCHDOG_* removed


def test_renewal_when_due_and_sigusr1_runs_it_now(harness: Harness) -> None:
    """A due renewal runs `renew --json`; later SIGUSR1 runs it again at once."""
    store = Store(harness.state_dir)
    with store.lock():
        store.save_state(State(phase=Phase.PROVISIONED, current_generation=3,
                               next_action="renew", next_action_at=_iso(timedelta(hours=-1))))
    harness.start([{"exit": 0, "state": _provisioned(4)}])
    harness.notify.status("renewing: generation 3")
    harness.notify.status("provisioned: generation 4, next renewal")
    harness.signal(signal.SIGUSR1)  # the next renewal is 30 days away: only the signal runs it
    harness.notify.status("renewing: generation 4")
    harness.notify.status("provisioned: generation 4, next renewal")
    assert [r["argv"] for r in harness.runs()] == [["renew", "--json"]] * 2
    assert harness.stop()[0] == 0


def test_permanent_failure_keeps_running_and_says_why(harness: Harness) -> None:
    """77 -> failed status with the reason and the slow retry; the daemon stays up."""
    harness.start([{"exit": 77, "error": {"kind": "Unauthorized",
                                          "message": "the token was refused (401)"}}])
    msg = harness.notify.status("failed:")
    assert msg == ("STATUS=failed: Unauthorized: the token was refused (401); "
                   "retrying in 30 s")
    time.sleep(0.5)
    assert harness.proc is not None and harness.proc.poll() is None
    assert len(harness.runs()) == 1
    assert harness.stop()[0] == 0


@pytest.mark.parametrize(
    ("step", "fragment"),
    [
        ({"kill": signal.SIGKILL}, "enroll was killed by SIGKILL"),
        ({"exit": 1, "stdout": "Traceback (most recent call last): boom"},
         "enroll crashed (exit code 1; see the log)"),
        ({"exit": 0, "stdout": "not json"}, "enroll succeeded but no current generation"),
    ],
)
def test_crashes_are_transient(harness: Harness, step: dict[str, object], fragment: str) -> None:
    """A child killed by a signal or crashing is retried with backoff."""
    harness.start([step, {"exit": 0, "state": _provisioned(1)}])
    assert fragment in harness.notify.status("retry 1 in")
    harness.notify.status("provisioned: generation 1")
    assert harness.stop()[0] == 0


def test_hung_child_is_stopped_and_retried(harness: Harness) -> None:
    """A child past the timeout gets SIGTERM, then SIGKILL, and counts as transient."""
    harness.start([{"sleep": 60, "ignore_term": True}, {"exit": 0, "state": _provisioned(2)}],
                  child_timeout_s=0.5, stop_grace_s=0.5)
    msg = harness.notify.status("retry 1 in")
    assert "enroll did not finish within 0.5 s and was stopped" in msg
    harness.notify.status("provisioned: generation 2")
    runs = harness.runs()
    assert {"term": runs[0]["pid"]} in runs  # SIGTERM was tried first
    assert harness.stop()[0] == 0


def test_sigterm_is_forwarded_to_a_running_child(harness: Harness) -> None:
    """SIGTERM while a child runs: the child gets SIGTERM, the daemon exits 0 promptly."""
    harness.start([{"sleep": 60}])
    harness.notify.status("enrolling")
    wait_for_run(harness)  # logged only once its SIGTERM handler is installed
    assert harness.stop()[0] == 0  # within stop()'s bounded waits, not the child's 60 s
    pid = harness.runs()[0]["pid"]
    assert {"term": pid} in harness.runs()
    assert "child killed" not in harness.log()  # it ended on SIGTERM, no SIGKILL needed


def test_child_ignoring_sigterm_is_killed_after_the_grace_period(harness: Harness) -> None:
    """A child that ignores SIGTERM is SIGKILLed after stop_grace_s; still exit 0."""
    harness.start([{"sleep": 60, "ignore_term": True}], stop_grace_s=1.0)
    harness.notify.status("enrolling")
    wait_for_run(harness)
    assert harness.stop()[0] == 0
    pid = harness.runs()[0]["pid"]
    assert isinstance(pid, int)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert {"term": pid} in harness.runs()  # it got SIGTERM first and lived on
    log = harness.log()
    assert log.index("stopping child command=enroll") < log.index("child killed command=enroll")


def test_watchdog_is_petted_while_a_child_runs(harness: Harness) -> None:
    """WATCHDOG=1 every WATCHDOG_USEC/2, also while waiting for a child."""
    harness.start([{"sleep": 1.5, "exit": 0, "state": _provisioned(1)}],
                  env={"WATCHDOG_USEC": "200000"})
    harness.notify.status("enrolling", 5)
    start = harness.notify.cursor
    harness.notify.status("provisioned", 10)
    during = harness.notify.messages[start:harness.notify.cursor]
    assert during.count("WATCHDOG=1") >= 4
    harness.notify.expect(lambda m: m == "WATCHDOG=1", 2)  # and when idle
    assert harness.stop()[0] == 0


def test_sighup_with_a_broken_config_keeps_the_old_settings(harness: Harness) -> None:
    """SIGHUP + broken config: still running, the problem in STATUS; fixing it clears it."""
    config = harness.tmp / "config.toml"
    config.write_text('[agent]\nbackoff_cap = "0.3s"\n')
    harness.start([{"exit": 0, "state": _provisioned(1)}],
                  env={"EDGE_PROVISION_CONFIG": str(config)})
    harness.notify.status("provisioned: generation 1")
    config.write_text("[agent\nbackoff_cap = \n")
    harness.signal(signal.SIGHUP)
    harness.notify.expect(lambda m: m.startswith("RELOADING=1"))
    msg = harness.notify.expect(lambda m: m.startswith("READY=1"))
    assert "config reload failed, keeping the previous settings: " in msg
    assert f"{config}:1" in msg and "invalid TOML" in msg
    assert harness.proc is not None and harness.proc.poll() is None
    config.write_text('[agent]\nbackoff_cap = "1s"\n')
    harness.signal(signal.SIGHUP)
    msg = harness.notify.expect(lambda m: m.startswith("READY=1"))
    assert msg.startswith("READY=1\nSTATUS=provisioned: generation 1") and "reload" not in msg
    assert harness.stop()[0] == 0


def test_idle_daemon_does_not_poll(harness: Harness) -> None:
    """Provisioned with a far renewal and no watchdog: zero loop wake-ups while idle."""
    store = Store(harness.state_dir)
    with store.lock():
        store.save_state(State(phase=Phase.PROVISIONED, current_generation=1,
                               next_action="renew", next_action_at=_iso(timedelta(days=60))))
    harness.start([{"exit": 3}])
    time.sleep(3)
    assert harness.log().count("wake signals=") == 0
    assert harness.runs() == []
    assert harness.stop()[0] == 0
    assert harness.log().count("wake signals=") == 1  # the SIGTERM


def test_an_unexpected_error_at_start_is_logged_and_the_daemon_goes_on(harness: Harness) -> None:
    """The first event fails with an exception no code expects: READY=1 anyway (systemd must
    not time out), the traceback in the log, the reason in STATUS, then it enrolls."""
    harness.start([{"exit": 0, "state": _provisioned(1)}], faulty_nows=1)
    ready = harness.notify.expect(lambda m: m.startswith("READY=1"))
    assert ready.startswith("READY=1\nSTATUS=internal error (a bug, see the log): OSError: ")
    assert "; retrying in " in ready
    harness.notify.status("provisioned: generation 1")
    assert harness.proc is not None and harness.proc.poll() is None
    assert harness.stop()[0] == 0
    log = harness.log()
    assert "unexpected error, the daemon goes on error=OSError" in log
    assert "Traceback (most recent call last):" in log and "clock_gettime failed" in log


def test_an_unexpected_error_in_a_reload_does_not_stop_the_daemon(harness: Harness) -> None:
    """SIGHUP whose reload hook raises twice in a row: logged with its traceback each time, the
    daemon keeps its schedule and serves the next SIGHUP normally."""
    harness.start([{"exit": 0, "state": _provisioned(1)}], faulty_reloads=2)
    harness.notify.status("provisioned: generation 1")
    for _ in range(2):
        harness.signal(signal.SIGHUP)
        harness.notify.expect(lambda m: m.startswith("RELOADING=1"))
        msg = harness.notify.expect(lambda m: m.startswith("READY=1"))
        assert "internal error (a bug, see the log): RuntimeError: a bug in the reload hook" in msg
        harness.notify.status("provisioned: generation 1")  # the timer re-read the schedule
    harness.signal(signal.SIGHUP)
    harness.notify.expect(lambda m: m.startswith("RELOADING=1"))
    msg = harness.notify.expect(lambda m: m.startswith("READY=1"))
    assert msg.startswith("READY=1\nSTATUS=provisioned: generation 1")
    assert harness.stop()[0] == 0
    assert harness.log().count("Traceback (most recent call last):") == 2
    assert len(harness.runs()) == 1  # no child was started by the faults
