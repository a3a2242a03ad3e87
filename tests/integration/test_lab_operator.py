"""Operator view (paginated listings, metrics) and ``edge-provision serve`` as a process.

/openapi.json is checked against the server in test_lab_openapi.py.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _lab_util import lab_settings

from edge_provision.crypto import pki
from edge_provision.errors import ConfigError
from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread

TIMEOUT = 10
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server with five gateways provisioned."""
    with start_in_thread(lab_settings(tmp_path)) as server:
        token = (tmp_path / "lab" / TOKEN_FILE).read_text().strip()
        for i in range(5):
            resp = requests.post(f"{server.url}/mapping", timeout=TIMEOUT,
                                 json={"external_id": f"gw-{i}", "external_key": f"secret-{i}"},
                                 headers={"Authorization": token})
            assert resp.status_code == 201
        yield server
        assert server.service.internal_errors == 0


@pytest.fixture
def auth(tmp_path: Path, lab: RunningLabServer) -> dict[str, str]:
    """The operator's Authorization header."""
    return {"Authorization": "Bearer " + (tmp_path / "lab" / TOKEN_FILE).read_text().strip()}


@pytest.mark.parametrize(("path", "name", "total"), [
    ("/things", "things", 5), ("/channels", "channels", 10), ("/things/configs", "configs", 5),
    ("/certs", "certs", 0)])
def test_listings_paginate(lab: RunningLabServer, auth: dict[str, str], path: str, name: str,
                           total: int) -> None:
    """Every listing pages with offset/limit and reports the total."""
    first = requests.get(f"{lab.url}{path}?offset=0&limit=2", headers=auth, timeout=TIMEOUT)
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"total", "offset", "limit", name}
    assert (body["total"], body["offset"], body["limit"]) == (total, 0, 2)
    assert len(body[name]) == min(2, total)
    tail = requests.get(f"{lab.url}{path}?offset=4&limit=100", headers=auth,
                        timeout=TIMEOUT).json()
    assert len(tail[name]) == max(0, total - 4)
    default = requests.get(f"{lab.url}{path}", headers=auth, timeout=TIMEOUT).json()
    assert default["limit"] == 10


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "offset=-1",
                                   "offset=1.5", "limit=", "limit=%EF%BC%91"])
def test_bad_page_parameters(lab: RunningLabServer, auth: dict[str, str], query: str) -> None:
    """Out-of-range or non-numeric offset/limit gets 400 naming the parameter."""
    resp = requests.get(f"{lab.url}/things?{query}", headers=auth, timeout=TIMEOUT)
    assert resp.status_code == 400
    assert query.split("=")[0] in resp.json()["error"]


def test_listings_need_the_token(lab: RunningLabServer) -> None:
    """Listings refuse requests without or with a wrong token."""
    for path in ("/things", "/channels", "/things/configs", "/certs"):
        assert requests.get(f"{lab.url}{path}", timeout=TIMEOUT).status_code == 401
        assert requests.get(f"{lab.url}{path}", headers={"Authorization": "Bearer x"},
                            timeout=TIMEOUT).status_code == 401


def test_configs_never_show_external_keys(lab: RunningLabServer, auth: dict[str, str]) -> None:
    """Bootstrap configs list external ids and thing keys, never external keys."""
    body = requests.get(f"{lab.url}/things/configs?limit=100", headers=auth, timeout=TIMEOUT)
    assert "secret-" not in body.text
    assert {c["external_id"] for c in body.json()["configs"]} == {f"gw-{i}" for i in range(5)}
    assert all("mainflux_key" in c for c in body.json()["configs"])


