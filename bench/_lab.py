"""The lab server as a subprocess, for the bench scripts (one launcher, not one per script).

Its output goes to a log file (an undrained pipe would block its logging); the
start-up banner is read from there: the URL, the operator token and, with
``--mqtt``, the broker URLs. Also what every script records with a run: the
machine (:func:`machine_basics`) and the block appended to docs/benchmarks.md
(:func:`append_run`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
_LISTEN = re.compile(r"^listening on (http://\S+)$", re.M)
_BROKER = re.compile(r"^mqtt broker: ((tcp|ssl)://\S+)$", re.M)
_READY = "press Ctrl-C"


def machine_basics() -> dict[str, str]:
    """nproc, CPU model, kernel and Python version (what every recorded run names)."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version()}


def add_record_options(parser: argparse.ArgumentParser, doc: Path) -> None:
    """``--record`` (append the run to ``doc``) and ``--note`` (one line recorded with it)."""
    parser.add_argument("--record", action="store_true", help=f"append to {doc}")
    parser.add_argument("--note", default="", help="one line recorded with --record")


def append_run(doc: Path, marker: str, block: Sequence[str]) -> None:
    """Put ``block`` (lines) right below ``marker`` in ``doc`` (newest run first)."""
    text = doc.read_text() if doc.exists() else ""
    if marker not in text:
        raise SystemExit(f"{doc}: marker {marker!r} missing; add it where runs go")
    doc.write_text(text.replace(marker, marker + "\n\n" + "\n".join(block), 1))


def mosquitto_path(script: str) -> str:
    """The mosquitto executable, or exit saying how to install it."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise SystemExit(f"{script} needs mosquitto: sudo apt-get install mosquitto")
    return found


class LabServer:
    """``edge-provision serve --port 0`` with a fresh state directory.

    ``checkout``: the source tree to run (default: this one, with this interpreter);
    another checkout runs with its own ``.venv/bin/python`` when it has one.
    """

    def __init__(self, state_dir: Path, extra_args: Sequence[str] = (),
                 extra_env: dict[str, str] | None = None, checkout: Path = ROOT) -> None:
        self.state_dir = state_dir
        python = checkout / ".venv" / "bin" / "python"
        if checkout.resolve() == ROOT or not python.exists():
            python = Path(sys.executable)
        base = {k: v for k, v in os.environ.items()  # no stray settings from the caller
                if not k.startswith(("MF_PROVISION_", "EDGE_PROVISION_"))}
        base.update(PYTHONUNBUFFERED="1", **(extra_env or {}))
        state_dir.mkdir(parents=True, exist_ok=True)
        self.log = state_dir.parent / f"{state_dir.name}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [str(python), "-m", "edge_provision", "--state-dir", str(state_dir),
                 "serve", "--host", "127.0.0.1", "--port", "0", *extra_args],
                stdout=out, stderr=subprocess.STDOUT, cwd=checkout, env=base,
            )
        banner = self._wait_banner()
        listen = _LISTEN.search(banner)
        assert listen is not None
        self.url = listen.group(1)
        self.brokers = {m.group(2): m.group(1) for m in _BROKER.finditer(banner)}
        self.token_path = state_dir / "api-token"
        # a configured token (MF_PROVISION_API_KEY) leaves no file behind
        configured = (extra_env or {}).get("MF_PROVISION_API_KEY", "")
        self.token = configured or self.token_path.read_text().strip()

    def _wait_banner(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        text = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            text = self.log.read_text(errors="replace")
            if _READY in text and _LISTEN.search(text):
                return text
            time.sleep(0.05)
        self.kill()
        raise SystemExit("the lab server did not start:\n" + text[-3000:])

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def get(self, path: str) -> dict[str, object]:
        """An operator GET with the token."""
        req = urllib.request.Request(self.url + path,
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        """SIGTERM, as an operator would; SIGKILL if it does not stop within 15 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: nothing gets a chance to flush; what is on disk is what was committed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
