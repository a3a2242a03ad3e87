#!/usr/bin/env python3
"""Idle footprint of ``edge-provision run``: RSS and wake-ups per minute once provisioned.

Starts the real lab server and the real daemon on loopback (temporary state
directories), waits until the daemon says it is provisioned over a real
``NOTIFY_SOCKET``, then samples the daemon's RSS and its voluntary context
switches (each one is a wake-up) from ``/proc`` for ``--seconds``. Bounded in
time; nothing leaves 127.0.0.1.

    .venv/bin/python bench/daemon_idle.py --seconds 60
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _lab import LabServer


def _proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            out[key] = int(value.split()[0])
    return out


def _wait_status(sock: socket.socket, pattern: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except socket.timeout:
            break
        for field in data.splitlines():
            if field.startswith("STATUS=") and re.search(pattern, field):
                return field[7:]
    raise SystemExit(f"no STATUS matching {pattern!r} within {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="idle sampling window")
    parser.add_argument("--watchdog-s", type=float, default=0.0,
                        help="simulate WatchdogSec= (0 = no watchdog)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ep-idle-") as tmp:
        root = Path(tmp)
        lab = LabServer(root / "lab")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(root / "notify"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_PROVISION_")}
        env.update({
            "NOTIFY_SOCKET": str(root / "notify"),
            "EDGE_PROVISION_PROVISION_URL": lab.url,
            "EDGE_PROVISION_TOKEN_FILE": str(lab.token_path),
            "EDGE_PROVISION_EXTERNAL_ID": "bench-idle-gw",
            "EDGE_PROVISION_MQTT_VERIFY": "never",
        })
        if args.watchdog_s:
            env["WATCHDOG_USEC"] = str(int(args.watchdog_s * 1e6))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge_provision", "--state-dir", str(root / "agent"), "run"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            started = time.monotonic()
            status = _wait_status(notify, r"^STATUS=provisioned", 60)
            enrolled_s = time.monotonic() - started
            time.sleep(2.0)  # let the enroll child's exit settle
            before = _proc_status(daemon.pid)
            t0 = time.monotonic()
            samples = []
            while time.monotonic() - t0 < args.seconds:
                time.sleep(min(5.0, args.seconds))
                samples.append(_proc_status(daemon.pid)["VmRSS"])
            after = _proc_status(daemon.pid)
            window = time.monotonic() - t0
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
            lab.stop()
        wakeups = (after["voluntary_ctxt_switches"] - before["voluntary_ctxt_switches"]
                   + after["nonvoluntary_ctxt_switches"] - before["nonvoluntary_ctxt_switches"])
        print(f"status when provisioned: {status}")
        print()
        print("| metric | value |")
        print("|---|---|")
        print(f"| first boot to provisioned (daemon start → STATUS) | {enrolled_s:.2f} s |")
        print(f"| idle RSS (max of {len(samples)} samples) | {max(samples) / 1024:.1f} MiB "
              f"({max(samples)} KiB) |")
        print(f"| idle window | {window:.0f} s |")
        print(f"| wake-ups (context switches) in the window | {wakeups} |")
        print(f"| wake-ups per minute | {wakeups * 60 / window:.1f} |")
        watchdog = f"WatchdogSec={args.watchdog_s:.0f}s" if args.watchdog_s else "off"
        print(f"| watchdog | {watchdog} |")


if __name__ == "__main__":
    main()
