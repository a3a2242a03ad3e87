"""The supervisor's control-channel bridge: MQTT commands in, wake-ups of the loop out.

Loaded by :mod:`edge_provision.agent.daemon.supervisor` ONLY when ``mqtt.control_listener`` is on
(it imports :mod:`edge_provision.agent.mqtt`, hence ``ssl`` and later paho). It owns one
:class:`~edge_provision.agent.mqtt.ControlListener` for the current generation, run by a
background thread that connects, and on failure logs and retries with capped
exponential backoff (full jitter) until it is stopped -- a broker that is down never
stops the daemon.

Threads never touch the daemon's state: the listener's handler (paho's network thread)
puts a :class:`Request` on a queue and writes one byte (``\\0``) into the daemon's
self-pipe; the loop takes the requests and answers each with :meth:`Request.answer`,
which publishes the reply through the listener that received the command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from edge_provision.agent.backoff import Backoff
from edge_provision.agent.daemon.children import JitterSource
from edge_provision.agent.mqtt import ControlCommand, ControlListener, control_channel_id
from edge_provision.agent.store import Store
from edge_provision.agent.wiring import mqtt_target
from edge_provision.errors import EdgeProvisionError
from edge_provision.settings import AgentSettings

__all__ = ["WAKE_BYTE", "ControlBridge", "Request"]

logger = logging.getLogger(__name__)

WAKE_BYTE = b"\0"  # not a signal number: the daemon's drain sees 0 = "a command arrived"
_MIN_RETRY_S = 0.5  # full jitter may draw ~0; never spin on a refusing broker
_JOIN_S = 2.0


@dataclass(frozen=True)
class Request:
    """A command taken off the control channel, answerable from the daemon's thread."""

    command: ControlCommand
    listener: ControlListener

    @property
    def name(self) -> str:
        """``renew``, ``reprovision`` or ``status``."""
        return self.command.name

    @property
    def request_id(self) -> str:
        """The SenML ``bn`` of the command (without its trailing ``:``)."""
        return self.command.request_id

    def answer(self, text: str) -> None:
        """Publish ``text`` on ``channels/<control>/messages/res`` (dropped if disconnected)."""
        try:
            sent = self.listener.reply(self.command, text)
        except (OSError, ValueError) as exc:  # paho raises ValueError on a bad topic/payload
            logger.warning("control reply failed name=%s error=%s", self.name, exc)
            return
        if not sent:
            logger.warning("control reply dropped name=%s request_id=%s reason=not connected",
                           self.name, self.request_id)  # fmt: skip


class _Runner:
    """One listener for one generation: connect with retries, then serve until stopped."""

    def __init__(self, bridge: ControlBridge, settings: AgentSettings, generation: int) -> None:
        self.bridge = bridge
        self.settings = settings
        self.generation = generation
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"control-listener-{generation}",
                                       daemon=True)  # fmt: skip

    def _listener(self) -> ControlListener | None:
        gen = Store(self.settings.state_dir).current_generation()
        if gen is None or gen.number != self.generation:
            logger.info("control listener not started generation=%s reason=not current",
                        self.generation)  # fmt: skip
            return None
        target = mqtt_target(self.settings, gen)
        channel = control_channel_id(gen)
        if target is None or channel is None:
            logger.info("control listener not started generation=%s reason=%s", gen.number,
                        "no broker url" if target is None else "no channel")  # fmt: skip
            return None
        holder: list[ControlListener] = []
        listener = ControlListener(target, channel, lambda c: self.bridge.push(c, holder[0]))
        holder.append(listener)
        return listener

    def _run(self) -> None:
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_cap_s)
        rng = JitterSource()  # random loads only if a retry needs jitter
        attempt = 0
        while not self.stopping.is_set():
            listener: Optional[ControlListener] = None
            try:
                listener = self._listener()
                if listener is None:
                    return
                listener.start(timeout_s=self.settings.mqtt_timeout_s)
            except Exception as exc:  # whatever it is, the daemon lives on
                if listener is not None:
                    with contextlib.suppress(Exception):
                        listener.stop()
                delay = max(_MIN_RETRY_S, backoff.delay_s(attempt, rng))
                attempt += 1
                kind = type(exc).__name__ if isinstance(exc, EdgeProvisionError) else "error"
                logger.warning("control listener not connected generation=%s attempt=%s "
                               "retry_in_s=%.1f kind=%s error=%s", self.generation, attempt,
                               delay, kind, exc)  # fmt: skip
                self.stopping.wait(delay)
                continue
            logger.info("control listener running generation=%s topic=%s", self.generation,
                        listener.request_topic)  # fmt: skip
            self.stopping.wait()
            listener.stop()
            logger.info("control listener stopped generation=%s", self.generation)
            return

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(_JOIN_S)  # a connect in progress may outlive this; daemon thread


class ControlBridge:
    """The control listener as seen by the daemon's loop (which alone calls its methods)."""

    def __init__(self, wake_fd: int) -> None:
        self._wake_fd = wake_fd
        self._wake_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._runner: _Runner | None = None

    @property
    def generation(self) -> int | None:
        """The generation whose credentials the listener uses (None: not running)."""
        return self._runner.generation if self._runner is not None else None

    def restart(self, settings: AgentSettings, generation: int | None) -> None:
        """Stop the listener, then start one for ``generation`` (None: stay stopped)."""
        self._stop_runner()
        if generation is None:
            return
        runner = _Runner(self, settings, generation)
        self._runner = runner
        runner.thread.start()

    def take(self) -> Sequence[Request]:
        """Every command received since the last call, oldest first."""
        out: list[Request] = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self._queue.get_nowait())
        return out

    def stop(self) -> None:
        """Stop the listener and never write into the wake-up pipe again."""
        self._stop_runner()
        with self._wake_lock:
            self._wake_fd = -1

    def push(self, command: ControlCommand, listener: ControlListener) -> None:
        """The listener's handler (paho's thread): queue the command, wake the loop."""
        self._queue.put(Request(command, listener))
        with self._wake_lock:
            if self._wake_fd >= 0:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    os.write(self._wake_fd, WAKE_BYTE)  # full pipe: the loop wakes anyway
        return None

    def _stop_runner(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.stop()
