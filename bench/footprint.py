#!/usr/bin/env python3
"""Footprint of the agent: start-up of `status` and the no-op `enroll` against a bare
interpreter, and the idle RSS of `edge-provision run`; optionally before/after in one run.

Each source tree (this repository, and with ``--before DIR`` another one, e.g. ``git
archive <rev> | tar -x -C DIR``) is installed the way a gateway gets it: ``pip install
<tree>`` into a fresh virtual environment (a regular install, not the editable one of the
development venv, whose import hook costs every process about 2 MB and some milliseconds).
A real lab server runs on 127.0.0.1 (with ``--mqtt`` its mosquitto too). Then:

* start-up: ``--runs`` rounds; in each round, for each tree, a bare interpreter
  (``python -c pass``), ``status`` and the no-op ``enroll`` (on a gateway enrolled once
  before), each timed from outside (wall clock, and CPU as user + system of the finished
  child from ``getrusage``). The ratio to the bare interpreter is taken within each round
  (the machine's speed drifts), and its median reported.
* idle RSS: ``python -m edge_provision run`` with a real ``NOTIFY_SOCKET``; once it says
  ``STATUS=provisioned`` and has been idle ``--idle-s`` seconds, ``VmRSS`` and ``VmHWM`` from
  ``/proc/<pid>/status``. Three cases: restarted on a provisioned gateway (no child has
  run), first boot (an enroll child ran), and -- with ``--mqtt`` -- restarted with the
  control listener on (paho, ssl and a network thread).

Bounded in time; nothing leaves 127.0.0.1.

    .venv/bin/python bench/footprint.py --runs 15 [--before DIR] [--mqtt]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _lab import ROOT, LabServer, mosquitto_path

TIMEOUT_S = 120.0


def _install(tree: Path, venv: Path) -> Path:
    """A fresh venv with ``tree`` installed (regular install); its python."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT_S)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(tree)], check=True,
                   timeout=600, capture_output=True)  # fmt: skip
    return python


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall s, cpu s) of one run of ``argv`` in ``cwd``, which must succeed.

    ``cwd`` must not hold an ``edge_provision`` package: ``python -m`` puts the working
    directory first on ``sys.path`` and would run that instead of the installed one.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=TIMEOUT_S, check=False,
                          stdin=subprocess.DEVNULL, cwd=cwd)  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _proc_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _idle_rss(python: Path, state_dir: Path, env: dict[str, str], work: Path,
              idle_s: float) -> dict[str, int]:  # fmt: skip
    """Start ``run``; once provisioned and idle, its VmRSS/VmHWM (KiB); then SIGTERM."""
    path = work / f"notify-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(1.0)
        daemon = subprocess.Popen(
            [str(python), "-m", "edge_provision", "--state-dir", str(state_dir), "run"],
            env=dict(env, NOTIFY_SOCKET=str(path)), stdin=subprocess.DEVNULL, cwd=work,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit(f"the daemon in {state_dir} never said it was provisioned")
                try:
                    data = notify.recv(4096).decode()
                except socket.timeout:
                    continue
                if re.search(r"^STATUS=provisioned", data, re.M):
                    break
            time.sleep(idle_s)
            return _proc_kib(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(15)


def _row(name: str, values: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    return (f"| {name} | {len(values)} | {min(values) * scale:.0f} {unit} | "
            f"{statistics.median(values) * scale:.0f} {unit} | {max(values) * scale:.0f} {unit} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--before", type=Path, default=None,
                        help="another source tree, measured in the same run")
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--mqtt", action="store_true",
                        help="also measure the daemon with the control listener on")
    args = parser.parse_args()
    trees = {"after": ROOT}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": ROOT}
    with tempfile.TemporaryDirectory(prefix="ep-footprint-") as tmp:
        work = Path(tmp)
        pythons = {name: _install(tree, work / f"venv-{name}") for name, tree in trees.items()}
        extra_args: tuple[str, ...] = ()
        extra_env: dict[str, str] = {}
        if args.mqtt:
            extra_args = ("--mqtt", "--mqtt-port", "0")
            extra_env = {"EDGE_PROVISION_LAB_MOSQUITTO_BIN": mosquitto_path("footprint.py")}
        lab = LabServer(work / "lab", extra_args, extra_env)
        try:
            base = {k: v for k, v in os.environ.items()
                    if not k.startswith(("EDGE_PROVISION_", "NOTIFY_", "WATCHDOG_"))}
            base.update({"EDGE_PROVISION_PROVISION_URL": lab.url,
                         "EDGE_PROVISION_TOKEN_FILE": str(lab.token_path),
                         "EDGE_PROVISION_MQTT_VERIFY": "never"})
            envs = {name: dict(base, EDGE_PROVISION_EXTERNAL_ID=f"fp-{os.getpid()}-{name}")
                    for name in trees}
            commands: dict[str, dict[str, list[str]]] = {}
            for name, python in pythons.items():
                state = work / f"agent-{name}"
                cli = [str(python), "-m", "edge_provision", "--state-dir", str(state)]
                _timed([*cli, "enroll"], envs[name], work)  # once: what follows is a no-op
                commands[name] = {"bare": [str(python), "-c", "pass"],
                                  "status": [*cli, "status"], "enroll": [*cli, "enroll"]}
            walls = {(n, c): [] for n in trees for c in ("bare", "status", "enroll")}
            cpus = {(n, c): [] for n in trees for c in ("bare", "status", "enroll")}
            ratios = {(n, c, k): [] for n in trees for c in ("status", "enroll")
                      for k in ("wall", "cpu")}
            for _ in range(args.runs):
                for name in trees:
                    measured = {c: _timed(argv, envs[name], work)
                                for c, argv in commands[name].items()}
                    for command, (wall, cpu) in measured.items():
                        walls[name, command].append(wall)
                        cpus[name, command].append(cpu)
                    for command in ("status", "enroll"):
                        ratios[name, command, "wall"].append(
                            measured[command][0] / measured["bare"][0])
                        ratios[name, command, "cpu"].append(
                            measured[command][1] / max(measured["bare"][1], 1e-3))
            rss: dict[tuple[str, str], dict[str, int]] = {}
            for name, python in pythons.items():
                rss[name, "restart, provisioned"] = _idle_rss(
                    python, work / f"agent-{name}", envs[name], work, args.idle_s)
                fresh = dict(envs[name], EDGE_PROVISION_EXTERNAL_ID=f"fp-{os.getpid()}-{name}-2")
                rss[name, "first boot (an enroll child ran)"] = _idle_rss(
                    python, work / f"fresh-{name}", fresh, work, args.idle_s)
                broker = lab.brokers.get("tcp")
                if broker:
                    listener = dict(envs[name], EDGE_PROVISION_CONTROL_LISTENER="true",
                                    EDGE_PROVISION_MQTT_URL=broker)
                    rss[name, "restart, control listener on"] = _idle_rss(
                        python, work / f"agent-{name}", listener, work, args.idle_s)
        finally:
            lab.stop()
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}; {os.cpu_count()} cpus; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; trees: "
          + ", ".join(f"{n} = {t}" for n, t in trees.items()))
    print()
    print("| what | runs | min | median | max |")
    print("|---|---:|---:|---:|---:|")
    for name in trees:
        for command, label in (("bare", "bare interpreter (`python -c pass`)"),
                               ("status", "`status`"), ("enroll", "no-op `enroll`")):
            print(_row(f"{label}, {name}, wall", walls[name, command]))
            print(_row(f"{label}, {name}, cpu", cpus[name, command]))
    print()
    print("| command | tree | median wall ratio to bare | median cpu ratio to bare |")
    print("|---|---|---:|---:|")
    for command in ("status", "enroll"):
        for name in trees:
            print(f"| {'`status`' if command == 'status' else 'no-op `enroll`'} | {name} | "
                  f"{statistics.median(ratios[name, command, 'wall']):.1f}x | "
                  f"{statistics.median(ratios[name, command, 'cpu']):.1f}x |")
    print()
    print("| daemon idle | tree | VmRSS | VmHWM |")
    print("|---|---|---:|---:|")
    for (name, case), kib in rss.items():
        print(f"| {case} | {name} | {kib['VmRSS'] / 1024:.1f} MiB | "
              f"{kib['VmHWM'] / 1024:.1f} MiB |")


if __name__ == "__main__":
    main()
