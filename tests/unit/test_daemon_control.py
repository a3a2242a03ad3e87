"""Control-channel commands in the supervisor: the pure decisions and the queue/self-pipe bridge."""

from __future__ import annotations

import logging
import os
import random
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge_provision.agent.backoff import Backoff
from edge_provision.agent.daemon.control import WAKE_BYTE, ControlBridge
from edge_provision.agent.daemon.schedule import (
    Decision,
    Event,
    EventKind,
    Machine,
    Policy,
    Snapshot,
    decide,
)
from edge_provision.agent.mqtt import ControlCommand, ControlListener, MqttTarget
from edge_provision.agent.store import Phase
from edge_provision.settings import load_agent_settings

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
POLICY = Policy(Backoff(initial_s=2.0, cap_s=300.0), permanent_retry_s=3600.0)
IDLE = Machine(state=Phase.PROVISIONED, base_status="provisioned: generation 2")


def _decide(kind: EventKind, snap: Snapshot, machine: Machine = IDLE) -> Decision:
    return decide(machine, Event(kind, NOW, snap), POLICY, random.Random(1))


def test_renew_command_runs_renew_force_even_when_not_due() -> None:
    """`renew` with a generation and a renewal months away: renew --force now."""
    d = _decide(EventKind.RENEW_NOW, Snapshot(2, "renew", LATER))
    assert (d.run, d.args) == ("renew", ("--force",))
    assert d.machine.state is Phase.RENEWING and d.status == "renewing: generation 2"


def test_reprovision_command_runs_enroll_force() -> None:
    """`reprovision` with a generation: enroll --force, shown as reprovisioning."""
    d = _decide(EventKind.REPROVISION_NOW, Snapshot(2, "check", LATER))
    assert (d.run, d.args) == ("enroll", ("--force",))
    assert d.machine.state is Phase.ENROLLING and d.status == "reprovisioning: generation 2"


@pytest.mark.parametrize("kind", [EventKind.RENEW_NOW, EventKind.REPROVISION_NOW])
def test_commands_without_a_generation_enroll_plainly(kind: EventKind) -> None:
    """No generation yet: either command simply enrolls (nothing to force)."""
    d = _decide(kind, Snapshot(), Machine())
    assert (d.run, d.args, d.status) == ("enroll", (), "enrolling")


def test_renew_command_when_state_asks_for_enroll_is_not_forced() -> None:
    """next_action "enroll" (the child decided so): plain enroll, no --force."""
    d = _decide(EventKind.RENEW_NOW, Snapshot(2, "enroll", None))
    assert (d.run, d.args) == ("enroll", ())


def test_scheduled_runs_carry_no_extra_arguments() -> None:
    """SIGUSR1 and a due timer run the plain command."""
    assert _decide(EventKind.CHECK_NOW, Snapshot(2, "renew", LATER)).args == ()
    assert _decide(EventKind.DUE, Snapshot(2, "renew", NOW)).args == ()


def _listener() -> ControlListener:
    target = MqttTarget("tcp://127.0.0.1:9", "thing", "key")
    return ControlListener(target, "chan", lambda _c: None)


def test_bridge_queues_commands_and_wakes_the_loop() -> None:
    """push() (paho's thread) queues and writes one NUL byte; take() drains in order."""
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    try:
        bridge = ControlBridge(wfd)
        listener = _listener()
        bridge.push(ControlCommand("r1", "renew"), listener)
        bridge.push(ControlCommand("r2", "status"), listener)
        assert os.read(rfd, 16) == WAKE_BYTE * 2
        taken = bridge.take()
        assert [(r.request_id, r.name) for r in taken] == [("r1", "renew"), ("r2", "status")]
        assert taken[0].listener is listener
        assert bridge.take() == []
        assert bridge.generation is None
        bridge.stop()
        bridge.push(ControlCommand("r3", "renew"), listener)  # after stop: queued, no wake
        with pytest.raises(BlockingIOError):
            os.read(rfd, 16)
    finally:
        os.close(rfd)
        os.close(wfd)


def test_bridge_survives_a_full_pipe() -> None:
    """A full self-pipe never blocks or raises in the listener's thread."""
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    try:
        while True:
            try:
                os.write(wfd, b"x" * 65536)
            except BlockingIOError:
                break
        bridge = ControlBridge(wfd)
        bridge.push(ControlCommand("r", "renew"), _listener())
        assert len(bridge.take()) == 1
    finally:
        os.close(rfd)
        os.close(wfd)


def test_answer_on_a_disconnected_listener_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Replying through a listener that is not connected logs and returns."""
    rfd, wfd = os.pipe()
    try:
        bridge = ControlBridge(wfd)
        bridge.push(ControlCommand("r9", "status"), _listener())
        (request,) = bridge.take()
        with caplog.at_level(logging.WARNING, logger="edge_provision.agent.daemon.control"):
            request.answer("provisioned")
        assert "control reply dropped name=status request_id=r9" in caplog.text
    finally:
        os.close(rfd)
        os.close(wfd)


def test_restart_without_a_generation_stays_stopped(tmp_path: Path) -> None:
    """restart(settings, None) starts no listener thread."""
    settings = load_agent_settings(env={"EDGE_PROVISION_STATE_DIR": str(tmp_path)})
    rfd, wfd = os.pipe()
    try:
        bridge = ControlBridge(wfd)
        bridge.restart(settings, None)
        assert bridge.generation is None
        bridge.stop()
    finally:
        os.close(rfd)
        os.close(wfd)


def test_restart_for_a_missing_generation_ends_its_thread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A generation that is not current (empty store): the runner logs and ends at once."""
    settings = load_agent_settings(env={"EDGE_PROVISION_STATE_DIR": str(tmp_path)})
    rfd, wfd = os.pipe()
    try:
        bridge = ControlBridge(wfd)
        with caplog.at_level(logging.INFO, logger="edge_provision.agent.daemon.control"):
            bridge.restart(settings, 3)
            assert bridge.generation == 3
            deadline = time.monotonic() + 5
            while "reason=not current" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
            bridge.stop()
        assert "control listener not started generation=3 reason=not current" in caplog.text
    finally:
        os.close(rfd)
        os.close(wfd)
