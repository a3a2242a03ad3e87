"""``edge-provision run``: the lean, long-lived supervisor (a thin I/O loop).

It imports only the standard library and the small core modules (settings, store,
systemd, errors, logging): requests, cryptography, paho and psutil never load here, so
the idle process stays near the interpreter's own footprint (DESIGN.md: idle RSS
<= 24 MB). The heavy steps run as short-lived child processes of the very commands a
technician types -- ``python -m edge_provision [global options] enroll --json`` or
``... renew --json`` -- and their exit codes drive the pure state machine in
:mod:`edge_provision.agent.schedule`.

The loop sleeps in one ``select()`` on a self-pipe: signal handlers do nothing but let
:func:`signal.set_wakeup_fd` write the signal number into it. The timeout is the time to
the next action or the next watchdog ping, whichever is sooner; nothing polls.

Signals: SIGHUP reloads the settings (a bad new config is reported and the old one
kept), SIGUSR1 runs the enroll/renew child now, SIGTERM/SIGINT stop (a running child
gets SIGTERM, then SIGKILL after ``stop_grace_s``), SIGCHLD wakes the loop when a child
exits. ``sd_notify``: READY=1 once the settings are loaded and the state directory is
usable, STATUS= whenever the status line changes, WATCHDOG=1 at half of
``$WATCHDOG_USEC`` (also while a child runs), STOPPING=1 on the way out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from edge_provision import _fs
from edge_provision.agent.backoff import Backoff, UniformSource
from edge_provision.agent.schedule import (
    ChildResult,
    Decision,
    Event,
    EventKind,
    Machine,
    Policy,
    Snapshot,
    decide,
)
from edge_provision.agent.systemd import Notifier, watchdog_interval_s
from edge_provision.errors import EdgeProvisionError, StoreError
from edge_provision.settings import AgentSettings
from edge_provision.store import Store

__all__ = ["CHILD_ENV_DROP", "Clock", "Daemon", "SystemClock", "command_prefix", "policy_of"]

logger = logging.getLogger(__name__)

CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
WALL_RECHECK_S = 3600.0  # wall-clock timers are re-read at least this often
_MAX_STDOUT_BYTES = 65536
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


class Clock(Protocol):
    """Time, injected: ``monotonic()`` for timers, ``now()`` (aware UTC) for schedules."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""
        ...

    def now(self) -> datetime:
        """The wall-clock time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()

    def now(self) -> datetime:
        """:func:`datetime.now` in UTC."""
        return datetime.now(timezone.utc)


def policy_of(settings: AgentSettings) -> Policy:
    """The schedule parameters of ``settings``."""
    return Policy(Backoff(settings.backoff_initial_s, settings.backoff_cap_s),
                  settings.permanent_retry_s, settings.min_rerun_s)


def command_prefix(
    *, config: Path | None = None, state_dir: Path | None = None, log_level: str | None = None,
    python: str | None = None,
) -> list[str]:
    """``python -m edge_provision [--config C] [--state-dir D] [--log-level L]``.

    The argv before ``<command> --json``. Only the global options given to ``run`` are
    repeated; everything else reaches the child through the same environment and file.
    """
    argv = [python or sys.executable, "-m", "edge_provision"]
    if config is not None:
        argv += ["--config", str(config)]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    return argv


class _Child:
    """A running child command: its process, start time and captured stdout."""

    def __init__(self, command: str, proc: subprocess.Popen[bytes], stdout_fd: int,
                 started: float) -> None:
        self.command = command
        self.proc = proc
        self.stdout_fd = stdout_fd
        self.started = started
        self.kill_at: float | None = None  # SIGKILL when the monotonic clock passes this
        self.timed_out_s: float | None = None

    def result(self, returncode: int) -> ChildResult:
        """Parse the ``--json`` document (bounded read) and close the capture file."""
        try:
            os.lseek(self.stdout_fd, 0, os.SEEK_SET)
            raw = os.read(self.stdout_fd, _MAX_STDOUT_BYTES)
        finally:
            self.close()
        kind, message, has_doc = _error_of(raw)
        return ChildResult(self.command, returncode, kind, message, has_doc, self.timed_out_s)

    def close(self) -> None:
        """Release the stdout capture (idempotent)."""
        if self.stdout_fd >= 0:
            os.close(self.stdout_fd)
            self.stdout_fd = -1


def _capture_fd() -> int:
    """An anonymous file for a child's stdout: memfd (no import of tempfile), else a temp file.

    A file, not a pipe: the child never blocks on a full pipe while the loop sleeps.
    """
    try:
        return os.memfd_create("edge-provision-child-stdout", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux, or an old kernel
        import tempfile

        fd, path = tempfile.mkstemp(prefix="edge-provision-child-")
        os.unlink(path)
        return fd


def _error_of(raw: bytes) -> tuple[str | None, str | None, bool]:
    """(kind, message, is an error document) from a child's stdout; never logged."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, None, False
    if not isinstance(doc, dict) or doc.get("ok") is not False:
        return None, None, False
    error = doc.get("error")
    if not isinstance(error, dict):
        return None, None, True
    kind, message = error.get("kind"), error.get("message")
    return (kind if isinstance(kind, str) else None,
            message if isinstance(message, str) else None, True)


