"""Slow, idle and too many clients against the real lab server (raw sockets on 127.0.0.1).

Deadlines for a request's headers (408) and body (closed), a cap on open
connections (the longest idle one gives way; 503 + Retry-After when none is
idle), and 1,100 idle or slowloris connections against a server whose open-file
limit is systemd's default 1,024: ``/health`` still answers.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _lab_util import lab_settings, serving

from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread

TIMEOUT = 10
REPO = Path(__file__).resolve().parents[2]


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)


def _read_until_closed(sock: socket.socket, limit_s: float = TIMEOUT) -> bytes:
    """Everything the server sends until it closes (bounded by ``limit_s``)."""
    sock.settimeout(limit_s)
    data = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError(f"the server kept the connection open for {limit_s} s")
    return data


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server with 0.5 s deadlines and a cap of 16 connections."""
    settings = lab_settings(tmp_path, header_timeout_s=0.5, body_timeout_s=0.5,
                            max_connections=16)
    with serving(settings) as server:
        yield server


def _token(tmp_path: Path) -> str:
    return (tmp_path / "lab" / TOKEN_FILE).read_text().strip()


def test_incomplete_headers_get_408_and_silence_is_closed(quick: RunningLabServer) -> None:
    """Half a request head gets 408 after the deadline; a connection that sends nothing is
    closed without an answer."""
    with _connect(quick.url) as slow, _connect(quick.url) as silent:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: lab\r\nX-Slow: ")
        answer = _read_until_closed(slow)
        assert _read_until_closed(silent) == b""
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"error": "request headers not complete within 0.5 s' in answer
    assert requests.get(f"{quick.url}/health", timeout=TIMEOUT).status_code == 200


def test_trickled_headers_do_not_extend_the_deadline(quick: RunningLabServer) -> None:
    """A slowloris sending a header byte every 0.1 s is cut at the deadline all the same."""
    with _connect(quick.url) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\n")
        closed_after = None
        start = time.monotonic()
        for _ in range(100):  # at most 10 s
            try:
                slow.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
                break
            slow.settimeout(0.1)
            try:
                if slow.recv(4096).startswith(b"HTTP/1.1 408"):
                    closed_after = time.monotonic() - start
                    break
            except socket.timeout:  # TimeoutError since 3.10
                continue
    assert closed_after is not None, "the trickling connection was never cut"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_never_ends_is_cut(quick: RunningLabServer, tmp_path: Path,
                                       framing: str) -> None:
    """A body that stalls (Content-Length) or never ends (chunked, trickling) is closed after
    the body deadline; the server goes on."""
    head = (f"POST /mapping HTTP/1.1\r\nHost: lab\r\nAuthorization: {_token(tmp_path)}\r\n"
            "Content-Type: application/json\r\n")
    with _connect(quick.url) as sock:
        if framing == "chunked":
            sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n".encode())
            cut = False
            for _ in range(100):  # one chunk every 0.1 s, at most 10 s
                try:
                    sock.sendall(b"1\r\n \r\n")
                    sock.settimeout(0.1)
                    cut = sock.recv(4096) == b""
                except socket.timeout:  # TimeoutError since 3.10
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    cut = True
                if cut:
                    break
            assert cut, "the endless chunked body was never cut"
        else:
            sock.sendall(f"{head}Content-Length: 100\r\n\r\n{{\"external_id\"".encode())
            assert _read_until_closed(sock) == b""
    assert requests.get(f"{quick.url}/health", timeout=TIMEOUT).status_code == 200


def test_the_cap_closes_the_longest_idle_connection(quick: RunningLabServer) -> None:
    """With 16 connections open, a 17th closes the one idle longest and is served."""
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(_connect(quick.url)) for _ in range(16)]
        time.sleep(0.1)  # let the server accept them, in order
        resp = requests.get(f"{quick.url}/health", timeout=TIMEOUT)
        assert resp.status_code == 200
        assert _read_until_closed(idle[0], 2.0) == b""
        idle[-1].sendall(b"GET /health HTTP/1.1\r\nHost: lab\r\n\r\n")
        idle[-1].settimeout(TIMEOUT)
        assert idle[-1].recv(4096).startswith(b"HTTP/1.1 200 ")


def test_the_cap_answers_503_when_no_connection_is_idle(tmp_path: Path) -> None:
    """16 connections each with a request in flight: a 17th gets 503 + Retry-After: 1."""
    settings = lab_settings(tmp_path, max_connections=16)
    with start_in_thread(settings) as lab, contextlib.ExitStack() as stack:
        head = (f"POST /mapping HTTP/1.1\r\nHost: lab\r\nAuthorization: {_token(tmp_path)}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode()
        for _ in range(16):
            stack.enter_context(_connect(lab.url)).sendall(head)
        time.sleep(0.2)  # let the server read every head
        with _connect(lab.url) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: lab\r\n\r\n")
            answer = _read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"\r\nretry-after: 1\r\n" in answer
        assert b"retry in a second" in answer
        stack.close()  # the busy clients go away: room again
        for _ in range(50):  # bounded: 5 s
            if requests.get(f"{lab.url}/health", timeout=TIMEOUT).status_code == 200:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("/health never answered after the busy clients left")
        assert lab.service.internal_errors == 0


# ``serve`` in a process whose open-file limit is systemd's default for a service
_SERVE_LIMITED = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)); "
    "sys.argv = ['edge-provision', *sys.argv[1:]]; "
    "runpy.run_module('edge_provision', run_name='__main__')"
)


@pytest.mark.slow
def test_1100_idle_and_slow_connections_leave_health_answering(tmp_path: Path) -> None:
    """1,100 idle or slowloris connections to a server limited to 1,024 open files:
    /health answers 30 of 30 times, and the server says how many connections it holds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        if hard != resource.RLIM_INFINITY and hard < 1400:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1400, hard))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MF_", "EDGE_PROVISION_"))}
    with subprocess.Popen(
        [sys.executable, "-c", _SERVE_LIMITED, "--state-dir", str(tmp_path / "s"), "serve",
         "--port", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = None
            for _ in range(50):  # the banner's first line
                line = proc.stdout.readline()
                match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
                if match:
                    url = match.group(1)
                    break
            assert url is not None
            with contextlib.ExitStack() as stack:
                for n in range(1100):
                    sock = stack.enter_context(_connect(url))
                    if n % 2:  # a slowloris: half a request head, then nothing
                        sock.sendall(b"GET /health HTTP/1.1\r\nHost: lab\r\n")
                answers = [requests.get(f"{url}/health", timeout=TIMEOUT).status_code
                           for _ in range(30)]
            assert answers == [200] * 30
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
        _, errors = proc.communicate(timeout=10)
    assert code == 0, errors
    assert "open-file limit 1024 holds only 768 connections" in errors
    assert "Traceback" not in errors
