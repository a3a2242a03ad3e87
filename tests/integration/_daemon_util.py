"""Helpers shared by the daemon integration tests: the sd_notify socket and started processes."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Callable

WAIT_S = 20.0
EXTERNAL_ID = "02:42:ac:11:00:07"
EXTERNAL_KEY = "gateway-key-for-tests"


class Notify:
    """A bound AF_UNIX datagram socket collecting sd_notify messages in order.

    ``messages`` holds the texts; ``times`` the ``time.time()`` each one arrived at.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []
        self.times: list[float] = []
        self.cursor = 0

    def __enter__(self) -> Notify:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.sock.close()

    def _find(self, pred: Callable[[str], bool], timeout_s: float, consume: bool) -> int:
        deadline = time.monotonic() + timeout_s
        index = self.cursor
        while True:
            while index < len(self.messages):
                if pred(self.messages[index]):
                    if consume:
                        self.cursor = index + 1
                    return index
                index += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching sd_notify message; got {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.times.append(time.time())
            self.messages.append(data)

    def expect(self, pred: Callable[[str], bool], timeout_s: float = WAIT_S, *,
               consume: bool = True) -> str:
        """The first message since the last match for which ``pred`` holds.

        Fails after ``timeout_s``. With ``consume=False`` the next search starts at the
        same place again.
        """
        return self.messages[self._find(pred, timeout_s, consume)]

    def expect_timed(self, pred: Callable[[str], bool],
                     timeout_s: float = WAIT_S) -> tuple[float, str]:
        """(arrival time, message): :meth:`expect` with the time the message arrived."""
        index = self._find(pred, timeout_s, True)
        return self.times[index], self.messages[index]

    def status(self, fragment: str, timeout_s: float = WAIT_S) -> str:
        """The next STATUS= line containing ``fragment``."""
        return self.expect(lambda m: "STATUS=" in m and fragment in m, timeout_s)

    def status_timed(self, fragment: str, timeout_s: float = WAIT_S) -> tuple[float, str]:
        """(arrival time, line): the next STATUS= line containing ``fragment``."""
        return self.expect_timed(lambda m: "STATUS=" in m and fragment in m, timeout_s)


class Procs:
    """Processes started by a test; all ended at the end, whatever happened.

    By default each is killed; with ``graceful=True`` they get SIGTERM (latest first)
    and are killed only if they are still there 10 s later.
    """

    def __init__(self, tmp_path: Path, *, graceful: bool = False) -> None:
        self.tmp = tmp_path
        self.graceful = graceful
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self, argv: list[str], env: dict[str, str], log: str,
              stdout: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:  # fmt: skip
        """Start ``argv`` with stdin closed and stderr written to ``tmp_path/log``."""
        with open(self.tmp / log, "wb") as err:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                    stderr=err)  # fmt: skip
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        if not self.graceful:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            return
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def cli(*args: str) -> list[str]:
    """The argv running ``edge-provision <args>`` with this interpreter."""
    return [sys.executable, "-m", "edge_provision", *args]


def daemon_env(notify: Notify, url: str, token: str, **extra: str) -> dict[str, str]:
    """The environment of a daemon talking to the lab at ``url``, notifying ``notify``.

    Gateway identity and a short backoff are set; ``extra`` adds or overrides variables.
    """
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path),
               EDGE_PROVISION_PROVISION_URL=url, EDGE_PROVISION_TOKEN=token,
               EDGE_PROVISION_EXTERNAL_ID=EXTERNAL_ID,
               EDGE_PROVISION_EXTERNAL_KEY=EXTERNAL_KEY,
               EDGE_PROVISION_BACKOFF_INITIAL="0.2", EDGE_PROVISION_BACKOFF_CAP="1")
    env.update(extra)
    return env


def stop_daemon(proc: subprocess.Popen[bytes] | subprocess.Popen[str], notify: Notify,
                timeout_s: float) -> tuple[int, float]:
    """SIGTERM; STOPPING=1 must arrive and the process end within ``timeout_s`` each.

    Returns (exit code, seconds from the signal to the exit).
    """
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    notify.expect(lambda m: m == "STOPPING=1", timeout_s)
    code = proc.wait(timeout=timeout_s)
    return code, time.monotonic() - t0


_HOLDER = """
import sys
from pathlib import Path
from edge_provision.agent.store import Store
with Store(Path(sys.argv[1])).lock(holder=sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()
"""


class LockHolder:
    """Another process holding the state lock of ``state_dir`` (as ``label``) until released."""

    def __init__(self, state_dir: Path, label: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(state_dir), label],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "held\n"

    def __enter__(self) -> LockHolder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=WAIT_S)

    @property
    def pid(self) -> int:
        """The holder's process id."""
        return self.proc.pid

    def release(self) -> None:
        """Let go of the lock and end."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=WAIT_S) == 0


def read_line(stream: IO[str], timeout_s: float = WAIT_S) -> str:
    """The next line of a child's pipe, waiting at most ``timeout_s``."""
    ready, _, _ = select.select([stream], [], [], timeout_s)
    assert ready, f"no line within {timeout_s} s"
    return stream.readline()
