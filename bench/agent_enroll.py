#!/usr/bin/env python3
"""Enrollment wall time: ``edge-provision enroll`` against the lab server on loopback.

Starts the real lab server (subprocess, temporary state directory; with
``--mqtt`` also its mosquitto, so that enrollment includes the MQTT check), then
runs ``python -m edge_provision --state-dir <fresh dir> enroll`` ``--runs`` times,
each with its own external_id, and reports min/median/max wall time. The start-up
cost of a bare interpreter and of the CLI (``enroll --help``) is measured the same
way, so that the enrollment's own share can be read off; so are ``status`` and the
no-op repeat of ``enroll`` on each enrolled gateway.

``--before DIR`` also runs ``status`` and the no-op ``enroll`` from another source
tree (e.g. ``git archive <rev> | tar -x -C DIR``), interleaved with this one on the
same state directories, so that a change is compared in one run. Bounded; 127.0.0.1
only.

    .venv/bin/python bench/agent_enroll.py --runs 10 [--mqtt] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _lab import LabServer, mosquitto_path


def _timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False,
                         cwd=cwd)  # fmt: skip
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    return elapsed


def _row(name: str, values: list[float]) -> str:
    return (f"| {name} | {len(values)} | {min(values) * 1000:.0f} ms | "
            f"{statistics.median(values) * 1000:.0f} ms | {max(values) * 1000:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--mqtt", action="store_true",
                        help="run the lab broker too, so enrollment verifies over MQTT")
    parser.add_argument("--before", type=Path, default=None,
                        help="another source tree: its status / no-op enroll, interleaved")
    args = parser.parse_args()
    trees: dict[str, Path | None] = {"": None}
    if args.before is not None:
        trees = {" (before)": args.before.resolve(), " (after)": None}
    extra_args: tuple[str, ...] = ()
    extra_env: dict[str, str] = {}
    if args.mqtt:
        extra_args = ("--mqtt", "--mqtt-port", "0")
        extra_env = {"EDGE_PROVISION_LAB_MOSQUITTO_BIN": mosquitto_path("bench/agent_enroll.py")}
    with tempfile.TemporaryDirectory(prefix="ep-enroll-") as tmp:
        root = Path(tmp)
        lab = LabServer(root / "lab", extra_args, extra_env)
        url, broker = lab.url, lab.brokers.get("tcp")
        try:
            base = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_PROVISION_")}
            base.update({"EDGE_PROVISION_PROVISION_URL": url,
                         "EDGE_PROVISION_TOKEN_FILE": str(lab.token_path)})
            if broker:
                base.update({"EDGE_PROVISION_MQTT_URL": broker,
                             "EDGE_PROVISION_MQTT_VERIFY": "always"})
            bare = [_timed([sys.executable, "-c", "pass"], base) for _ in range(args.runs)]
            startup = [_timed([sys.executable, "-m", "edge_provision", "enroll", "--help"], base)
                       for _ in range(args.runs)]
            enrolls: list[float] = []
            repeats: dict[str, list[float]] = {name: [] for name in trees}
            statuses: dict[str, list[float]] = {name: [] for name in trees}
            for i in range(args.runs):
                env = dict(base, EDGE_PROVISION_EXTERNAL_ID=f"bench-enroll-{os.getpid()}-{i}")
                cmd = [sys.executable, "-m", "edge_provision", "--state-dir",
                       str(root / f"agent-{i}")]
                enrolls.append(_timed([*cmd, "enroll"], env))
                for name, tree in trees.items():
                    repeats[name].append(_timed([*cmd, "enroll"], env, tree))
                    statuses[name].append(_timed([*cmd, "status"], env, tree))
        finally:
            lab.stop()
    print(f"lab server {url}; MQTT check: {'yes, ' + broker if broker else 'no'}")
    print()
    print("| what | runs | min | median | max |")
    print("|---|---:|---:|---:|---:|")
    print(_row("bare interpreter (`python -c pass`)", bare))
    print(_row("interpreter + CLI start-up (`enroll --help`)", startup))
    print(_row("first enrollment (fresh state dir)", enrolls))
    for name in trees:
        print(_row(f"repeat enrollment (no-op){name}", repeats[name]))
        print(_row(f"`status`{name}", statuses[name]))
    own = statistics.median(enrolls) - statistics.median(startup)
    print()
    print(f"median enrollment minus median start-up: {own * 1000:.0f} ms")
    for name in trees:
        ratio = statistics.median(statuses[name]) / statistics.median(bare)
        noop = statistics.median(repeats[name]) / statistics.median(bare)
        print(f"median status{name}: {ratio:.1f}x a bare interpreter; no-op enroll: {noop:.1f}x")


if __name__ == "__main__":
    main()
