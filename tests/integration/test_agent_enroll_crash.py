"""kill -9 of the agent (and of the server) at every step of an enrollment.

The agent runs as ``python -m edge_provision enroll --json`` in a child process. A gated
proxy in front of the real lab server holds the targeted request (before forwarding it,
or after the server answered); the test SIGKILLs the child while it waits, releases the
gate and runs the agent again. Afterwards there must be exactly one set of things on the
platform and a valid current generation. No test hooks exist in product code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from _agent_lab import agent_env as _agent_env
from _agent_lab import lab_token, lab_total
from _agent_proxy import GatedProxy

from edge_provision.agent.store import Store
from edge_provision.lab.server import RunningLabServer
from edge_provision.testing import free_port, wait_for

pytestmark = pytest.mark.slow

EXT_ID = "02:42:ac:11:00:99"
EXT_KEY = "crash-test-external-key-99"
CHILD_TIMEOUT_S = 60


def agent_env(tmp_path: Path, url: str, lab_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of the agent child: everything through EDGE_PROVISION_* variables."""
    return _agent_env(tmp_path, url, (EXT_ID, EXT_KEY), lab_dir,
                      EDGE_PROVISION_AUTH_SCHEME="modern", EDGE_PROVISION_READ_TIMEOUT="20",
                      **extra)  # fmt: skip


