"""Hand credentials to the services that use them, after every switch of ``current``.

:func:`hand_off` writes, each only when its path setting is set:

* the Mainflux Agent's ``config.toml`` (wire contract section 8.2),
* an environment file for the Agent's unit (``MF_AGENT_*``): the real Agent rewrites its
  ``config.toml`` from its environment at every start, so the environment file is what
  survives (DESIGN.md "Handing credentials to the Mainflux Agent"),
* the Export service's ``config.toml`` (section 9) when the bootstrap content has an
  ``export`` section,

then runs the deploy hooks: every executable regular file in ``hooks_dir`` (sorted by
name) and every ``hook_commands`` entry (split like a shell, run without one), each with
the ``EDGE_PROVISION_*`` variables of :func:`hook_environment` and a timeout. Secrets
(thing keys, external key, token) are never put in a hook's environment.

Nothing here raises for a failed write or hook: every problem lands in the returned
:class:`HandoffReport` (and, when a store is passed, in ``State.last_error``), is logged,
and leaves the enrollment in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import logging
import os
import pwd
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_provision import fileio
from edge_provision.agent.handoff._files import (
    channel_ids,
    render_agent_config,
    render_agent_env,
    render_export_config,
    stable_paths,
    to_toml,
)
from edge_provision.agent.store import Generation, Store
from edge_provision.errors import StoreError
from edge_provision.settings import AgentSettings, fields_of

__all__ = [
    "HandoffReport",
    "HookResult",
    "hand_off",
    "hook_environment",
    "render_agent_config",
    "render_agent_env",
    "render_export_config",
    "to_toml",
]

logger = logging.getLogger(__name__)

_STDERR_TAIL_BYTES = 2000


@dataclass(frozen=True)
class HookResult:
    """How one deploy hook went. ``skipped`` hooks (not executable in hooks_dir) are ok."""

    name: str
    argv: tuple[str, ...]
    ok: bool
    returncode: int | None = None
    timed_out: bool = False
    skipped: bool = False
    duration_s: float = 0.0
    stderr_tail: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` shape."""
        return {
            "name": self.name,
            "argv": list(self.argv),
            "ok": self.ok,
            "returncode": self.returncode,
            "timed_out": self.timed_out,
            "skipped": self.skipped,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
        }


