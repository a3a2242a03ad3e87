"""``edge-provision run``: the lean, long-lived supervisor (a thin I/O loop).

It imports only the standard library and the small core modules (settings, store,
systemd, errors, logging): requests, cryptography, paho and psutil never load here, so
the idle process stays near the interpreter's own footprint (DESIGN.md: idle RSS
<= 24 MB). The heavy steps run as short-lived child processes of the very commands a
technician types -- ``python -m edge_provision [global options] enroll --json`` or
``... renew --json`` -- and their exit codes drive the pure state machine in
:mod:`edge_provision.agent.daemon.schedule`.

The loop sleeps in one ``select()`` on a self-pipe: signal handlers do nothing but let
:func:`signal.set_wakeup_fd` write the signal number into it. The timeout is the time to
the next action or the next watchdog ping, whichever is sooner; nothing polls.

Signals: SIGHUP reloads the settings (a bad new config is reported and the old one
kept), SIGUSR1 runs the enroll/renew child now, SIGTERM/SIGINT stop (a running child
gets SIGTERM, then SIGKILL after ``stop_grace_s``), SIGCHLD wakes the loop when a child
exits. ``sd_notify``: READY=1 once the settings are loaded and the state directory is
usable, STATUS= whenever the status line changes, WATCHDOG=1 at half of
``$WATCHDOG_USEC`` (also while a child runs), STOPPING=1 on the way out.

Control channel (``mqtt.control_listener``, off by default): only then is
:mod:`edge_provision.agent.daemon.control` imported (and with it
``edge_provision.agent.mqtt``, ssl and paho). Its listener thread queues each command and
writes a ``\0`` byte into the same self-pipe; the loop answers ``status`` at once and turns
``renew`` / ``reprovision`` into a
``renew --force`` / ``enroll --force`` child (``busy`` while another child runs), replying
``accepted: ...`` and, when the child exits, ``done: ...`` or ``failed: ...``. The listener
is restarted for every new generation (its credentials change) and stopped on SIGTERM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import select
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Callable, Protocol

from edge_provision import fileio
from edge_provision.agent.backoff import Backoff, UniformSource
from edge_provision.agent.daemon.children import (
    CHILD_ENV_DROP,
    CHILD_ENV_SET,
    Child,
    Clock,
    JitterSource,
    SystemClock,
    capture_fd,
    command_prefix,
)
from edge_provision.agent.daemon.schedule import (
    ChildResult,
    Decision,
    Event,
    EventKind,
    Machine,
    Outcome,
    Policy,
    Snapshot,
    decide,
    human_delay,
)
from edge_provision.agent.daemon.systemd import Notifier, watchdog_interval_s
from edge_provision.agent.store import Store
from edge_provision.clock import later
from edge_provision.errors import EdgeProvisionError, LockBusy, StoreError
from edge_provision.settings import AgentSettings

__all__ = [
    "CHILD_ENV_DROP",
    "Clock",
    "ControlChannel",
    "ControlRequest",
    "Daemon",
    "SystemClock",
    "command_prefix",
    "policy_of",
]

logger = logging.getLogger(__name__)

WALL_RECHECK_S = 3600.0  # wall-clock timers are re-read at least this often
_OUTCOME_LEVEL = {Outcome.OK: logging.INFO, Outcome.BUSY: logging.INFO,
                  Outcome.TRANSIENT: logging.WARNING, Outcome.PERMANENT: logging.ERROR}
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


class ControlRequest(Protocol):
    """One control-channel command, answered from the loop (see agent.control.Request)."""

    @property
    def name(self) -> str:
        """``renew``, ``reprovision`` or ``status``."""
        ...

    @property
    def request_id(self) -> str:
        """The sender's request id."""
        ...

    def answer(self, text: str) -> None:
        """Publish a reply; never raises."""
        ...


class ControlChannel(Protocol):
    """The control listener as the loop drives it (see agent.control.ControlBridge)."""

    @property
    def generation(self) -> int | None:
        """The generation the listener serves (None: stopped)."""
        ...

    def restart(self, settings: AgentSettings, generation: int | None) -> None:
        """Stop, then listen with ``generation``'s credentials (None: stay stopped)."""
        ...

    def take(self) -> Sequence[ControlRequest]:
        """The commands received since the last call."""
        ...

    def stop(self) -> None:
        """Stop for good (no more wake-ups)."""
        ...


