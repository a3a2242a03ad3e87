"""``edge-provision simulate`` against the real lab server (embedded backend), in process."""

from __future__ import annotations

import http.client
import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from _lab_util import lab_settings

from edge_provision.cli import main
from edge_provision.cli.simulate import EXIT_AUDIT_FAILED, EXIT_GATEWAYS_FAILED
from edge_provision.fleet.gateways import RunPrefix
from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread
from edge_provision.net import free_port

TIMEOUT = 10
NS = {"h": "http://www.w3.org/1999/xhtml", "s": "http://www.w3.org/2000/svg"}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """The lab server with the built-in layout on 127.0.0.1:0."""
    with start_in_thread(lab_settings(tmp_path)) as server:
        yield server


@pytest.fixture
def token(tmp_path: Path, lab: RunningLabServer) -> str:
    """The lab server's operator token."""
    return (tmp_path / "lab" / TOKEN_FILE).read_text().strip()


def simulate(capsys: pytest.CaptureFixture[str], url: str, token: str, *args: str
             ) -> tuple[int, dict[str, Any]]:
    """Run ``simulate --json`` in process; (exit code, the JSON document)."""
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--json", "--provision-url", url, "--token", token,
              "--time-scale", "0.01", *args])
    out = capsys.readouterr().out
    code = exited.value.code
    return (code if isinstance(code, int) else 1), json.loads(out)


@dataclass
class Fault:
    """Answer the first ``count`` requests ``method path*`` with ``status`` (0: drop)."""

    method: str
    path_prefix: str
    count: int
    status: int = 503
    seen: int = 0


@dataclass
class FaultProxy:
    """A loopback proxy in front of the lab server that fails the first matching requests."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    injected: int = 0
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _fault(self) -> Fault | None:
                with lock:
                    proxy.paths.append(self.path)
                    for fault in proxy.faults:
                        if (self.command == fault.method and self.path.startswith(
                                fault.path_prefix) and fault.seen < fault.count):
                            fault.seen += 1
                            proxy.injected += 1
                            return fault
                return None

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = self._fault()
                if fault is not None and fault.status == 0:
                    self.close_connection = True
                    return  # no answer at all: the connection just closes
                if fault is not None:
                    payload = b'{"error":"injected fault"}'
                    self.send_response(fault.status)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "connection", "date", "server"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(lab: RunningLabServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the lab server."""
    fault_proxy = FaultProxy(lab.url)
    yield fault_proxy
    fault_proxy.stop()


