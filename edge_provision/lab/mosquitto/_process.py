"""The lab's mosquitto process: one per state directory, dies with the lab server.

Private to :mod:`edge_provision.lab.mosquitto`.

* **Dies with the server.** The child asks the kernel for SIGTERM when its parent dies
  (``prctl(PR_SET_PDEATHSIG)`` between fork and exec; Linux). The signal follows the
  *thread* that started the broker, so :meth:`BrokerProcess.start` runs on a thread
  that lives as long as the server (the one that calls ``MosquittoSync.start``).
* **A stale broker of ours is replaced.** ``mosquitto.pid`` holds the pid; at start a
  live process whose ``/proc/<pid>/cmdline`` is mosquitto with *our* config file is
  terminated (then killed) before anything binds. Another process under a recycled pid
  is left alone.
* **A port held by someone else is an error** naming the port, before mosquitto starts.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from edge_provision import fileio
from edge_provision.errors import ConfigError

__all__ = ["BrokerProcess", "is_our_broker"]

logger = logging.getLogger("edge_provision.lab.mosquitto")

_PR_SET_PDEATHSIG = 1
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def is_our_broker(pid: int, config: Path) -> bool:
    """Whether ``pid`` is a mosquitto running with the config file ``config``."""
    argv = _cmdline(pid)
    if not argv or not Path(argv[0]).name.startswith("mosquitto"):
        return False
    want = str(config)
    return any(a == "-c" and b == want for a, b in zip(argv, argv[1:]))


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function: SIGTERM when the parent goes, exit now if it already went."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return preexec


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mosquitto binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise ConfigError(f"cannot bind {host}:{port} for the mqtt broker: "
                              f"{exc.strerror}") from None  # fmt: skip
    return True


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class BrokerProcess:
    """Start, signal and stop the mosquitto of one state directory."""

    def __init__(self, binary: str, config: Path, pid_file: Path, log_file: Path, host: str,
                 ports: Sequence[int]) -> None:  # fmt: skip
        self._bin = binary
        self.config = config
        self._pid_file = pid_file
        self._log_file = log_file
        self._host = host
        self._ports = tuple(ports)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running broker's pid (None when stopped)."""
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        """Whether the broker process is running."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Replace a stale broker of ours, check the ports, start, wait for the listeners."""
        self._replace_stale()
        for port in self._ports:
            if not _port_free(self._host, port):
                raise ConfigError(
                    f"mqtt port {port} on {self._host} is in use by another program; stop it "
                    "or give the lab broker another port (--mqtt-port / --mqtt-tls-port, 0 "
                    "picks a free one)"
                )
        try:
            process = subprocess.Popen(
                [self._bin, "-c", str(self.config)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent(),  # one prctl call: takes no lock
            )  # fmt: skip
        except FileNotFoundError:
            raise ConfigError(
                f"mosquitto executable {self._bin!r} not found; install mosquitto (apt install "
                "mosquitto) or set EDGE_PROVISION_LAB_MOSQUITTO_BIN"
            ) from None
        self._process = process
        fileio.atomic_write(self._pid_file, f"{process.pid}\n", mode=fileio.PUBLIC_MODE)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if all(_port_open(self._host, p) for p in self._ports):
                logger.info("mosquitto started pid=%s ports=%s", process.pid,
                            ",".join(map(str, self._ports)))  # fmt: skip
                return
            time.sleep(0.02)
        err = b""
        if process.poll() is not None and process.stderr is not None:
            err = process.stderr.read()[-2000:]
        self.stop()
        tail = err.decode("utf-8", "replace").strip() or self._log_tail()
        raise ConfigError(
            f"mosquitto did not start on {self._host}:{','.join(map(str, self._ports))}: "
            f"{tail}; pick other ports with --mqtt-port/--mqtt-tls-port"
        )

    def hup(self) -> None:
        """Ask the broker to re-read its files (SIGHUP)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Terminate the broker (kill it after 5 s); remove the pid file."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT_S)
        if process.stderr is not None:
            process.stderr.close()
        self._pid_file.unlink(missing_ok=True)

    def _replace_stale(self) -> None:
        try:
            text = self._pid_file.read_text("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return
        pid = int(text) if text.isdigit() else 0
        if pid > 0 and is_our_broker(pid, self.config):
            logger.warning("stale lab broker replaced pid=%s config=%s", pid, self.config)
            _end(pid)
        self._pid_file.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        try:
            return " | ".join(self._log_file.read_text("utf-8", "replace").splitlines()[-5:])
        except OSError:
            return "no log"


def _end(pid: int) -> None:
    """SIGTERM ``pid``, SIGKILL it after 5 s; return once it is gone."""
    for sig, wait_s in ((signal.SIGTERM, _STOP_TIMEOUT_S), (signal.SIGKILL, _STOP_TIMEOUT_S)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                return
            time.sleep(0.02)
    raise ConfigError(f"the stale lab broker pid {pid} does not stop; kill it and start again")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
