"""``edge-provision enroll / status / reset`` as a technician runs them (real processes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_util import EXT_ID, EXT_KEY, assert_clean, cli, lab_server, secrets_of, token

from edge_provision.lab.server import RunningLabServer


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server for the CLI children."""
    with lab_server(tmp_path) as server:
        yield server


def test_enroll_prints_one_line_per_step_then_status(tmp_path: Path,
                                                     lab: RunningLabServer) -> None:
    """Text output names each step with its URL; status shows ids, never keys."""
    done = cli(tmp_path, "enroll", url=lab.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    steps = [line.split()[1] for line in lines if line[:4] in ("ok  ", "skip", "FAIL")]
    assert steps == ["identity", "lookup", "mapping", "bootstrap", "certificates", "store",
                     "verify", "switch", "prune", "handoff"]
    assert any("mapping" in line and f"{lab.url}/mapping" in line for line in lines)
    assert any(line.startswith("enrolled: external_id " + EXT_ID) for line in lines)
    status = cli(tmp_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["state"] == "provisioned" and doc["external_id"] == EXT_ID
    assert doc["current_generation"] == 1 and len(doc["things"]) == 1
    assert [c["type"] for c in doc["channels"]] == ["control", "data"]
    cert = doc["certificates"][0]
    assert cert["subject"] == f"CN={doc['things'][0]['id']}" and cert["expired"] is False
    assert doc["next_action"] == "renew" and doc["last_error"] is None
    text = cli(tmp_path, "status")
    assert "certificate  CN=" in text.stdout and "state        provisioned" in text.stdout
    for run in (done, status, text):
        assert_clean(run, secrets_of(tmp_path, lab))


def test_enroll_json_document(tmp_path: Path, lab: RunningLabServer) -> None:
    """--json prints one document with the documented keys; a repeat says unchanged."""
    first = cli(tmp_path, "enroll", "--json", url=lab.url)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert {"ok", "external_id", "generation", "created_mapping", "thing_id", "channels",
            "certificates", "steps", "handoff", "changed", "things", "next_action",
            "next_action_at"} <= set(doc)
    assert doc["ok"] and doc["created_mapping"] and doc["changed"]
    assert doc["handoff"]["ok"] is True
    assert all({"step", "status", "message", "url"} == set(s) for s in doc["steps"])
    again = json.loads(cli(tmp_path, "enroll", "--json", url=lab.url).stdout)
    assert again["changed"] is False and again["generation"] == 1
    assert_clean(first, secrets_of(tmp_path, lab))


def test_status_verbose_shows_sources(tmp_path: Path, lab: RunningLabServer) -> None:
    """--verbose lists each setting with where it came from (secrets as <set>)."""
    done = cli(tmp_path, "status", "--json", "--verbose", url=lab.url)
    doc = json.loads(done.stdout)
    rows = {row["name"]: row for row in doc["settings"]}
    assert rows["provision_url"]["source"] == "env EDGE_PROVISION_PROVISION_URL"
    assert rows["token"]["value"] == "<set>" and rows["external_key"]["value"] == "<set>"
    assert doc["state"] == "unprovisioned" and doc["generation"] is None
    assert_clean(done, [EXT_KEY, token(tmp_path)])


def test_reset_needs_confirmation_then_enroll_reuses_things(tmp_path: Path,
                                                           lab: RunningLabServer) -> None:
    """reset refuses without a TTY; --yes forgets; enroll again finds the same thing."""
    first = json.loads(cli(tmp_path, "enroll", "--json", url=lab.url).stdout)
    refused = cli(tmp_path, "reset")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = cli(tmp_path, "reset", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["forgot_generation"] == 1
    status = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert status["state"] == "unprovisioned" and status["current_generation"] is None
    assert status["generations"] == [1]
    again = json.loads(cli(tmp_path, "enroll", "--json", url=lab.url).stdout)
    assert again["thing_id"] == first["thing_id"] and again["created_mapping"] is False
    assert again["generation"] == 2


def test_wrong_external_key_exits_1_with_what_to_do(tmp_path: Path,
                                                    lab: RunningLabServer) -> None:
    """The external_id is taken with another key: exit 1, says which step and what to do."""
    assert cli(tmp_path, "enroll", url=lab.url).returncode == 0
    wrong = cli(tmp_path, "enroll", url=lab.url, key="another-key-entirely", state="agent2")
    assert wrong.returncode == 1
    assert "step mapping failed" in wrong.stderr and "original external_key" in wrong.stderr
    assert "FAIL mapping" in wrong.stdout
    assert "another-key-entirely" not in wrong.stdout + wrong.stderr
    status = json.loads(cli(tmp_path, "status", "--json", state="agent2").stdout)
    assert status["last_error"]["kind"] == "AlreadyProvisioned"
    assert status["state"] == "failed-permanent"


def test_enroll_without_provision_url_is_a_config_error(tmp_path: Path) -> None:
    """No URL anywhere: exit 2 naming the flag and the variable."""
    done = cli(tmp_path, "enroll", "--json")
    assert done.returncode == 2
    doc = json.loads(done.stdout)
    assert doc["ok"] is False and "EDGE_PROVISION_PROVISION_URL" in doc["error"]["message"]


def test_server_down_exits_75(tmp_path: Path) -> None:
    """Nothing listening: a temporary failure (exit 75), recorded for the daemon."""
    done = cli(tmp_path, "enroll", "--provision-url", "http://127.0.0.1:9", "--json")
    assert done.returncode == 75, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["retryable"] is True
    assert (error["step"], error["reason"]) == ("lookup", "unavailable")
    status = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert status["last_error"]["kind"] == "ServiceUnavailable"
    assert status["next_action"] == "enroll"


def test_enroll_writes_the_prometheus_textfile(tmp_path: Path, lab: RunningLabServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With agent.metrics_textfile set, enroll leaves certificate expiry and generation there."""
    textfile = tmp_path / "metrics" / "edge_provision.prom"
    textfile.parent.mkdir()
    monkeypatch.setenv("EDGE_PROVISION_METRICS_TEXTFILE", str(textfile))
    done = cli(tmp_path, "enroll", url=lab.url)
    assert done.returncode == 0, done.stderr
    text = textfile.read_text(encoding="utf-8")
    assert "# TYPE edge_provision_certificate_expiry_timestamp_seconds gauge" in text
    assert "edge_provision_current_generation 1" in text
    assert_clean(done, secrets_of(tmp_path, lab))
    for secret in secrets_of(tmp_path, lab):
        assert secret not in text