class Daemon:
    """The supervisor loop; ``run()`` returns after SIGTERM/SIGINT (exit code 0).

    ``argv_prefix`` (default: :func:`command_prefix`) is the argv before
    ``<command> --json``; tests point it at a scripted stand-in.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        reload_settings: Callable[[], AgentSettings] | None = None,
        argv_prefix: Sequence[str] | None = None,
        notifier: Notifier | None = None,
        clock: Clock | None = None,
        rng: UniformSource | None = None,
        env: Mapping[str, str] | None = None,
        child_timeout_s: float = 900.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self._prefix = list(argv_prefix) if argv_prefix is not None else command_prefix()
        env = dict(os.environ if env is None else env)
        self.notifier = notifier if notifier is not None else Notifier(env=env)
        self._watchdog_s = watchdog_interval_s(env)
        self._child_env = {k: v for k, v in env.items() if k not in CHILD_ENV_DROP}
        self.clock: Clock = clock or SystemClock()
        self.rng: UniformSource = rng or random.Random()  # jitter, not secrets
        self.child_timeout_s = child_timeout_s
        self.stop_grace_s = stop_grace_s
        self.machine = Machine()
        self._child: _Child | None = None
        self._deadline: float | None = None  # monotonic time of the next DUE event
        self._next_ping: float | None = None
        self._sent_status: str | None = None
        self._rfd = -1

    # -- entry ------------------------------------------------------------------------------

    def run(self) -> None:
        """Check the state directory, install the signals, loop until SIGTERM/SIGINT."""
        self._check_state_dir(self.settings.state_dir)
        with self._signals():
            self._apply(self._decide(EventKind.START), ready=True)
            while True:
                signals = self._wait()
                if any(s in signals for s in _STOP_SIGNALS):
                    self._stop()
                    return
                self._step(signals)

    def _step(self, signals: set[int]) -> None:
        if signal.SIGHUP in signals:
            self._reload()
        if self._child is not None:
            self._check_child(user_check=signal.SIGUSR1 in signals)
        elif signal.SIGUSR1 in signals:
            logger.info("check requested signal=SIGUSR1")
            self._apply(self._decide(EventKind.CHECK_NOW))
        elif self._deadline is not None and self.clock.monotonic() >= self._deadline:
            self._deadline = None
            self._apply(self._decide(EventKind.DUE))

    # -- waiting ----------------------------------------------------------------------------

    def _wait(self) -> set[int]:
        """One ``select()`` until a signal, the next timer or watchdog ping; the signals seen."""
        now = self.clock.monotonic()
        if self._next_ping is not None and now >= self._next_ping:
            self.notifier.watchdog()
            self._next_ping = now + (self._watchdog_s or 0.0)
        wake = [t for t in (self._deadline, self._next_ping) if t is not None]
        if self._child is not None:
            wake.append(self._child.kill_at if self._child.kill_at is not None
                        else self._child.started + self.child_timeout_s)
        timeout = max(0.0, min(wake) - now) if wake else None
        readable, _, _ = select.select([self._rfd], [], [], timeout)
        signals = self._drain() if readable else set()
        logger.debug("wake signals=%s timeout=%s", sorted(signals),
                     "none" if timeout is None else f"{timeout:.3f}")
        return signals

    def _drain(self) -> set[int]:
        seen: set[int] = set()
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                data = os.read(self._rfd, 512)
                if not data:
                    break
                seen.update(data)
        return seen

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Self-pipe + ``set_wakeup_fd``; the Python-level handlers do nothing at all."""
        rfd, wfd = os.pipe()
        for fd in (rfd, wfd):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        previous = {s: signal.signal(s, _ignore) for s in _HANDLED}
        old_fd = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        self._rfd = rfd
        if self._watchdog_s:
            self._next_ping = self.clock.monotonic()
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                if handler is not None:  # None: a handler not installed from Python
                    signal.signal(sig, handler)
            os.close(rfd)
            os.close(wfd)
            self._rfd = -1

    # -- decisions --------------------------------------------------------------------------

    def _decide(self, kind: EventKind, *, child: ChildResult | None = None,
                note: str | None = None) -> Decision:
        event = Event(kind, self.clock.now(), self._snapshot(), child, note)
        return decide(self.machine, event, policy_of(self.settings), self.rng)

    def _apply(self, decision: Decision, *, ready: bool = False) -> None:
        before = self.machine.state
        self.machine = decision.machine
        status = decision.status
        if ready:
            self.notifier.ready(status=status)
        elif status != self._sent_status:
            self.notifier.status(status)
        if status != self._sent_status or before is not self.machine.state:
            logger.info("state=%s status=%s", self.machine.state.value, status)
        self._sent_status = status
        if decision.keep_timer:
            return
        self._deadline = None
        if decision.run is not None:
            self._spawn(decision.run)
            return
        delay = decision.delay_s
        if decision.wall_clock:
            delay = min(delay, WALL_RECHECK_S)
        if not math.isinf(delay):
            self._deadline = self.clock.monotonic() + max(0.0, delay)

    def _snapshot(self) -> Snapshot:
        """``state.json`` as the children left it; unreadable counts as empty (enroll)."""
        try:
            return Snapshot.from_state(Store(self.settings.state_dir).load_state())
        except EdgeProvisionError as exc:  # the child will report it properly
            logger.warning("state unreadable state_dir=%s error=%s", self.settings.state_dir, exc)
            return Snapshot()

    # -- children ---------------------------------------------------------------------------

    def _spawn(self, command: str) -> None:
        argv = [*self._prefix, command, "--json"]
        stdout_fd = _capture_fd()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout_fd,
                                    env=self._child_env, close_fds=True)
        except OSError as exc:
            os.close(stdout_fd)
            logger.error("child not started command=%s error=%s", command, exc)
            result = ChildResult(command, 127, "OSError", f"cannot start {command}: {exc}")
            self._apply(self._decide(EventKind.CHILD_EXITED, child=result))
            return
        logger.info("child started command=%s pid=%s", command, proc.pid)
        self._child = _Child(command, proc, stdout_fd, self.clock.monotonic())

    def _check_child(self, *, user_check: bool) -> None:
        child = self._child
        assert child is not None
        code = child.proc.poll()
        if code is None:
            now = self.clock.monotonic()
            if user_check:
                logger.info("check requested while %s runs; ignored", child.command)
            if child.kill_at is not None and now >= child.kill_at:
                logger.warning("child killed command=%s pid=%s", child.command, child.proc.pid)
                child.proc.kill()
            elif child.kill_at is None and now >= child.started + self.child_timeout_s:
                logger.warning("child timed out command=%s after_s=%s", child.command,
                               self.child_timeout_s)
                child.timed_out_s = self.child_timeout_s
                child.proc.terminate()
                child.kill_at = now + self.stop_grace_s
            return
        self._child = None
        result = child.result(code)
        logger.info("child exited command=%s code=%s outcome=%s kind=%s", child.command, code,
                    result.outcome.value, result.error_kind or "-")
        self._apply(self._decide(EventKind.CHILD_EXITED, child=result))

    # -- reload and stop --------------------------------------------------------------------

    def _reload(self) -> None:
        self.notifier.reloading()
        if self._reload_settings is None:
            decision = self._decide(EventKind.RELOADED)
        else:
            try:
                new = self._reload_settings()
                self._check_state_dir(new.state_dir)
            except EdgeProvisionError as exc:
                logger.error("reload failed, keeping the previous settings error=%s", exc)
                decision = self._decide(EventKind.RELOAD_FAILED, note=str(exc))
            else:
                self.settings = new
                logger.info("settings reloaded config=%s", new.config_file or "-")
                decision = self._decide(EventKind.RELOADED)
        if self._child is not None and decision.run is not None:  # never two children
            decision = Decision(dataclasses.replace(self.machine, note=decision.machine.note),
                                keep_timer=True)
        self._apply(decision, ready=True)

    def _stop(self) -> None:
        """STOPPING=1; a running child gets SIGTERM, then SIGKILL after the grace period."""
        self.notifier.stopping()
        logger.info("stopping")
        self._deadline = None
        child = self._child
        if child is not None and child.proc.poll() is None:
            logger.info("stopping child command=%s pid=%s", child.command, child.proc.pid)
            child.proc.terminate()
            child.kill_at = self.clock.monotonic() + self.stop_grace_s
            while child.proc.poll() is None:
                again = any(s in _STOP_SIGNALS for s in self._wait())
                if again or self.clock.monotonic() >= child.kill_at:
                    logger.warning("child killed command=%s pid=%s", child.command,
                                   child.proc.pid)
                    child.proc.kill()
                    break
        if child is not None:
            child.proc.wait()
            child.close()
        self._child = None
        logger.info("stopped")

    @staticmethod
    def _check_state_dir(state_dir: Path) -> None:
        """The state directory exists (0700) and is writable; StoreError otherwise."""
        path = _fs.ensure_private_dir(state_dir)
        if not os.access(path, os.W_OK | os.X_OK):
            raise StoreError(f"{path}: state directory is not writable; run as the service "
                             "user or pick another one with --state-dir")


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler: nothing; ``set_wakeup_fd`` already wrote the byte."""