@dataclass(frozen=True)
class HandoffReport:
    """What :func:`hand_off` wrote and ran; ``errors`` says what went wrong."""

    generation: int
    files: tuple[str, ...] = ()
    hooks: tuple[HookResult, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when every file was written and every hook succeeded."""
        return not self.errors and all(h.ok for h in self.hooks)

    @property
    def failed_hooks(self) -> tuple[HookResult, ...]:
        """The hooks that failed."""
        return tuple(h for h in self.hooks if not h.ok)

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` shape."""
        return {
            "ok": self.ok,
            "generation": self.generation,
            "files": list(self.files),
            "hooks": [h.to_dict() for h in self.hooks],
            "errors": list(self.errors),
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- files


def _ids(settings: AgentSettings) -> tuple[int, int]:
    """uid/gid to chown to (-1 = unchanged); ValueError for unknown names."""
    uid = gid = -1
    if settings.file_owner:
        owner = settings.file_owner
        try:
            uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise ValueError(f"handoff.owner {owner!r}: no such user") from None
    if settings.file_group:
        group = settings.file_group
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"handoff.group {group!r}: no such group") from None
    return uid, gid


def _write(settings: AgentSettings, path: Path, text: str) -> None:
    """Write one handed-off file atomically with the configured mode and owner."""
    uid, gid = _ids(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fileio.atomic_write(path, text, mode=settings.file_mode)  # checked octal by settings
    if uid != -1 or gid != -1:
        try:
            os.chown(path, uid, gid)
        except PermissionError:
            raise ValueError(
                f"{path}: cannot change owner to {settings.file_owner or '-'}:"
                f"{settings.file_group or '-'} (operation not permitted); run edge-provision "
                "as root or unset handoff.owner / handoff.group"
            ) from None
        except OSError as exc:
            raise ValueError(f"{path}: cannot change owner: {exc.strerror}") from None


# --------------------------------------------------------------------------- hooks


def _secret_env_names() -> set[str]:
    names: set[str] = set()
    for spec in fields_of(AgentSettings):
        if spec.secret:
            for env in spec.env:
                names.update((env, env + "_FILE"))
    return names


def hook_environment(
    settings: AgentSettings, generation: Generation, external_id: str
) -> dict[str, str]:
    """The ``EDGE_PROVISION_*`` variables every hook gets (no secrets)."""
    ids = channel_ids(generation)
    paths = stable_paths(settings, generation)
    return {
        "EDGE_PROVISION_STATE_DIR": str(settings.state_dir),
        "EDGE_PROVISION_GENERATION": str(generation.number),
        "EDGE_PROVISION_GENERATION_DIR": str(generation.path),
        "EDGE_PROVISION_EXTERNAL_ID": external_id,
        "EDGE_PROVISION_THING_ID": generation.gateway_thing_id,
        "EDGE_PROVISION_CONTROL_CHANNEL": ids.get("control", ""),
        "EDGE_PROVISION_DATA_CHANNEL": ids.get("data", ""),
        "EDGE_PROVISION_EXPORT_CHANNEL": ids.get("export", ""),
        "EDGE_PROVISION_CHANNEL_IDS": ",".join(c.id for c in generation.channels),
        "EDGE_PROVISION_CERT_PATH": paths.cert,
        "EDGE_PROVISION_KEY_PATH": paths.key,
        "EDGE_PROVISION_CA_PATH": paths.ca,
    }


def _tail(data: bytes) -> str:
    text = data[-_STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip()
    return "\n".join(text.splitlines()[-10:])


def _run_hook(name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
              timeout_s: float) -> HookResult:  # fmt: skip
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv), env=dict(env), cwd=str(cwd), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        reason = "not executable" if isinstance(exc, PermissionError) else (
            "not found" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc))
        return HookResult(name, tuple(argv), ok=False, error=f"cannot start: {reason}")
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return HookResult(name, tuple(argv), ok=False, returncode=proc.returncode,
                          timed_out=True, duration_s=time.monotonic() - started,
                          stderr_tail=_tail(stderr or b""),
                          error=f"timed out after {timeout_s:g} s and was killed")  # fmt: skip
    duration = time.monotonic() - started
    if proc.returncode != 0:
        return HookResult(name, tuple(argv), ok=False, returncode=proc.returncode,
                          duration_s=duration, stderr_tail=_tail(stderr or b""),
                          error=f"exited with status {proc.returncode}")  # fmt: skip
    return HookResult(name, tuple(argv), ok=True, returncode=0, duration_s=duration,
                      stderr_tail=_tail(stderr or b""))  # fmt: skip


def _hooks(settings: AgentSettings) -> tuple[list[tuple[str, list[str]]], list[HookResult],
                                             list[str]]:  # fmt: skip
    """(name, argv) to run, skipped results, errors (unreadable dir, bad command lines)."""
    runs: list[tuple[str, list[str]]] = []
    skipped: list[HookResult] = []
    errors: list[str] = []
    if settings.hooks_dir is not None:
        directory = Path(settings.hooks_dir)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            names = []
            logger.info("hooks directory missing path=%s", directory)
        except OSError as exc:
            names = []
            errors.append(f"{directory}: cannot list the hooks directory: {exc.strerror}")
        for name in names:
            path = directory / name
            if name.startswith(".") or name.endswith("~") or not path.is_file():
                continue
            if not os.access(path, os.X_OK):
                logger.warning("hook skipped, not executable path=%s", path)
                skipped.append(HookResult(name, (str(path),), ok=True, skipped=True,
                                          error="not executable; chmod +x to run it"))
                continue
            runs.append((name, [str(path)]))
    for command in settings.hook_commands:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            errors.append(f"hook command {command!r}: cannot split it: {exc}")
            continue
        if argv:
            runs.append((argv[0], argv))
    return runs, skipped, errors


# --------------------------------------------------------------------------- hand-off


def hand_off(
    settings: AgentSettings,
    generation: Generation,
    external_id: str,
    *,
    store: Store | None = None,
) -> HandoffReport:
    """Write the configured files for ``generation`` and run the deploy hooks.

    With ``store`` the outcome is journalled (step ``handoff``) and a failure is recorded
    as ``State.last_error`` (kind ``HookFailed`` or ``HandoffFailed``); the caller's lock
    is reused (the store's lock is re-entrant).
    """
    if store is not None:
        _journal(store, "started", generation.number)
    files: list[str] = []
    errors: list[str] = []
    targets: tuple[tuple[str, Path | None], ...] = (
        ("agent config", settings.agent_config),
        ("agent environment file", settings.agent_env),
        ("export config", settings.export_config),
    )
    for what, target in targets:
        if target is None:
            continue
        path = Path(target)
        try:
            text = _render(what, settings, generation, path)
            if text is None:
                logger.info("export config skipped: bootstrap content has no export section")
                continue
            _write(settings, path, text)
        except (ValueError, StoreError, OSError) as exc:
            message = f"{what} {path}: {exc}"
            logger.error("handoff write failed what=%s path=%s error=%s", what, path, exc)
            errors.append(message)
            continue
        files.append(str(path))
        logger.info("handoff written what=%s path=%s generation=%s", what, path,
                    generation.number)  # fmt: skip
    runs, results, hook_errors = _hooks(settings)
    errors.extend(hook_errors)
    env = {k: v for k, v in os.environ.items() if k not in _secret_env_names()}
    env.update(hook_environment(settings, generation, external_id))
    for name, argv in runs:
        result = _run_hook(name, argv, env, Path(settings.state_dir), settings.hook_timeout_s)
        results.append(result)
        if result.ok:
            logger.info("hook done name=%s duration_s=%.2f", name, result.duration_s)
        else:
            logger.error("hook failed name=%s error=%s stderr=%s", name, result.error,
                         result.stderr_tail or "-")  # fmt: skip
    report = HandoffReport(generation.number, tuple(files), tuple(results), tuple(errors))
    if store is not None:
        _record_outcome(store, report)
    return report


def _render(what: str, settings: AgentSettings, generation: Generation, path: Path
            ) -> str | None:  # fmt: skip
    if what == "agent config":
        return render_agent_config(settings, generation, path)
    if what == "export config":
        return render_export_config(settings, generation, path)
    return render_agent_env(settings, generation)


def _journal(store: Store, status: str, number: int, extra: Mapping[str, str] | None = None
             ) -> None:  # fmt: skip
    with store.lock():
        state = store.load_state()
        detail = {"generation": str(number), **(extra or {})}
        store.save_state(state.record("handoff", status, detail))


def _record_outcome(store: Store, report: HandoffReport) -> None:
    with store.lock():
        state = store.load_state()
        detail = {"generation": str(report.generation)}
        if report.ok:
            state = state.record("handoff", "done", detail)
            if state.last_error is not None and state.last_error.kind in (
                "HookFailed", "HandoffFailed"):
                state = dataclasses.replace(state, last_error=None)
        else:
            failed = report.failed_hooks
            if failed:
                kind = "HookFailed"
                message = "; ".join(f"hook {h.name}: {h.error}" for h in failed)
            else:
                kind = "HandoffFailed"
                message = "; ".join(report.errors)
            if failed and report.errors:
                message += "; " + "; ".join(report.errors)
            detail["error"] = kind
            state = state.record("handoff", "failed", detail).with_error(
                kind, f"hand-off of generation {report.generation}: {message}")
            state = state.bump("handoff_failures")
        store.save_state(state)