def _default_control(wake_fd: int) -> ControlChannel:
    """The MQTT control bridge; imported only now, when the listener is switched on."""
    from edge_provision.agent.daemon.control import ControlBridge

    return ControlBridge(wake_fd)


def policy_of(settings: AgentSettings) -> Policy:
    """The schedule parameters of ``settings``."""
    return Policy(Backoff(settings.backoff_initial_s, settings.backoff_cap_s),
                  settings.permanent_retry_s, settings.min_rerun_s)


class Daemon:
    """The supervisor loop; ``run()`` returns after SIGTERM/SIGINT (exit code 0).

    ``argv_prefix`` (default: :func:`command_prefix`) is the argv before
    ``<command> --json``; tests point it at a scripted stand-in.
    """

    _CHILD_START_MARGIN_S = 30.0
    """A child's interpreter start and settings load, before its run deadline begins."""

    def child_timeout_s(self) -> float:
        """How long a child may run before it is killed: its own run deadline
        (``agent.run_deadline``), the backstop's grace after it, and a start-up margin;
        or what the caller fixed."""
        if self._child_timeout_s is not None:
            return self._child_timeout_s
        budget = self.settings.run_deadline_s
        grace = min(10.0, max(1.0, budget / 10.0))  # deadline.grace_for, without importing it
        return budget + grace + self._CHILD_START_MARGIN_S

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
        child_timeout_s: float | None = None,
        stop_grace_s: float = 10.0,
        control_factory: Callable[[int], ControlChannel] | None = None,
    ) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self._prefix = list(argv_prefix) if argv_prefix is not None else command_prefix()
        env = dict(os.environ if env is None else env)
        self.notifier = notifier if notifier is not None else Notifier(env=env)
        self._watchdog_s = watchdog_interval_s(env)
        self._child_env = {k: v for k, v in env.items() if k not in CHILD_ENV_DROP}
        self._child_env.update(CHILD_ENV_SET)
        self.clock: Clock = clock or SystemClock()
        self.rng: UniformSource = rng or JitterSource()
        self._child_timeout_s = child_timeout_s
        self.stop_grace_s = stop_grace_s
        self.machine = Machine()
        self._child: Child | None = None
        self._deadline: float | None = None  # monotonic time of the next DUE event
        self._next_ping: float | None = None
        self._sent_status: str | None = None
        self._rfd = -1
        self._wfd = -1
        self._control_factory = control_factory or _default_control
        self._control: ControlChannel | None = None
        self._waiting: list[ControlRequest] = []  # control commands the running child answers
        self._last_snap = Snapshot()
        self._faults = 0  # consecutive unexpected exceptions (see run)

    # -- entry ------------------------------------------------------------------------------

    def run(self) -> None:
        """Check the state directory, install the signals, loop until SIGTERM/SIGINT.

        Each event is handled inside one boundary: an unexpected exception (a bug) is logged
        with its traceback, shown in STATUS, and the event is retried after a backoff. The
        daemon goes on; it never dies into a ``Restart=on-failure`` crash loop.
        """
        self._check_state_dir(self.settings.state_dir)
        self._remove_leftovers()
        with self._signals():
            try:
                self._apply(self._decide(EventKind.START), ready=True)
                self._sync_control()
            except Exception as exc:  # the per-event boundary (see the docstring)
                self._fault(exc)
            while True:
                try:
                    signals = self._wait()
                    if any(s in signals for s in _STOP_SIGNALS):
                        break
                    self._step(signals)
                except Exception as exc:  # the per-event boundary (see the docstring)
                    self._fault(exc)
            self._stop()

    def _fault(self, exc: Exception) -> None:
        """Log an unexpected exception with its traceback; retry the schedule after a backoff."""
        self._faults += 1
        policy = policy_of(self.settings)
        delay = max(0.1, policy.backoff.delay_s(self._faults - 1, self.rng))
        logger.exception("unexpected error, the daemon goes on error=%s: %s retry_in_s=%.1f",
                         type(exc).__name__, exc, delay)
        status = (f"internal error (a bug, see the log): {type(exc).__name__}: {exc}; "
                  f"retrying in {human_delay(delay)}")
        self.notifier.ready(status=status)  # also ends a RELOADING=1 the error cut short
        self._sent_status = status
        if self._child is None:
            self._deadline = self.clock.monotonic() + delay
        if self._faults > 1:  # a fault that repeats at once must not spin: pause a little
            time.sleep(min(1.0, 0.1 * self._faults))

    def _step(self, signals: set[int]) -> None:
        if signal.SIGHUP in signals:
            self._reload()
        if self._child is not None:
            self._check_child(user_check=signal.SIGUSR1 in signals)
            if self._control is not None:
                self._serve_requests()
            return
        if self._control is not None and self._serve_requests():  # a command started a child
            if signal.SIGUSR1 in signals:
                logger.info("check requested while a commanded child runs; ignored")
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
                        else self._child.started + self.child_timeout_s())
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
        self._rfd, self._wfd = rfd, wfd
        if self._watchdog_s:
            self._next_ping = self.clock.monotonic()
        try:
            yield
        finally:
            self._stop_control()  # before the pipe it writes into is closed
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                if handler is not None:  # None: a handler not installed from Python
                    signal.signal(sig, handler)
            os.close(rfd)
            os.close(wfd)
            self._rfd = self._wfd = -1

    # -- decisions --------------------------------------------------------------------------

    def _decide(self, kind: EventKind, *, child: ChildResult | None = None,
                note: str | None = None) -> Decision:
        event = Event(kind, self.clock.now(), self._snapshot(), child, note)
        return decide(self.machine, event, policy_of(self.settings), self.rng)

    def _apply(self, decision: Decision, *, ready: bool = False) -> None:
        self._faults = 0  # a decision went through: whatever failed before works again
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
            self._spawn(decision.run, decision.args)
            return
        delay = decision.delay_s
        if decision.wall_clock:
            delay = min(delay, WALL_RECHECK_S)
        if not math.isinf(delay):
            self._deadline = self.clock.monotonic() + max(0.0, delay)

    def _snapshot(self) -> Snapshot:
        """``state.json`` as the children left it; unreadable counts as empty (enroll).

        The generation the ``current`` link names is verified (its files against their
        checksums): a damaged one, or an older one standing in for it, is no credential set
        to renew, so the snapshot then calls for ``enroll`` (which fetches the same
        credentials again) at once instead of at the next renewal (where ``renew`` would).
        """
        store = Store(self.settings.state_dir)
        try:
            snap = Snapshot.from_state(store.load_state())
            if snap.current_generation is not None and store.linked_generation() is not None:
                current = store.current_generation()
                if current is None or current.is_fallback:
                    logger.warning("current generation damaged number=%s; enroll runs next",
                                   snap.current_generation)
                    snap = Snapshot(None, "enroll", None)
        except EdgeProvisionError as exc:  # the child will report it properly
            logger.warning("state unreadable state_dir=%s error=%s", self.settings.state_dir, exc)
            snap = Snapshot()
        self._last_snap = snap
        return snap

    # -- children ---------------------------------------------------------------------------

    def _spawn(self, command: str, args: Sequence[str] = ()) -> None:
        import subprocess  # only now: an idle daemon that has run no child never loads it

        argv = [*self._prefix, command, *args, "--json"]
        stdout_fd = capture_fd()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout_fd,
                                    env=self._child_env, close_fds=True)
        except OSError as exc:
            os.close(stdout_fd)
            logger.error("child not started command=%s error=%s", command, exc)
            result = ChildResult(command, 127, "OSError", f"cannot start {command}: {exc}")
            decision = self._decide(EventKind.CHILD_EXITED, child=result)
            self._log_outcome(result, decision)
            self._apply(decision)
            return
        logger.info("child started command=%s args=%s pid=%s", command, " ".join(args) or "-",
                    proc.pid)
        self._child = Child(command, proc, stdout_fd, self.clock.monotonic())

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
            elif child.kill_at is None and now >= child.started + self.child_timeout_s():
                logger.warning("child timed out command=%s after_s=%s", child.command,
                               self.child_timeout_s())
                child.timed_out_s = self.child_timeout_s()
                child.proc.terminate()
                child.kill_at = now + self.stop_grace_s
            return
        self._child = None
        result = child.result(code)
        decision = self._decide(EventKind.CHILD_EXITED, child=result)
        self._log_outcome(result, decision)
        self._apply(decision)
        ok = result.outcome is Outcome.OK and self._last_snap.current_generation is not None
        self._answer_waiting(f"done: {self.machine.status}" if ok
                             else f"failed: {result.description}")
        self._sync_control()

    def _log_outcome(self, result: ChildResult, decision: Decision) -> None:
        """One line per finished child: how it ended, its class, and what runs next when."""
        outcome = decision.outcome or result.outcome
        level = _OUTCOME_LEVEL.get(outcome, logging.WARNING)
        if decision.run is not None:
            command, delay = decision.run, 0.0
        else:
            command, delay = self._last_snap.command, decision.delay_s
        if math.isinf(delay):
            when = "next_in_s=- next_at=-"
        else:
            at = later(self.clock.now(), delay)
            when = f"next_in_s={delay:.1f} next_at={at.isoformat(timespec='seconds')}"
        logger.log(level, "child exited command=%s code=%s outcome=%s kind=%s next=%s %s "
                   "attempt=%s error=%s", result.command, result.returncode, outcome.value,
                   result.error_kind or "-", command, when, decision.machine.attempt,
                   result.description if outcome is not Outcome.OK else "-")

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
        if decision.machine.note is None:  # reloaded: broker, mqtt settings may have changed
            self._sync_control(restart=True)

    # -- control channel --------------------------------------------------------------------

    def _sync_control(self, *, restart: bool = False) -> None:
        """Listener on for the current generation when configured, else off (never imported)."""
        if not self.settings.control_listener:
            if self._control is not None and self._control.generation is not None:
                self._control.restart(self.settings, None)
            return
        generation = self._last_snap.current_generation
        if self._control is None:
            self._control = self._control_factory(self._wfd)
        if restart or self._control.generation != generation:
            logger.info("control listener (re)start generation=%s", generation)
            self._control.restart(self.settings, generation)

    def _serve_requests(self) -> bool:
        """Answer the queued commands; True if one of them started a child."""
        assert self._control is not None
        idle = self._child is None
        for request in self._control.take():
            self._serve(request)
        return idle and self._child is not None

    def _serve(self, request: ControlRequest) -> None:
        name = request.name
        logger.info("control command name=%s request_id=%s", name, request.request_id)
        if name == "status":
            request.answer(self.machine.status)
            return
        kinds = {"renew": EventKind.RENEW_NOW, "reprovision": EventKind.REPROVISION_NOW}
        kind = kinds.get(name)
        if kind is None:
            request.answer(f"error: unknown command {name!r}; use renew, reprovision or status")
            return
        if self._child is not None:
            request.answer(f"busy: {self._child.command} is running; try again when it is done")
            return
        self._apply(self._decide(kind))
        if not self._has_child():  # could not even start; the decision recorded why
            request.answer(f"failed: {self.machine.status}")
            return
        self._waiting.append(request)
        request.answer(f"accepted: {self.machine.status}")

    def _has_child(self) -> bool:
        return self._child is not None

    def _answer_waiting(self, text: str) -> None:
        waiting, self._waiting = self._waiting, []
        for request in waiting:
            request.answer(text)

    def _stop_control(self) -> None:
        self._answer_waiting("failed: the daemon is stopping")
        control, self._control = self._control, None
        if control is not None:
            control.stop()

    def _stop(self) -> None:
        """STOPPING=1; a running child gets SIGTERM, then SIGKILL after the grace period."""
        self.notifier.stopping()
        logger.info("stopping")
        self._deadline = None
        self._stop_control()
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

    def _remove_leftovers(self) -> None:
        """At start: what interrupted writes left (see agent.leftovers); a busy lock skips it."""
        from edge_provision.agent.leftovers import remove_leftovers

        store = Store(self.settings.state_dir)
        try:
            with store.lock(blocking=False, holder="edge-provision run"):
                remove_leftovers(self.settings, store)
        except LockBusy:  # a running enroll/renew removes them itself
            logger.info("leftovers not checked: another run holds the state lock")
        except EdgeProvisionError as exc:
            logger.warning("leftovers not removed error=%s", exc)

    @staticmethod
    def _check_state_dir(state_dir: Path) -> None:
        """The state directory exists (0700) and is writable; StoreError otherwise."""
        path = fileio.ensure_private_dir(state_dir)
        if not os.access(path, os.W_OK | os.X_OK):
            raise StoreError(f"{path}: state directory is not writable; run as the service "
                             "user or pick another one with --state-dir")


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler: nothing; ``set_wakeup_fd`` already wrote the byte."""
