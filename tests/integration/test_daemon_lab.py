"""`edge-provision run` end to end: real daemon, real enroll children, the real lab server.

Every process is started here, bounded in time, and killed in a ``finally``;
sd_notify datagrams arrive on a real AF_UNIX socket bound in tmp_path.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from _daemon_util import WAIT_S, Notify, Procs, cli, daemon_env, stop_daemon

import edge_provision
from edge_provision.testing import free_port

PACKAGE = Path(edge_provision.__file__).resolve().parent


def _start_lab(procs: Procs, tmp_path: Path, port: int) -> str:
    """`edge-provision serve` on 127.0.0.1:port; returns its token once it answers."""
    lab_dir = tmp_path / "lab"
    proc = procs.start(cli("--state-dir", str(lab_dir), "serve", "--port", str(port)),
                       dict(os.environ), "lab.log")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "lab.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return (lab_dir / "api-token").read_text().strip()
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the lab server did not start")


def _daemon_env(notify: Notify, port: int, token: str, **extra: str) -> dict[str, str]:
    return daemon_env(notify, f"http://127.0.0.1:{port}", token,
                      EDGE_PROVISION_MQTT_VERIFY="never", **extra)


def _run(procs: Procs, tmp_path: Path, env: dict[str, str],
         *global_opts: str) -> subprocess.Popen[bytes]:
    return procs.start(cli(*global_opts, "--state-dir", str(tmp_path / "state"), "run"), env,
                       "daemon.log")


def _stop(proc: subprocess.Popen[bytes], notify: Notify) -> tuple[int, float]:
    """SIGTERM; STOPPING=1 and the exit must each come within a bounded wait."""
    return stop_daemon(proc, notify, 5)


def test_offline_start_then_server_appears(procs: Procs, notify: Notify, tmp_path: Path) -> None:
    """Nothing listening: retry lines with backoff; the lab server starts: provisioned; SIGTERM."""
    port = free_port()
    token = _start_lab(procs, tmp_path, port)  # once, to create its token, then down again
    lab = procs.procs[-1]
    lab.send_signal(signal.SIGTERM)
    assert lab.wait(timeout=WAIT_S) == 0
    daemon = _run(procs, tmp_path, _daemon_env(notify, port, token))
    notify.expect(lambda m: m.startswith("READY=1"))
    first = notify.status("retry 1 in")
    assert first.startswith("STATUS=waiting for network, retry 1 in ")
    assert "ServiceUnavailable" in first
    notify.status("retry 2 in")
    assert _start_lab(procs, tmp_path, port) == token
    notify.status("provisioned: generation 1, next renewal ")
    assert daemon.poll() is None
    assert _stop(daemon, notify)[0] == 0  # idle RSS is measured by bench/daemon_idle.py


def test_sigusr1_runs_a_child_at_once(procs: Procs, notify: Notify, tmp_path: Path) -> None:
    """Provisioned and idle; SIGUSR1 starts the renew child promptly."""
    port = free_port()
    token = _start_lab(procs, tmp_path, port)
    daemon = _run(procs, tmp_path, _daemon_env(notify, port, token))
    notify.status("provisioned: generation 1")
    daemon.send_signal(signal.SIGUSR1)  # the renewal is not due: only the signal starts it
    notify.status("renewing: generation 1")
    notify.status("provisioned: generation")
    assert daemon.poll() is None
    assert _stop(daemon, notify)[0] == 0


def test_sighup_with_broken_config_is_reported(procs: Procs, notify: Notify,
                                               tmp_path: Path) -> None:
    """SIGHUP after the config file broke: the daemon keeps running and says so."""
    port = free_port()
    token = _start_lab(procs, tmp_path, port)
    config = tmp_path / "config.toml"
    config.write_text('[agent]\npermanent_retry = "1h"\n')
    daemon = _run(procs, tmp_path, _daemon_env(notify, port, token), "--config", str(config))
    notify.status("provisioned: generation 1")
    config.write_text("[agent]\npermanent_retry = [\n")
    daemon.send_signal(signal.SIGHUP)
    msg = notify.expect(lambda m: m.startswith("READY=1") and "reload failed" in m)
    assert f"{config}:" in msg and "invalid TOML" in msg
    time.sleep(0.3)
    assert daemon.poll() is None
    assert _stop(daemon, notify)[0] == 0
    assert "reload failed, keeping the previous settings" in (tmp_path / "daemon.log").read_text()


def test_wrong_token_is_a_permanent_failure(procs: Procs, notify: Notify, tmp_path: Path) -> None:
    """401 from the lab server: failed status, the daemon stays up; SIGUSR1 retries now."""
    port = free_port()
    _start_lab(procs, tmp_path, port)
    env = _daemon_env(notify, port, "definitely-the-wrong-token")
    daemon = _run(procs, tmp_path, env)
    msg = notify.status("failed:")
    assert msg.startswith("STATUS=failed: Unauthorized: ")
    assert msg.endswith("; retrying in 60 min")
    time.sleep(0.5)
    assert daemon.poll() is None
    daemon.send_signal(signal.SIGUSR1)
    notify.status("enrolling", 5)
    notify.status("failed: Unauthorized: ")
    assert _stop(daemon, notify)[0] == 0


def test_watchdog_pings(procs: Procs, notify: Notify, tmp_path: Path) -> None:
    """WATCHDOG_USEC=400000: WATCHDOG=1 keeps coming from the idle loop (children: unit tests)."""
    port = free_port()
    token = _start_lab(procs, tmp_path, port)
    daemon = _run(procs, tmp_path, _daemon_env(notify, port, token, WATCHDOG_USEC="400000"))
    notify.status("provisioned: generation 1")
    for _ in range(5):  # they keep coming while idle, each within a bounded wait
        notify.expect(lambda m: m == "WATCHDOG=1", 2)
    assert _stop(daemon, notify)[0] == 0