def test_https_listener(tmp_path: Path) -> None:
    """With a server certificate and key set the server speaks HTTPS and says so."""
    ca = pki.LocalCA.create()
    cert, key = ca.issue_server_cert(["127.0.0.1"], ttl_s=3600)
    (tmp_path / "server.crt").write_text(cert.cert_pem)
    (tmp_path / "server.key").write_text(key)
    (tmp_path / "ca.crt").write_text(ca.cert_pem)
    settings = lab_settings(tmp_path, server_cert=tmp_path / "server.crt",
                            server_key=tmp_path / "server.key")
    with start_in_thread(settings) as lab:
        assert lab.url.startswith("https://127.0.0.1:")
        with requests.Session() as session:  # closed before the server stops
            resp = session.get(f"{lab.url}/health", verify=str(tmp_path / "ca.crt"),
                               headers={"Connection": "close"}, timeout=TIMEOUT)
            assert resp.json()["status"] == "pass"


def test_unusable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    """Missing certificate files stop the start with a ConfigError naming the settings."""
    settings = lab_settings(tmp_path, server_cert=tmp_path / "nope.crt",
                            server_key=tmp_path / "nope.key")
    with pytest.raises(ConfigError, match="MF_PROVISION_SERVER_CERT"):
        start_in_thread(settings)


def test_port_in_use_is_a_config_error(tmp_path: Path, lab: RunningLabServer) -> None:
    """A port that is taken gives a ConfigError suggesting another one."""
    with pytest.raises(ConfigError, match="--port"):
        start_in_thread(lab_settings(tmp_path / "second", port=lab.port))


# ------------------------------------------------------------------- as a process


def _reader(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)


def _spawn(state: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.Popen[str]:
    """``python -m edge_provision --state-dir <state> serve --port 0 <args>``, piped."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MF_", "EDGE_PROVISION_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "edge_provision", "--state-dir", str(state), "serve",
         "--port", "0", *args],
        cwd=REPO, env={**clean, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


class _Output:
    """The stdout lines of a spawned server, read in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=_reader, args=(proc.stdout, self._queue),
                                        daemon=True)
        self._thread.start()

    def url(self) -> str:
        """Wait (20 s at most) for the ``listening on`` line; the URL in it."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, f"serve exited early: {self.lines}"
                continue
            self.lines.append(line)
            match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
            if match:
                return match.group(1)
        raise AssertionError(f"no 'listening on' line in 20 s: {self.lines}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str]:
        """Send ``sig``, wait for the exit; (exit code, stderr). Kills it after 20 s."""
        try:
            self.proc.send_signal(sig)
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._thread.join(timeout=5)
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_subprocess(tmp_path: Path, sig: signal.Signals) -> None:
    """`python -m edge_provision serve --port 0` prints its URL, serves, and exits 0 on a signal."""
    state = tmp_path / "state"
    with _spawn(state) as proc:
        out = _Output(proc)
        url = out.url()
        token = (state / TOKEN_FILE).read_text().strip()
        assert requests.get(f"{url}/health", timeout=TIMEOUT).json()["status"] == "pass"
        resp = requests.post(f"{url}/mapping", json={"external_id": "p", "external_key": "k"},
                             headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        assert resp.status_code == 201
        code, errors = out.stop(sig)
    assert code == 0
    text = "".join(out.lines)
    assert f"token in {state / TOKEN_FILE}" in text
    assert "layout: <built-in> (1 things, 2 channels)" in text
    assert f"database: {state / 'lab.db'}" in text
    assert token not in text
    assert token not in errors


def test_second_server_on_one_state_directory_is_refused(tmp_path: Path) -> None:
    """A second server (thread or process) on a state directory in use names the first's pid."""
    settings = lab_settings(tmp_path)
    with start_in_thread(settings) as first:
        with pytest.raises(ConfigError, match=rf"another lab server \(pid {os.getpid()}\)"):
            start_in_thread(settings)
        with _spawn(tmp_path / "lab") as proc:
            _, errors = proc.communicate(timeout=30)
        assert proc.returncode == 2, errors
        assert f"in use by another lab server (pid {os.getpid()})" in errors
        assert "--state-dir" in errors
        assert requests.get(f"{first.url}/health", timeout=TIMEOUT).status_code == 200
    with start_in_thread(settings) as again:  # the lock went with the first server
        assert requests.get(f"{again.url}/health", timeout=TIMEOUT).status_code == 200