def start_agent(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``edge-provision enroll --json`` as a child process."""
    return subprocess.Popen([sys.executable, "-m", "edge_provision", "enroll", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_agent(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run the agent to completion."""
    return subprocess.run([sys.executable, "-m", "edge_provision", "enroll", "--json"],
                          env=env, capture_output=True, timeout=CHILD_TIMEOUT_S, check=False)


def assert_no_secrets(tmp_path: Path, lab_dir: Path, *outputs: bytes) -> None:
    """Neither the external key nor a thing key nor the token show up in output.

    The thing keys are read from every generation the agent stored, the token from the
    lab server's state directory.
    """
    store = Store(tmp_path / "agent")
    thing_keys = [t.key for n in store.list_generations() for t in store.load_generation(n).things]
    assert thing_keys, "no stored thing key to look for"
    secrets = [EXT_KEY, lab_token(lab_dir), *thing_keys]
    assert all(len(secret) >= 8 for secret in secrets)
    for out in outputs:
        for secret in secrets:
            assert secret.encode() not in out


def assert_converged(tmp_path: Path, lab_url: str, lab_dir: Path) -> None:
    """One thing set on the platform; a valid current generation holding that thing."""
    assert lab_total(lab_url, lab_dir) == 1
    store = Store(tmp_path / "agent")
    gen = store.current_generation()
    assert gen is not None and not gen.is_fallback and store.verify_generation(gen.number) == ()
    reply = requests.get(f"{lab_url}/things", timeout=10,
                         headers={"Authorization": f"Bearer {lab_token(lab_dir)}"})
    assert gen.gateway_thing_id == reply.json()["things"][0]["id"]
    state = store.load_state()
    assert not state.mapping_in_flight and state.phase.value == "provisioned"


# (method, path prefix, occurrence, before/after): every request of an enrollment
KILL_POINTS = [
    ("GET", "/things/bootstrap/", 1, "before"),
    ("GET", "/things/bootstrap/", 1, "after"),
    ("POST", "/mapping", 1, "before"),
    ("POST", "/mapping", 1, "after"),
    ("GET", "/things/bootstrap/", 2, "before"),
    ("GET", "/things/bootstrap/", 2, "after"),
    ("GET", "/health", 1, "before"),
    ("POST", "/certs/csr", 1, "before"),
    ("POST", "/certs/csr", 1, "after"),
]


@pytest.mark.parametrize(("method", "path", "occurrence", "when"), KILL_POINTS,
                         ids=[f"{m}-{p.strip('/').split('/')[-1]}-{o}-{w}"
                              for m, p, o, w in KILL_POINTS])
def test_kill_at_each_request_converges(tmp_path: Path, lab: RunningLabServer, method: str,
                                        path: str, occurrence: int, when: str) -> None:
    """SIGKILL while a request is held; the rerun ends with one thing set and a generation."""
    proxy = GatedProxy(lab.url)
    try:
        gate = proxy.gate(method, path, occurrence, when)
        env = agent_env(tmp_path, proxy.url, tmp_path / "lab")
        child = start_agent(env)
        try:
            assert gate.hit.wait(CHILD_TIMEOUT_S), "the agent never reached the gate"
            os.kill(child.pid, signal.SIGKILL)
            out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            gate.release.set()
        assert child.returncode == -signal.SIGKILL
        state = Store(tmp_path / "agent").load_state()
        if (method, path, when) == ("POST", "/mapping", "before"):
            assert state.mapping_in_flight  # recorded before the call
        done = run_agent(env)
        assert done.returncode == 0, done.stderr.decode()
        doc = json.loads(done.stdout)
        assert doc["ok"] and doc["generation"] >= 1
        assert_no_secrets(tmp_path, tmp_path / "lab", out, err, done.stdout, done.stderr)
        assert len([f for f in proxy.requests_to("POST", "/mapping") if f.status == 201]) == 1
        assert_converged(tmp_path, lab.url, tmp_path / "lab")
    finally:
        proxy.stop()


def test_kill_during_hand_off_reruns_it(tmp_path: Path, lab: RunningLabServer) -> None:
    """Killed while a deploy hook runs: the rerun is a no-op that completes the hand-off."""
    marker = tmp_path / "hook-started"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\nif [ -e {marker} ]; then exit 0; fi\ntouch {marker}\nsleep 30\n")
    hook.chmod(0o755)
    env = agent_env(tmp_path, lab.url, tmp_path / "lab", EDGE_PROVISION_HOOK_COMMANDS=str(hook))
    child = start_agent(env)
    try:
        wait_for(marker.exists, timeout_s=CHILD_TIMEOUT_S, what="the hook to start")
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    done = run_agent(env)
    assert done.returncode == 0, done.stderr.decode()
    doc = json.loads(done.stdout)
    assert doc["changed"] is False
    assert doc["handoff"] is not None and doc["handoff"]["ok"] is True
    assert_no_secrets(tmp_path, tmp_path / "lab", done.stdout, done.stderr)
    assert_converged(tmp_path, lab.url, tmp_path / "lab")
    again = json.loads(run_agent(env).stdout)
    assert again["handoff"] is None  # done now: not run a third time


def test_server_killed_and_restarted_mid_enrollment(tmp_path: Path) -> None:
    """The lab server dies (SIGKILL) right after answering /mapping; after its restart the
    agent resumes from the bootstrap config: one thing set, nothing lost."""
    port = free_port()
    lab_dir = tmp_path / "lab"
    cmd = [sys.executable, "-m", "edge_provision", "--state-dir", str(lab_dir), "serve",
           "--port", str(port)]

    servers: list[subprocess.Popen[bytes]] = []

    def start_server() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        servers.append(server)
        assert server.stdout is not None
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while time.monotonic() < deadline:
            line = server.stdout.readline().decode()
            if line.startswith("listening on") or not line:
                break
        return server

    server = start_server()
    url = f"http://127.0.0.1:{port}"
    proxy = GatedProxy(url)
    try:
        gate = proxy.gate("POST", "/mapping", 1, "after")
        env = agent_env(tmp_path, proxy.url, lab_dir)
        child = start_agent(env)
        assert gate.hit.wait(CHILD_TIMEOUT_S)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=CHILD_TIMEOUT_S)
        gate.release.set()
        out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
        assert child.returncode == 75, err.decode()  # temporary failure: retry later
        doc = json.loads(out)
        assert doc["ok"] is False and doc["error"]["retryable"] is True
        server = start_server()
        done = run_agent(env)
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout)["created_mapping"] is False
        assert_no_secrets(tmp_path, lab_dir, out, err, done.stdout, done.stderr)
        assert_converged(tmp_path, url, lab_dir)
    finally:
        proxy.stop()
        for each in servers:
            if each.poll() is None:
                each.send_signal(signal.SIGTERM)
                try:
                    each.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    each.kill()
                    each.wait()
            if each.stdout is not None:
                each.stdout.close()
