"""The agent's commands with careless people, damaged files and full disks (issue 9).

Each test runs ``python -m edge_provision`` as a technician does, against a lab server on
127.0.0.1 (in a thread), on a real state directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_util import (
    EXT_ID,
    EXT_KEY,
    EXTREME_TIMES,
    TIMEOUT_S,
    cli,
    cli_argv,
    cli_env,
    lab_server,
    save_extreme_state,
    secrets_of,
    token,
)
from _daemon_util import LockHolder, Notify, read_line, stop_daemon
from _full_disk import full_disk_available, run_on_full_disk

from edge_provision.lab.server import RunningLabServer


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server for the CLI children."""
    with lab_server(tmp_path) as server:
        yield server


@pytest.mark.parametrize("command", ["enroll", "renew"])
def test_a_command_by_hand_waits_for_the_lock_and_says_who_holds_it(
        tmp_path: Path, lab: RunningLabServer, command: str) -> None:  # fmt: skip
    """Another run holds the state lock: one line naming it, then the command goes ahead."""
    if command == "renew":
        assert cli(tmp_path, "enroll", url=lab.url).returncode == 0
    with LockHolder(tmp_path / "agent", "edge-provision renew") as holder:
        proc = subprocess.Popen(cli_argv(tmp_path, command, "--json"),
                                env=cli_env(tmp_path, lab.url), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            line = read_line(proc.stderr)
            assert line.startswith(f"waiting for the state lock, held by pid {holder.pid} "
                                   "(edge-provision renew, since ")
            assert proc.poll() is None  # waiting, not failing
            holder.release()
            out, err = proc.communicate(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["ok"] is True
    assert "waiting" not in err  # said once


def test_a_held_lock_past_lock_wait_is_temporary(tmp_path: Path, lab: RunningLabServer) -> None:
    """EDGE_PROVISION_LOCK_WAIT=0 (as the daemon's children run): exit 75, reason busy."""
    with LockHolder(tmp_path / "agent", "edge-provision enroll") as holder:
        env = dict(cli_env(tmp_path, lab.url), EDGE_PROVISION_LOCK_WAIT="0")
        done = subprocess.run(cli_argv(tmp_path, "enroll", "--json"), env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 75, done.stderr
    error = json.loads(done.stdout)["error"]
    assert (error["kind"], error["reason"], error["retryable"]) == ("LockBusy", "busy", True)
    assert f"held by pid {holder.pid} (edge-provision enroll" in error["message"]


@pytest.mark.parametrize("when", EXTREME_TIMES)
def test_status_reads_any_time_in_state_json(tmp_path: Path, when: str) -> None:
    """Year 1 and 9999 in every time field of state.json: status (text, --json, --verbose)."""
    save_extreme_state(tmp_path / "agent", when)
    for args in (("status",), ("status", "--json", "--verbose")):
        done = cli(tmp_path, *args)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    doc = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert doc["next_action_at"] == when and doc["last_error"]["at"] == when


# Test-side crash injection (no hook in product code): a sitecustomize on the child's
# PYTHONPATH SIGKILLs the process right before it renames a staging file onto ``<name>``,
# as a power cut between the write and the rename would.
_CRASH_AT_REPLACE = """
import os, signal
_target = os.environ.get("EP_TEST_CRASH_AT_REPLACE")
if _target:
    _replace = os.replace
    def _crash_then_replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == _target:
            os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)
    os.replace = _crash_then_replace
"""


def _crash_env(tmp_path: Path, url: str, name: str, **extra: str) -> dict[str, str]:
    """The agent's environment, with a SIGKILL just before ``name`` is renamed into place."""
    hooks = tmp_path / "crash-hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(_CRASH_AT_REPLACE)
    return dict(cli_env(tmp_path, url), PYTHONPATH=str(hooks), EP_TEST_CRASH_AT_REPLACE=name,
                **extra)


def _leftovers(*directories: Path) -> list[Path]:
    return sorted(p for d in directories if d.exists() for p in d.iterdir()
                  if p.name.endswith(".tmp"))


def _next_start(tmp_path: Path, command: str, env: dict[str, str]) -> None:
    """Start ``command`` once (the daemon: until READY=1, then SIGTERM)."""
    if command != "run":
        subprocess.run(cli_argv(tmp_path, command, "--json"), env=env, capture_output=True,
                       timeout=TIMEOUT_S, check=False)
        return
    with Notify(tmp_path / "notify.sock") as notify:
        daemon = subprocess.Popen(cli_argv(tmp_path, "run"), stdin=subprocess.DEVNULL,
                                  env=dict(env, NOTIFY_SOCKET=str(notify.path)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            notify.expect(lambda m: m.startswith("READY=1"))
            assert stop_daemon(daemon, notify, 10)[0] == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


@pytest.mark.parametrize("next_start", ["enroll", "renew", "run"])
def test_a_crash_while_writing_the_identity_leaves_nothing_for_good(
        tmp_path: Path, lab: RunningLabServer, next_start: str) -> None:  # fmt: skip
    """Killed between writing identity.json's staging file (the external key in it) and the
    rename: the next start of enroll, renew or the daemon removes the leftover."""
    crashed = subprocess.run(cli_argv(tmp_path, "enroll"), capture_output=True, text=True,
                             env=_crash_env(tmp_path, lab.url, "identity.json"),
                             timeout=TIMEOUT_S, check=False)
    assert crashed.returncode == -9, crashed.stderr
    (leftover,) = _leftovers(tmp_path / "agent")
    assert leftover.name.startswith(".identity.json.") and EXT_KEY in leftover.read_text()
    _next_start(tmp_path, next_start, cli_env(tmp_path, lab.url))
    assert _leftovers(tmp_path / "agent") == []


@pytest.mark.parametrize("next_start", ["enroll", "renew", "run"])
def test_a_crash_during_the_hand_off_leaves_no_password_behind(
        tmp_path: Path, lab: RunningLabServer, next_start: str) -> None:  # fmt: skip
    """Killed between writing the Agent's environment file (0640, the MQTT password in it)
    and its rename: the next start removes the staging file, and only ours."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / ".not-ours.0badc0de.tmp").write_text("another program's staging file")
    handoff = {"EDGE_PROVISION_AGENT_ENV": str(etc / "agent.env")}
    assert subprocess.run(cli_argv(tmp_path, "enroll"), env=dict(cli_env(tmp_path, lab.url),
                          **handoff), capture_output=True, timeout=TIMEOUT_S).returncode == 0
    crashed = subprocess.run(cli_argv(tmp_path, "enroll", "--force"), capture_output=True,
                             env=_crash_env(tmp_path, lab.url, "agent.env", **handoff),
                             text=True, timeout=TIMEOUT_S, check=False)
    assert crashed.returncode == -9, crashed.stderr
    leftover = [p for p in _leftovers(etc) if p.name.startswith(".agent.env.")]
    assert len(leftover) == 1 and oct(leftover[0].stat().st_mode & 0o777) == "0o640"
    assert "MF_AGENT_MQTT_PASSWORD=" in leftover[0].read_text()
    _next_start(tmp_path, next_start, dict(cli_env(tmp_path, lab.url), **handoff))
    assert [p.name for p in _leftovers(etc, tmp_path / "agent")] == [".not-ours.0badc0de.tmp"]


needs_full_disk = pytest.mark.skipif(not full_disk_available(),
                                     reason="no user namespaces here: cannot mount a tmpfs")


def _on_state(*args: str) -> list[str]:
    """``edge-provision --state-dir {state} ARGS`` for run_on_full_disk."""
    return [sys.executable, "-m", "edge_provision", "--state-dir", "{state}", *args]


def _files(state_dir: Path) -> dict[str, bytes]:
    """Every regular file under ``state_dir`` (but the lock files) with its bytes."""
    return {str(p.relative_to(state_dir)): p.read_bytes() for p in sorted(state_dir.rglob("*"))
            if p.is_file() and not p.is_symlink() and not p.name.endswith(".lock")}


@needs_full_disk
def test_reset_on_a_full_disk_changes_nothing(tmp_path: Path, lab: RunningLabServer) -> None:
    """reset --yes with no byte free: it fails saying so, and `current` is still there."""
    assert cli(tmp_path, "enroll", url=lab.url).returncode == 0
    before = _files(tmp_path / "agent")
    (reset, status), _ = run_on_full_disk(
        tmp_path / "agent", tmp_path / "after",
        [_on_state("reset", "--yes", "--json"), _on_state("status", "--json")],
        cli_env(tmp_path), tmp_path)
    assert reset.returncode == 1, reset.stderr
    error = json.loads(reset.stdout)["error"]
    assert error["kind"] == "StoreError" and "free some disk space" in error["message"]
    assert os.readlink(tmp_path / "after" / "current") == "generations/1"
    assert _files(tmp_path / "after") == before
    doc = json.loads(status.stdout)
    assert (doc["state"], doc["current_generation"]) == ("provisioned", 1)


@needs_full_disk
def test_a_run_that_changes_nothing_succeeds_on_a_full_disk(tmp_path: Path,
                                                            lab: RunningLabServer) -> None:
    """No byte free: the no-op enroll and a renew with nothing due exit 0, write nothing;
    a generation left half-written by a crash is removed."""
    assert cli(tmp_path, "enroll", url=lab.url).returncode == 0
    before = _files(tmp_path / "agent")
    half = tmp_path / "agent" / "generations" / ".tmp-2"
    half.mkdir()
    (half / "credentials.json").write_text('{"things": {"t": "a thing key"}}')
    runs, _ = run_on_full_disk(tmp_path / "agent", tmp_path / "after",
                               [_on_state("enroll", "--json"), _on_state("renew", "--json")],
                               cli_env(tmp_path, lab.url), tmp_path)
    enroll, renew = runs
    assert enroll.returncode == 0, enroll.stdout + enroll.stderr
    assert json.loads(enroll.stdout)["changed"] is False
    assert renew.returncode == 0, renew.stdout + renew.stderr
    assert json.loads(renew.stdout)["renewed"] is False
    assert _files(tmp_path / "after") == before  # the half generation is gone, nothing else


def test_a_run_that_changes_nothing_writes_nothing(tmp_path: Path,
                                                   lab: RunningLabServer) -> None:
    """No-op enroll and a renew with nothing due leave every file as it was (bytes, mtime;
    only the lock files say who held them)."""
    assert cli(tmp_path, "enroll", url=lab.url).returncode == 0
    state = tmp_path / "agent"
    stamps = {p: p.stat().st_mtime_ns for p in state.rglob("*") if not p.name.endswith(".lock")}
    before = _files(state)
    for args in (("enroll", "--json"), ("renew", "--json"), ("status",)):
        done = cli(tmp_path, *args, url=lab.url)
        assert done.returncode == 0, done.stderr
    assert _files(state) == before
    assert {p: p.stat().st_mtime_ns for p in state.rglob("*")
            if not p.name.endswith(".lock")} == stamps


def _without_identity_settings(tmp_path: Path, url: str) -> dict[str, str]:
    """The agent's environment with no external_id/key setting: identity.json decides."""
    env = cli_env(tmp_path, url)
    del env["EDGE_PROVISION_EXTERNAL_ID"], env["EDGE_PROVISION_EXTERNAL_KEY"]
    return env


def _things_on_platform(tmp_path: Path, lab: RunningLabServer) -> int:
    return len(secrets_of(tmp_path, lab)) - 2  # minus the external key and the token


def test_an_edited_identity_is_shown_and_enroll_refuses_to_orphan_things(
        tmp_path: Path, lab: RunningLabServer) -> None:  # fmt: skip
    """identity.json edited to another id: status shows the mismatch, enroll refuses (exit 2)
    saying what would happen; --force does just that (a second thing-set)."""
    assert cli(tmp_path, "enroll", url=lab.url).returncode == 0
    identity = tmp_path / "agent" / "identity.json"
    identity.write_text(identity.read_text().replace(EXT_ID, "02:42:ac:11:00:43"))
    env = _without_identity_settings(tmp_path, lab.url)
    status = subprocess.run(cli_argv(tmp_path, "status"), env=env, capture_output=True,
                            text=True, timeout=TIMEOUT_S, check=False)
    assert status.returncode == 0, status.stderr
    assert "PROBLEM      identity-mismatch: " in status.stdout and EXT_ID in status.stdout
    refused = subprocess.run(cli_argv(tmp_path, "enroll", "--json"), env=env,
                             capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert refused.returncode == 2, refused.stderr
    message = json.loads(refused.stdout)["error"]["message"]
    assert "second set of things" in message and "orphaned" in message
    assert "--force" in message and f"EDGE_PROVISION_EXTERNAL_ID={EXT_ID}" in message
    assert _things_on_platform(tmp_path, lab) == 1
    forced = subprocess.run(cli_argv(tmp_path, "enroll", "--force", "--json"), env=env,
                            capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["created_mapping"] is True
    assert _things_on_platform(tmp_path, lab) == 2  # as the refusal said


def test_status_works_with_a_corrupt_identity_file(tmp_path: Path,
                                                   lab: RunningLabServer) -> None:
    """identity.json garbled: status exits 0 (text and --json) and names the damage."""
    assert cli(tmp_path, "enroll", url=lab.url).returncode == 0
    (tmp_path / "agent" / "identity.json").write_text("{\"version\": 1, \"external_")
    env = _without_identity_settings(tmp_path, lab.url)
    text = subprocess.run(cli_argv(tmp_path, "status"), env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)
    assert text.returncode == 0, text.stderr
    assert "PROBLEM      identity-unreadable: " in text.stdout and "identity.json" in text.stdout
    doc = json.loads(subprocess.run(cli_argv(tmp_path, "status", "--json"), env=env,
                                    capture_output=True, text=True, timeout=TIMEOUT_S).stdout)
    assert doc["state"] == "provisioned" and doc["current_generation"] == 1
    assert [d["kind"] for d in doc["damage"]] == ["identity-unreadable"]


def test_the_only_generation_damaged_says_damaged_and_renew_repairs_it(
        tmp_path: Path, lab: RunningLabServer) -> None:  # fmt: skip
    """Its credentials file garbled: status says `damaged`, next enroll; renew enrolls again
    and gets the same things back (no second thing-set)."""
    first = json.loads(cli(tmp_path, "enroll", "--json", url=lab.url).stdout)
    (tmp_path / "agent" / "generations" / "1" / "credentials.json").write_text("{}")
    doc = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert (doc["state"], doc["current_generation"], doc["next_action"]) == (
        "damaged", None, "enroll")
    assert "credentials.json does not match its sha256" in doc["damage"][0]["message"]
    renew = cli(tmp_path, "renew", "--json", url=lab.url)
    assert renew.returncode == 0, renew.stdout + renew.stderr
    assert json.loads(renew.stdout)["reprovisioned"] is True
    after = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert (after["state"], after["current_generation"]) == ("provisioned", 2)
    assert after["things"][0]["id"] == first["thing_id"] and after["damage"] == []
    assert _things_on_platform(tmp_path, lab) == 1


@pytest.mark.parametrize("command", ["enroll", "renew"])
def test_a_loosened_key_file_is_reported_then_restored(tmp_path: Path, lab: RunningLabServer,
                                                       command: str) -> None:
    """A private key chmod 0644: status reports it; enroll/renew put 0600 back and say so."""
    first = json.loads(cli(tmp_path, "enroll", "--json", url=lab.url).stdout)
    key = tmp_path / "agent" / "generations" / "1" / f"{first['thing_id']}.key"
    key.chmod(0o644)
    status = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert [d["kind"] for d in status["damage"]] == ["file-mode"]
    assert f"{key} is 0644, expected 0600" in status["damage"][0]["message"]
    done = cli(tmp_path, command, "--json", url=lab.url)
    assert done.returncode == 0, done.stderr
    assert f"restored the mode of {key} to 0600 (it was 0644" in done.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    assert json.loads(cli(tmp_path, "status", "--json").stdout)["damage"] == []


def test_a_token_on_the_command_line_works_with_a_warning(tmp_path: Path,
                                                          lab: RunningLabServer) -> None:
    """--token is kept, but it says that ps shows it and where to put it instead."""
    env = cli_env(tmp_path)
    done = subprocess.run(cli_argv(tmp_path, "enroll", "--provision-url", lab.url, "--token",
                                   token(tmp_path)), env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: --token on the command line is visible to every user")
    assert "EDGE_PROVISION_TOKEN_FILE" in warning and "server.token_file" in warning
    assert token(tmp_path) not in done.stdout + done.stderr
    quiet = cli(tmp_path, "status", url=lab.url)  # the token from the environment: no warning
    assert "warning" not in quiet.stderr
