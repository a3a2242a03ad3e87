"""The supervisor stays lean: no heavy library loads in `edge-provision run`, small idle RSS."""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

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


def _imports(nodes: list[ast.AST]) -> set[str]:
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    "name", ["daemon/supervisor.py", "daemon/children.py", "daemon/schedule.py", "backoff.py"])
def test_daemon_modules_import_only_the_core(name: str) -> None:
    """daemon, _children, schedule and backoff import only the stdlib and the small core modules."""
    tree = ast.parse((PACKAGE / "agent" / name).read_text(encoding="utf-8"))
    in_functions = [n for f in ast.walk(tree)
                    if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for n in ast.walk(f)]  # fmt: skip
    every = _imports(list(ast.walk(tree)))
    lazy = _imports(in_functions)
    ours = {m for m in every if m.split(".")[0] == "edge_provision"}
    foreign = {m for m in every - ours if m.split(".")[0] not in sys.stdlib_module_names}
    assert foreign <= {"__future__"}
    assert ours - lazy <= ALLOWED, ours - lazy - ALLOWED
    assert ours & lazy <= ALLOWED | LAZY, (ours & lazy) - ALLOWED - LAZY


def test_idle_rss_is_small(tmp_path: Path) -> None:
    """`edge-provision run` with nothing due: RSS <= 24 MB, and no wake-ups while idle."""
    state_dir = tmp_path / "state"
    store = Store(state_dir)
    later = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat(timespec="seconds")
    with store.lock():
        store.save_state(State(phase=Phase.PROVISIONED, current_generation=1,
                               next_action="renew", next_action_at=later))
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
            time.sleep(2)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss_kib = int(next(ln for ln in status.splitlines()
                               if ln.startswith("VmRSS:")).split()[1])
            assert rss_kib <= 24 * 1024, f"idle RSS {rss_kib} KiB"
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    log = (tmp_path / "daemon.log").read_text()
    assert log.count("wake signals=") == 1  # only the SIGTERM woke it
