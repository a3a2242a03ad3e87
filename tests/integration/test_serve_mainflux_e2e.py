"""End to end: ``edge-provision enroll`` (a process) through ``serve --backend mainflux``
(a process) into the fake Mainflux, for both auth generations and both kinds of lab
credentials; and a gateway that bootstraps from the platform's Bootstrap directly.

What is on the platform is read from the fake's own state, never from the lab.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from edge_provision.lab.server import TOKEN_FILE
from edge_provision.testing.mainflux import ADMIN_EMAIL, ADMIN_PASSWORD, FakeMainflux

EXT_ID = "02:42:ac:11:00:51"
EXT_KEY = "end-to-end-external-key-51"
TIMEOUT_S = 60
START_S = 30


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MF_", "EDGE_PROVISION_"))}


@dataclass
class Lab:
    """A ``serve`` process: its URL, state directory, the secrets it holds, its output."""

    proc: subprocess.Popen[str]
    url: str
    state: Path
    secrets: list[str]
    banner: list[str]

    def token(self) -> str:
        """The lab's operator token (the API key, or the generated one)."""
        path = self.state / TOKEN_FILE
        return path.read_text().strip() if path.exists() else self.secrets[0]


def _read_lines(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)


@pytest.fixture(params=["0.12", "0.13"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeMainflux]:
    """The fake platform (0.12: bare tokens and keys; 0.13: Bearer / Thing)."""
    with FakeMainflux(generation=request.param) as f:
        yield f


@pytest.fixture(params=["api-key", "login"])
def lab(request: pytest.FixtureRequest, fake: FakeMainflux, tmp_path: Path) -> Iterator[Lab]:
    """``python -m edge_provision serve --backend mainflux`` configured like upstream Provision."""
    state = tmp_path / "lab"
    env = {**_clean_env(), "MF_PROVISION_THINGS_LOCATION": fake.things_url,
           "MF_PROVISION_BS_SVC_URL": fake.bootstrap_url + "/things"}
    if request.param == "login":
        env.update(MF_PROVISION_USERS_LOCATION=fake.users_url, MF_PROVISION_USER=ADMIN_EMAIL,
                   MF_PROVISION_PASS=ADMIN_PASSWORD)
        secrets = [ADMIN_PASSWORD]
    else:
        env["MF_PROVISION_API_KEY"] = fake.api_key()
        secrets = [env["MF_PROVISION_API_KEY"]]
    with subprocess.Popen(
        [sys.executable, "-m", "edge_provision", "--state-dir", str(state), "serve",
         "--backend", "mainflux", "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True,
    ) as proc:
        running = _started(proc, state, secrets)
        try:
            yield running
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert proc.stderr is not None
        output = proc.stderr.read() + "".join(running.banner)
    for secret in running.secrets:
        assert secret not in output


def _started(proc: subprocess.Popen[str], state: Path, secrets: list[str]) -> Lab:
    """Wait for the banner (up to "press Ctrl-C"); the lab it describes."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    banner: list[str] = []
    url = None
    deadline = time.monotonic() + START_S
    while not (banner and banner[-1].startswith("press Ctrl-C")):
        assert time.monotonic() < deadline, banner
        try:
            line = lines.get(timeout=0.5).rstrip("\n")
        except queue.Empty:
            if proc.poll() is not None:
                proc.kill()
                raise AssertionError(proc.stderr.read() if proc.stderr else "exited") from None
            continue
        banner.append(line)
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)", line)
        url = match.group(1) if match else url
    assert url is not None, banner
    return Lab(proc, url, state, secrets, banner)


def enroll(tmp_path: Path, lab: Lab, state: str, *, bootstrap_url: str | None = None,
           send_token: bool = True) -> dict[str, object]:
    """``python -m edge_provision --state-dir <tmp>/<state> enroll --json``; its document."""
    env = {**_clean_env(), "EDGE_PROVISION_EXTERNAL_ID": EXT_ID,
           "EDGE_PROVISION_EXTERNAL_KEY": EXT_KEY, "EDGE_PROVISION_MQTT_VERIFY": "never",
           "EDGE_PROVISION_PROVISION_URL": lab.url}
    if send_token:
        env["EDGE_PROVISION_TOKEN"] = lab.token()
    if bootstrap_url is not None:
        env["EDGE_PROVISION_BOOTSTRAP_URL"] = bootstrap_url
    done = subprocess.run(
        [sys.executable, "-m", "edge_provision", "--state-dir", str(tmp_path / state), "enroll",
         "--json"], env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    for secret in (EXT_KEY, *lab.secrets):
        assert secret not in done.stdout and secret not in done.stderr
    doc: dict[str, object] = json.loads(done.stdout)
    return doc


def platform_set(fake: FakeMainflux) -> tuple[list[str], list[str], list[dict[str, object]]]:
    """What the fake holds for EXT_ID: thing ids, channel ids, bootstrap configs."""
    def ours(rows: list[dict[str, object]]) -> list[str]:
        return [str(r["id"]) for r in rows
                if r["metadata"].get("edge_provision_mapping") == EXT_ID]  # type: ignore[attr-defined]

    configs = [c for c in fake.configs() if c["external_id"] == EXT_ID]
    return ours(fake.things()), ours(fake.channels()), configs


def test_enroll_through_the_lab_twice_makes_one_thing_set(tmp_path: Path, lab: Lab,
                                                          fake: FakeMainflux) -> None:
    """Two gateways' states enroll (one creates, one finds it), the first again is unchanged:
    one thing, two channels, one whitelisted config on the platform; the lab CA signed both."""
    assert any(b.startswith("backend: mainflux, things ") for b in lab.banner), lab.banner
    assert any(b.startswith("certificates: signed by the lab CA") for b in lab.banner)
    # with an API key configured, /mapping needs no header (as upstream); a login: the lab's token
    first = enroll(tmp_path, lab, "gw-1", send_token=(lab.state / TOKEN_FILE).exists())
    assert first["ok"] and first["created_mapping"]
    second = enroll(tmp_path, lab, "gw-2")  # a re-imaged gateway with the same identity
    assert second["ok"] and not second["created_mapping"]
    assert second["thing_id"] == first["thing_id"]
    again = enroll(tmp_path, lab, "gw-1")
    assert again["ok"] and again["changed"] is False and again["generation"] == 1

    things, channels, configs = platform_set(fake)
    assert things == [first["thing_id"]] and len(channels) == 2
    assert len(configs) == 1 and configs[0]["state"] == 1
    assert sorted(ch for ch, th in fake.connections() if th == first["thing_id"]) == sorted(
        channels)
    assert fake.calls("things", "POST /things/bulk") == 1

    headers = {"Authorization": f"Bearer {lab.token()}"}
    certs = requests.get(f"{lab.url}/certs", headers=headers, timeout=10).json()
    assert certs["total"] == 2 and {c["thing_id"] for c in certs["certs"]} == {first["thing_id"]}
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "edge_provision", "--state-dir", str(tmp_path / "gw-2"),
         "status", "--json"], env=_clean_env(), capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False).stdout)
    assert status["state"] == "provisioned"
    assert status["certificates"][0]["subject"] == f"CN={first['thing_id']}"
    metrics = requests.get(f"{lab.url}/metrics", timeout=10).text
    assert 'service="things",status="201"' in metrics  # the bulk creation, counted once


@pytest.mark.parametrize("lab", ["api-key"], indirect=True)
def test_a_gateway_may_bootstrap_from_the_platform_directly(tmp_path: Path, lab: Lab,
                                                            fake: FakeMainflux) -> None:
    """Bootstrap URL = the platform's Bootstrap; /mapping and the CSR through the lab."""
    first = enroll(tmp_path, lab, "gw-1", bootstrap_url=fake.bootstrap_url)
    assert first["ok"] and first["created_mapping"]
    looked_up = fake.calls("bootstrap", "GET /things/bootstrap/{external_id}", "200")
    assert looked_up >= 1
    second = enroll(tmp_path, lab, "gw-2", bootstrap_url=fake.bootstrap_url)
    assert second["ok"] and not second["created_mapping"]
    assert second["thing_id"] == first["thing_id"]
    assert fake.calls("bootstrap", "GET /things/bootstrap/{external_id}", "200") > looked_up
    things, channels, configs = platform_set(fake)
    assert things == [first["thing_id"]] and len(channels) == 2 and len(configs) == 1