def test_fleet_enrolls_audits_and_reports(lab: RunningLabServer, token: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """30 gateways with CSR: all enrolled once, audit clean, report agrees with --json."""
    report = tmp_path / "herd.html"
    code, doc = simulate(capsys, lab.url, token, "--gateways", "30", "--concurrency", "4",
                         "--report", str(report))
    run, audit = doc["run"], doc["audit"]
    assert code == 0 and doc["ok"] is True
    assert (run["enrolled"], run["failed"], run["mappings_created"]) == (30, 0, 30)
    assert set(run["steps"]) == {"lookup", "mapping", "bootstrap", "csr", "enrollment"}
    assert all(run["steps"][s]["count"] == 30 for s in ("mapping", "bootstrap", "csr"))
    assert audit["ok"] and (audit["configs"], audit["things"], audit["fetched"]) == (30, 30, 30)
    assert audit["channels"] == 60
    listed = requests.get(f"{lab.url}/things?limit=1", timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {token}"}).json()
    assert listed["total"] == 30
    certs = requests.get(f"{lab.url}/certs?limit=1", timeout=TIMEOUT,
                         headers={"Authorization": f"Bearer {token}"}).json()
    assert certs["total"] == 30  # one CSR signed per gateway
    root = ET.fromstring(report.read_bytes())
    rows = root.findall(".//h:table[@id='steps']/h:tr", NS)[1:]
    table = {r[0].text: [c.text for c in r[1:]] for r in rows}
    for step, numbers in run["steps"].items():
        assert table[step] == [str(numbers["count"])] + [
            f"{numbers[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
    bars = root.findall(".//s:svg[@id='timeline']/s:rect[@class='enrolled']", NS)
    assert [int(b.get("data-count", "-1")) for b in bars] == run["timeline"]["enrolled"]
    assert sum(run["timeline"]["enrolled"]) == 30
    summary = {r[0].text: r[1].text for r in root.findall(".//h:table[@id='summary']/h:tr",
                                                           NS)}
    assert summary["enrolled"] == "30"
    assert summary["gateways/s"] == f"{run['gateways_per_s']:.1f}"


def test_transient_failures_are_retried_with_backoff(
        proxy: FaultProxy, token: str, capsys: pytest.CaptureFixture[str]) -> None:
    """503s and dropped connections at first: the fleet retries and every gateway enrolls."""
    proxy.faults += [Fault("POST", "/mapping", 6), Fault("GET", "/things/bootstrap/", 4, 0),
                     Fault("POST", "/certs/csr", 3, 502)]
    code, doc = simulate(capsys, proxy.url, token, "--gateways", "20", "--concurrency", "4")
    run = doc["run"]
    assert proxy.injected == 13
    assert code == 0 and doc["audit"]["ok"]
    assert run["enrolled"] == 20 and run["failures"] == {}
    assert run["retries"] == 13 == run["attempt_errors"]["ServiceUnavailable"]
    assert run["failed_steps"] == {"lookup": 4, "mapping": 6, "csr": 3}
    assert run["mappings_created"] == 20  # a gateway retried after its mapping maps no more
    assert sum(run["timeline"]["failed_attempts"]) == 13


def test_gateways_that_give_up_exit_3(proxy: FaultProxy, token: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """With one attempt each, the gateways whose mapping failed give up: exit 3, audit clean."""
    proxy.faults.append(Fault("POST", "/mapping", 5, 503))
    code, doc = simulate(capsys, proxy.url, token, "--gateways", "12", "--concurrency", "2",
                         "--max-attempts", "1", "--no-csr")
    assert code == EXIT_GATEWAYS_FAILED and doc["ok"] is False
    assert doc["run"]["failures"] == {"ServiceUnavailable": 5}
    assert doc["run"]["enrolled"] == 7
    assert doc["audit"]["ok"] and doc["audit"]["configs"] == 7


def test_audit_catches_a_planted_duplicate(lab: RunningLabServer, token: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A second mapping for gateway 3 (another MAC spelling, another key): exit 4."""
    code, first = simulate(capsys, lab.url, token, "--gateways", "8", "--seed", "42",
                           "--no-csr")
    assert code == 0 and first["audit"]["ok"]
    prefix = RunPrefix(int(first["fleet"]["run_name"].removeprefix("sim-"), 16))
    mac = f"{prefix.mac_head}0003".upper()
    spelled = "-".join(mac[i:i + 2] for i in range(0, 12, 2))
    planted = requests.post(f"{lab.url}/mapping", timeout=TIMEOUT,
                            json={"external_id": spelled, "external_key": "another-key"},
                            headers={"Authorization": f"Bearer {token}"})
    assert planted.status_code == 201
    code, again = simulate(capsys, lab.url, token, "--gateways", "8", "--seed", "42",
                           "--no-csr")
    assert again["fleet"]["run_name"] == first["fleet"]["run_name"]  # the same fleet reboots
    assert again["run"]["mappings_created"] == 0 and again["run"]["enrolled"] == 8
    assert code == EXIT_AUDIT_FAILED and again["ok"] is False
    audit = again["audit"]
    assert audit["duplicates"] == 1 and audit["findings"]["duplicate"] >= 1
    assert any("gateway 3 " in p and p.startswith("duplicate") for p in audit["problems"])
    assert "another-key" not in json.dumps(again)


def test_secure_bootstrap_without_csr_in_text(proxy: FaultProxy, token: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """--secure --no-csr: the encrypted endpoint, no CSR; the table and verdict printed."""
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--provision-url", proxy.url, "--token", token, "--gateways", "5",
              "--secure", "--no-csr", "--ramp", "0.2"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "enrolled 5/5" in out and "audit: ok" in out
    assert "\nlookup " in out and "\ncsr " not in out
    device = [p for p in proxy.paths if p.startswith("/things/bootstrap/")]
    assert len(device) == 5 * 3  # lookup, fetch after the mapping, the audit's fetch
    assert all(p.startswith("/things/bootstrap/secure/") for p in device)
    assert not any(p.startswith("/certs/csr") for p in proxy.paths)


def test_no_token_is_a_usage_error(lab: RunningLabServer, token: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Without the operator token the audit cannot run: exit 2 before any gateway starts."""
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--provision-url", lab.url, "--gateways", "3"])
    assert exited.value.code == 2
    assert "--token" in capsys.readouterr().err
    listed = requests.get(f"{lab.url}/things?limit=1", timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {token}"})
    assert listed.json()["total"] == 0


def test_unreachable_server_exits_75_before_any_gateway(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening: a temporary failure (75) at once, not ten backoffs per gateway."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--provision-url", url, "--token", "t", "--gateways", "3",
              "--no-csr"])
    assert exited.value.code == 75
    assert url in capsys.readouterr().err


TWO_THINGS = """
[bootstrap]
  provision = true
  autowhite_list = true

[[things]]
  name = "gateway"
  [things.metadata]
    external_id = "placeholder"

[[things]]
  name = "sensor"

[[channels]]
  name = "control-channel"
  [channels.metadata]
    type = "control"

[[channels]]
  name = "data-channel"
  [channels.metadata]
    type = "data"
"""


def test_two_thing_layout_is_one_thing_set_per_gateway(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Gateway and sensor things: both get a CSR; the audit counts both as the gateway's set."""
    layout = tmp_path / "layout.toml"
    layout.write_text(TWO_THINGS)
    with start_in_thread(lab_settings(tmp_path, layout_file=layout)) as server:
        secret = (tmp_path / "lab" / TOKEN_FILE).read_text().strip()
        code, doc = simulate(capsys, server.url, secret, "--gateways", "5")
        certs = requests.get(f"{server.url}/certs?limit=1", timeout=TIMEOUT,
                             headers={"Authorization": f"Bearer {secret}"}).json()
    assert code == 0 and doc["audit"]["ok"]
    assert (doc["audit"]["things"], doc["audit"]["configs"]) == (10, 5)
    assert certs["total"] == 10  # a key made here and a CSR for each thing