def test_lock_of_a_killed_server_is_free(tmp_path: Path) -> None:
    """A server killed with SIGKILL leaves no lock behind: the next one starts."""
    with _spawn(tmp_path / "state") as proc:
        out = _Output(proc)
        out.url()
        proc.kill()
        proc.wait(timeout=10)
        out.stop()
    with start_in_thread(lab_settings(tmp_path, state_dir=tmp_path / "state")) as lab:
        assert requests.get(f"{lab.url}/health", timeout=TIMEOUT).status_code == 200


def test_logged_values_cannot_forge_log_lines(tmp_path: Path) -> None:
    """A thing id with a line break and ANSI codes is logged escaped, on its own line."""
    forged = "x\n2026-01-01 00:00:00,000 ERROR edge_provision: forged\x1b[2J"
    with _spawn(tmp_path / "state", "--token", "op-token") as proc:
        out = _Output(proc)
        url = out.url()
        resp = requests.delete(f"{url}/certs/{requests.utils.quote(forged, safe='')}",
                               headers={"Authorization": "Bearer op-token"}, timeout=TIMEOUT)
        assert resp.status_code == 200
        code, errors = out.stop()
    assert code == 0
    assert "\x1b" not in errors
    revoked = [line for line in errors.splitlines() if "certificates revoked" in line]
    assert revoked and all(line.endswith("forged\\x1b[2J count=0") for line in revoked), revoked
    assert not any(line.startswith("2026-01-01") for line in errors.splitlines())


def test_metrics_count_mappings_fetches_certificates_and_statuses(
    lab: RunningLabServer, auth: dict[str, str]
) -> None:
    """/metrics reports what happened: mappings, bootstrap fetches, CSRs, HTTP statuses."""
    body = {"external_id": "metrics-gw", "external_key": "metrics-key"}
    created = requests.post(f"{lab.url}/mapping", json=body, headers=auth, timeout=10)
    assert created.status_code == 201
    thing = created.json()["things"][0]
    assert requests.post(f"{lab.url}/mapping", json=body, headers=auth,
                         timeout=10).status_code == 201  # a repeat is not a new mapping
    fetched = requests.get(f"{lab.url}/things/bootstrap/metrics-gw",
                           headers={"Authorization": "Thing metrics-key"}, timeout=10)
    assert fetched.status_code == 200
    key = pki.generate_key()
    signed = requests.post(f"{lab.url}/certs/csr", timeout=10,
                           headers={"Authorization": f"Thing {thing['key']}"},
                           json={"thing_id": thing["id"],
                                 "csr": pki.make_csr(key, thing["id"])})
    assert signed.status_code == 201
    assert requests.get(f"{lab.url}/things/bootstrap/metrics-gw", timeout=10,
                        headers={"Authorization": "Thing wrong"}).status_code == 404
    text = requests.get(f"{lab.url}/metrics", timeout=10).text
    values = dict(re.findall(r"^(edge_provision_lab_\S+) (\S+)$", text, re.M))
    # the fixture provisioned five gateways before this test
    assert values["edge_provision_lab_mappings_total"] == "6"
    assert values["edge_provision_lab_bootstrap_fetches_total"] == "1"
    assert values["edge_provision_lab_certificates_issued_total"] == "1"
    assert values["edge_provision_lab_things"] == "6"
    assert values["edge_provision_lab_certificates"] == "1"
    assert values['edge_provision_lab_http_requests_total{status="201"}'] == "8"
    assert values['edge_provision_lab_http_requests_total{status="404"}'] == "1"
    assert "# TYPE edge_provision_lab_mappings_total counter" in text


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.2, 0.5])
def test_serve_stops_cleanly_on_sigterm_during_start_up(tmp_path: Path, delay_s: float) -> None:
    """SIGTERM at any moment of start-up (before uvicorn's own handlers) still exits 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MF_", "EDGE_PROVISION_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_provision", "--state-dir", str(tmp_path / "s"), "serve",
         "--port", "0"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        # wait until the process has at least imported the lab server (the db appears)
        while not (tmp_path / "s" / "lab.db").exists() and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.01)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
