"""Deploy hooks run as processes: order, environment without secrets, failures, timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_provision.agent.handoff import hand_off
from edge_provision.agent.store import Generation, GenerationData, Store, StoredChannel, StoredThing
from edge_provision.settings import AgentSettings, load_agent_settings

GW, GW_KEY = "thing-gw-1", "thing-key-gw-1-secret"
DATA, CONTROL, EXPORT = "chan-data", "chan-control", "chan-export"


def make_generation(tmp_path: Path) -> tuple[Store, Generation]:
    """A current generation without certificates: data channel listed before control."""
    store = Store(tmp_path / "agent")
    channels = tuple(StoredChannel(i, i, {"type": i.split("-")[1]})
                     for i in (DATA, CONTROL, EXPORT))  # fmt: skip
    with store.lock():
        number = store.write_generation(GenerationData(
            (StoredThing(GW, "gw", GW_KEY, {}),), channels, GW, "", "mapping", "aa"))
        store.switch_current(number)
    return store, store.load_generation(number)


def settings_for(tmp_path: Path, **flags: object) -> AgentSettings:
    """Agent settings with the state dir under ``tmp_path``."""
    return load_agent_settings({"state_dir": tmp_path / "agent", **flags}, env={})


def test_hooks_get_documented_env_and_never_the_thing_key(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Executable files in hooks_dir run sorted, then commands; env has ids, no secrets."""
    store, gen = make_generation(tmp_path)
    monkeypatch.setenv("EDGE_PROVISION_EXTERNAL_KEY", "leaky-external-key")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    out = tmp_path / "out"
    for name in ("20-second", "10-first"):
        script = hooks / name
        script.write_text(f"#!/bin/sh\nenv >> {out}\necho {name} >> {out}.order\n")
        script.chmod(0o755)
    (hooks / "README").write_text("not a hook\n")
    settings = settings_for(tmp_path, hooks_dir=hooks,
                            hook_commands=[f"sh -c 'echo cmd >> {out}.order'"])
    report = hand_off(settings, gen, "aa", store=store)
    assert report.ok, report.to_dict()
    assert (tmp_path / "out.order").read_text().split() == ["10-first", "20-second", "cmd"]
    env_text = out.read_text()
    assert f"EDGE_PROVISION_THING_ID={GW}" in env_text
    assert f"EDGE_PROVISION_CONTROL_CHANNEL={CONTROL}" in env_text
    assert f"EDGE_PROVISION_EXPORT_CHANNEL={EXPORT}" in env_text
    assert f"EDGE_PROVISION_CHANNEL_IDS={DATA},{CONTROL},{EXPORT}" in env_text
    assert f"EDGE_PROVISION_GENERATION={gen.number}" in env_text
    assert GW_KEY not in env_text and "leaky-external-key" not in env_text
    skipped = [h for h in report.hooks if h.skipped]
    assert [h.name for h in skipped] == ["README"]


def test_failing_hook_is_reported_and_recorded(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Non-zero exit: report not ok, stderr tail logged, State.last_error is HookFailed."""
    store, gen = make_generation(tmp_path)
    settings = settings_for(tmp_path, hook_commands=["sh -c 'echo broken-thing >&2; exit 3'"])
    report = hand_off(settings, gen, "aa", store=store)
    assert not report.ok
    hook = report.failed_hooks[0]
    assert hook.returncode == 3 and "broken-thing" in hook.stderr_tail
    assert "broken-thing" in caplog.text
    state = store.load_state()
    assert state.last_error is not None and state.last_error.kind == "HookFailed"
    assert state.journal[-1].status == "failed"


def test_hook_timeout_kills_it(tmp_path: Path) -> None:
    """A hook over hook_timeout_s is killed and reported as timed out (not waited for)."""
    store, gen = make_generation(tmp_path)
    settings = settings_for(tmp_path, hook_commands=["sleep 30"], hook_timeout_s=0.3)
    report = hand_off(settings, gen, "aa", store=store)
    hook = report.hooks[0]
    assert not hook.ok and hook.timed_out


def test_missing_hook_program_is_a_failure(tmp_path: Path) -> None:
    """A command that cannot start fails the hand-off report (not silently ignored)."""
    store, gen = make_generation(tmp_path)
    report = hand_off(settings_for(tmp_path, hook_commands=["/nonexistent/hook"]), gen, "aa",
                      store=store)
    assert not report.ok and "not found" in (report.hooks[0].error or "")


def test_success_clears_a_previous_hook_error(tmp_path: Path) -> None:
    """A good hand-off after a failed one clears last_error."""
    store, gen = make_generation(tmp_path)
    hand_off(settings_for(tmp_path, hook_commands=["false"]), gen, "aa", store=store)
    assert store.load_state().last_error is not None
    hand_off(settings_for(tmp_path, hook_commands=["true"]), gen, "aa", store=store)
    assert store.load_state().last_error is None
