"""The supervisor stays lean: no heavy library loads in `edge-provision run`, and idle means asleep.

Its idle RSS is a number, measured by ``bench/daemon_idle.py`` (docs/benchmarks.md),
not asserted here.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from _imports import Graph, Scope, scan, stdlib_module_names

import edge_provision
from edge_provision.agent.store import Phase, State, Store

PACKAGE = Path(edge_provision.__file__).resolve().parent
HEAVY = "('requests','cryptography','paho','psutil','urllib3')"
ALLOWED = {
    "edge_provision", "edge_provision.settings", "edge_provision.agent.store",
    "edge_provision.agent.store.model", "edge_provision.agent.daemon.systemd",
    "edge_provision.logs", "edge_provision.clock",
    "edge_provision.errors", "edge_provision.fileio", "edge_provision.agent.backoff",
    "edge_provision.agent.daemon.schedule", "edge_provision.agent.daemon.children",
    "edge_provision.agent.leftovers",
}


def _loaded_heavy(module: str) -> str:
    code = (f"import {module}, sys; print(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {HEAVY}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("module", ["edge_provision.agent.daemon.supervisor", "edge_provision.cli"])
def test_no_heavy_library_is_imported(module: str) -> None:
    """Importing the daemon (and the CLI that starts it) loads no requests/crypto/paho/psutil."""
    assert _loaded_heavy(module) == "[]"


# Imported inside a function, only when mqtt.control_listener is on.
LAZY = {"edge_provision.agent.daemon.control"}


@pytest.fixture(scope="module")
def graph() -> Graph:
    """The import graph of the package."""
    return scan(PACKAGE)


@pytest.mark.parametrize(
    "module", ["agent.daemon.supervisor", "agent.daemon.children", "agent.daemon.schedule",
               "agent.backoff"])
def test_daemon_modules_import_only_the_core(graph: Graph, module: str) -> None:
    """daemon, children, schedule and backoff import only the stdlib and the small core modules."""
    imports = list(graph.of(f"edge_provision.{module}"))
    assert imports, module
    ours = {i for i in imports if graph.ours(i)}
    foreign = {i.top for i in imports if i not in ours} - stdlib_module_names()
    eager = {i.target for i in ours if i.scope is not Scope.FUNCTION}
    lazy = {i.target for i in ours if i.scope is Scope.FUNCTION}
    assert foreign <= {"__future__"}
    assert eager <= ALLOWED, eager - ALLOWED
    assert lazy <= ALLOWED | LAZY, lazy - ALLOWED - LAZY


def _site_libraries(pid: int) -> set[str]:
    """Files from site-packages mapped into a process (native extension modules)."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    mapped = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
              if len(line.split()) >= 6}
    return {path for path in mapped if any(path.startswith(root) for root in roots)}


def provisioned_far_ahead(tmp_path: Path) -> Path:
    """A state directory whose state says: provisioned, next renewal in 30 days."""
    state_dir = tmp_path / "state"
    store = Store(state_dir)
    later = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat(timespec="seconds")
    with store.lock():
        store.save_state(State(phase=Phase.PROVISIONED, current_generation=1,
                               next_action="renew", next_action_at=later))
    return state_dir


def test_idle_daemon_sleeps_and_maps_no_library(tmp_path: Path) -> None:
    """`run` with nothing due: ready, no site-packages extension mapped, asleep until SIGTERM."""
    state_dir = provisioned_far_ahead(tmp_path)
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(20)
        env = dict(os.environ, NOTIFY_SOCKET=str(sock_path))
        with open(tmp_path / "daemon.log", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_provision", "--state-dir", str(state_dir),
                 "--log-level", "debug", "run"],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            ready = sock.recv(4096).decode()
            assert ready.startswith("READY=1\nSTATUS=provisioned: generation 1, next renewal")
            # psutil and cryptography are native: had the daemon imported them, their
            # extension modules would be mapped (the pure-Python libraries are checked by
            # test_no_heavy_library_is_imported)
            assert _site_libraries(proc.pid) == set()
            time.sleep(2)  # an idle window: a timer or a busy loop would log a wake-up in it
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    log = (tmp_path / "daemon.log").read_text()
    assert log.count("wake signals=") == 1  # only the SIGTERM woke it
    assert "wake signals=[15]" in log


def _imported(stderr: str) -> set[str]:
    """The modules a ``python -X importtime`` run imported (from its stderr)."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


LEAN_DAEMON_NEVER = {"click", "hashlib", "_hashlib", "ssl", "requests", "cryptography", "paho",
                     "psutil", "urllib3", "edge_provision.cli._app", "edge_provision.agent.enroll"}


def test_run_starts_without_click_or_openssl(tmp_path: Path) -> None:
    """`edge-provision run` idles without click, OpenSSL's hashlib or any heavy library
    (seen from the real process's own -X importtime, from start to SIGTERM)."""
    state_dir = provisioned_far_ahead(tmp_path)
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(20)
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "edge_provision", "--state-dir",
             str(state_dir), "run"], env=dict(os.environ, NOTIFY_SOCKET=str(sock_path)),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)  # fmt: skip
        try:
            assert sock.recv(4096).decode().startswith("READY=1\nSTATUS=provisioned")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=5)
    imported = _imported(err)
    assert "edge_provision.agent.daemon.supervisor" in imported
    assert imported & LEAN_DAEMON_NEVER == set()
    assert proc.returncode == 0


@pytest.mark.parametrize("command", ["status", "enroll"])
def test_status_and_the_no_op_enroll_load_no_platform_library(tmp_path: Path,
                                                              command: str) -> None:
    """On an enrolled gateway, `status` and the no-op `enroll` load no HTTP, crypto, MQTT or
    interface library: the certificate facts come from the manifest."""
    from edge_provision.agent.certificates import describe
    from edge_provision.agent.identity import resolve_identity
    from edge_provision.agent.store import GenerationData, StoredChannel, StoredThing
    from edge_provision.testing import ThrowawayCA

    state_dir = tmp_path / "state"
    resolve_identity(state_dir, external_id="02:42:ac:11:00:71", external_key="k" * 24)
    ca = ThrowawayCA(tmp_path / "ca")
    store = Store(state_dir, describe_certificate=describe)
    with store.lock():
        number = store.write_generation(GenerationData(
            things=(StoredThing("gw-71", "gw", "thing-key-71"),),
            channels=(StoredChannel("ch-c", "control", {"type": "control"}),),
            gateway_thing_id="gw-71", bootstrap_content="{}", source="mapping",
            external_id="02:42:ac:11:00:71",
            certificates={"gw-71": ca.issue_client("gw-71")}, ca_pem=ca.cert_pem))
        store.switch_current(number)
        later = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat(timespec="seconds")
        store.save_state(dataclasses.replace(store.load_state(), phase=Phase.PROVISIONED,
                                             next_action="renew", next_action_at=later))
    env = dict(os.environ, EDGE_PROVISION_PROVISION_URL="http://127.0.0.1:9",
               EDGE_PROVISION_EXTERNAL_ID="02:42:ac:11:00:71")  # never called: a no-op
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "edge_provision",
                           "--state-dir", str(state_dir), command], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    heavy = {m for m in _imported(done.stderr) if m.split(".")[0] in (
        "requests", "urllib3", "cryptography", "paho", "psutil", "ssl", "_hashlib")}
    assert heavy == set()
