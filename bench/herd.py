"""The morning rollout: ``edge-provision simulate`` herds against a fresh lab server.

For each scenario a fresh lab server starts as a subprocess (``bench/_lab.py``, built-in
layout, its own state directory) and ``python -m edge_provision simulate --json`` runs
against it as another subprocess: by default 1,000 and 10,000 gateways, each with and
without CSR, then one run in which the lab server is SIGKILLed when the herd is half
done and restarted on the same state directory and port -- the fleet must still finish
with 0 duplicates (the simulator's own audit says so; the rows of ``lab.db`` are counted
as well).

Where the time goes: the CPU of the simulator process and of the server process
(``utime + stime`` from ``/proc/<pid>/stat``) is read when the simulator starts, when it
prints ``audit:`` (the end of the enrollment phase) and when it exits, so the table can
say which process a faster herd needs to get cheaper.

    .venv/bin/python bench/herd.py                                  # all five, ~15 min
    .venv/bin/python bench/herd.py --gateways 1000 --no-kill         # two quick ones
    .venv/bin/python bench/herd.py --record --note "what changed"    # append to docs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _lab import LabServer

from edge_provision.net import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "benchmarks.md"
RECORD_MARK = "<!-- herd.py appends runs below this line -->"
TICKS = os.sysconf("SC_CLK_TCK")
STEPS = ("lookup", "mapping", "bootstrap", "csr", "enrollment")


def cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Scenario:
    """One herd."""

    gateways: int
    csr: bool
    kill_at: float | None = None  # fraction of the herd done when the server is killed


@dataclass
class Outcome:
    """What one herd measured."""

    scenario: Scenario
    doc: dict[str, object]
    exit_code: int
    sim_cpu_run_s: float
    sim_cpu_total_s: float
    server_cpu_run_s: float
    server_cpu_total_s: float
    db_mappings: int
    restarts: int = 0
    notes: list[str] = field(default_factory=list)


def db_mappings(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM mappings").fetchone()[0])
    finally:
        conn.close()


def herd(scenario: Scenario, args: argparse.Namespace, workdir: Path) -> Outcome:
    state = workdir / f"lab-{scenario.gateways}-{'csr' if scenario.csr else 'nocsr'}"
    port = free_port()
    server = LabServer(state, ["--port", str(port)])
    servers_cpu = 0.0  # CPU of servers that are gone (killed)
    cmd = [sys.executable, "-m", "edge_provision", "simulate", "--json",
           "--provision-url", server.url, "--token", server.token,
           "--gateways", str(scenario.gateways), "--concurrency", str(args.concurrency),
           "--time-scale", str(args.time_scale)]
    if not scenario.csr:
        cmd.append("--no-csr")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_PROVISION_", "MF_"))}
    server0 = cpu_s(server.proc.pid)
    sim = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    marks: dict[str, float] = {}
    lines: list[str] = []
    restarted = threading.Event()

    def read_stderr() -> None:
        nonlocal server, servers_cpu
        assert sim.stderr is not None
        for line in sim.stderr:
            lines.append(line.rstrip())
            head = line.strip().split("%", 1)[0]
            if (scenario.kill_at is not None and not restarted.is_set() and head.isdigit()
                    and int(head) >= 100 * scenario.kill_at):
                servers_cpu += cpu_s(server.proc.pid) - server0
                server.kill()
                time.sleep(args.down_s)
                server = LabServer(state, ["--port", str(port)])
                marks["server_restart"] = cpu_s(server.proc.pid)
                restarted.set()
            if line.startswith("audit:"):
                marks["sim"] = cpu_s(sim.pid)
                marks["server"] = cpu_s(server.proc.pid)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert sim.stdout is not None
    out = sim.stdout.read()
    _, status, usage = os.wait4(sim.pid, 0)
    sim.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=30)
    server_base = marks.get("server_restart", server0)
    server_end = cpu_s(server.proc.pid) - server_base + servers_cpu
    try:
        doc = json.loads(out)
    except ValueError:
        server.kill()
        tail = "\n".join(lines[-20:])
        raise SystemExit(f"simulate failed ({sim.returncode}):\n{tail}") from None
    server.stop()
    outcome = Outcome(
        scenario, doc, sim.returncode,
        sim_cpu_run_s=marks.get("sim", float("nan")),
        sim_cpu_total_s=usage.ru_utime + usage.ru_stime,
        server_cpu_run_s=marks.get("server", float("nan")) - server_base + servers_cpu,
        server_cpu_total_s=server_end,
        db_mappings=db_mappings(state / "lab.db"),
        restarts=int(restarted.is_set()),
    )
    if scenario.kill_at is not None and not restarted.is_set():
        outcome.notes.append("the herd ended before the kill point")
    return outcome


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    return (f"nproc {os.cpu_count()}; cpu {model}; kernel {platform.release()}; "
            f"python {platform.python_version()}")


def _ms(step: dict[str, object] | None, key: str) -> str:
    value = step.get(key) if step else None
    return "-" if value is None else f"{value:.1f}"


def table(outcomes: list[Outcome]) -> str:
    head = ("| gateways | CSR | kill | elapsed s | gateways/s | "
            + " | ".join(f"{s} p50/p99 ms" for s in STEPS)
            + " | failed attempts | gave up | duplicates | audit | exit "
            "| simulator CPU s (ms/gw) | server CPU s (ms/gw) | simulator share |")
    lines = [head, "|" + "---:|" * 5 + "---:|" * len(STEPS) + "---|---:|---:|---|---:|"
             + "---:|---:|---:|"]
    for o in outcomes:
        run, audit = o.doc["run"], o.doc["audit"]
        assert isinstance(run, dict) and isinstance(audit, dict)
        steps = run["steps"]
        n = o.scenario.gateways
        errors = ", ".join(f"{k} {v}" for k, v in run["attempt_errors"].items()) or "0"
        gave_up = ", ".join(f"{k} {v}" for k, v in run["failures"].items()) or "0"
        sim_run = float(run["simulator_cpu_s"])
        share = sim_run / (sim_run + o.server_cpu_run_s) if o.server_cpu_run_s > 0 else 0
        lines.append(
            f"| {n:,} | {'yes' if o.scenario.csr else 'no'} | "
            f"{'at ' + format(o.scenario.kill_at, '.0%') if o.scenario.kill_at else '-'} | "
            f"{run['elapsed_s']:.1f} | {run['gateways_per_s']:.0f} | "
            + " | ".join(f"{_ms(steps.get(s), 'p50_ms')} / {_ms(steps.get(s), 'p99_ms')}"
                         for s in STEPS)
            + f" | {errors} | {gave_up} | {audit['duplicates']} | "
            f"{'ok' if audit['ok'] else 'FAILED'} | {o.exit_code} | "
            f"{sim_run:.1f} ({1000 * sim_run / n:.2f}) | "
            f"{o.server_cpu_run_s:.1f} ({1000 * o.server_cpu_run_s / n:.2f}) | {share:.0%} |")
    return "\n".join(lines)


def details(outcomes: list[Outcome]) -> str:
    out = []
    for o in outcomes:
        run, audit = o.doc["run"], o.doc["audit"]
        assert isinstance(run, dict) and isinstance(audit, dict)
        out.append(
            f"- {o.scenario.gateways:,} gateways, CSR {'on' if o.scenario.csr else 'off'}"
            f"{', server SIGKILLed and restarted' if o.restarts else ''}: "
            f"{run['enrolled']} enrolled, {run['retries']} retries, "
            f"{run['mappings_created']} gateways mapped, lab.db holds {o.db_mappings} "
            f"mappings; audit read {audit['things']} things, {audit['channels']} channels, "
            f"{audit['configs']} configs, fetched {audit['fetched']} with their keys "
            f"(audit CPU {audit['simulator_cpu_s']:.1f} s); whole processes: simulator "
            f"{o.sim_cpu_total_s:.1f} s CPU, server {o.server_cpu_total_s:.1f} s"
            + (f"; {'; '.join(o.notes)}" if o.notes else ""))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--no-kill", action="store_true", help="skip the SIGKILL run")
    parser.add_argument("--kill-gateways", type=int, default=2000)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction done (0.5)")
    parser.add_argument("--down-s", type=float, default=1.0,
                        help="seconds the server stays down before the restart")
    parser.add_argument("--record", action="store_true", help=f"append to {DOC}")
    parser.add_argument("--note", default="", help="one line recorded with --record")
    args = parser.parse_args()
    if not all(1 <= g <= 65_536 for g in [*args.gateways, args.kill_gateways]):
        parser.error("gateways must be 1 to 65536")
    if not 0 < args.kill_at < 1 or not 0 <= args.down_s <= 60:
        parser.error("--kill-at must be within (0, 1), --down-s within [0, 60]")
    scenarios = [Scenario(g, csr) for g in args.gateways for csr in (False, True)]
    if not args.no_kill:
        scenarios.append(Scenario(args.kill_gateways, True, kill_at=args.kill_at))
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()[0]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="herd-") as tmp:
        for scenario in scenarios:
            print(f"herd: {scenario}", file=sys.stderr)
            outcomes.append(herd(scenario, args, Path(tmp)))
            print(table(outcomes[-1:]).splitlines()[-1], file=sys.stderr)
    text = (f"### Run {started:%Y-%m-%d %H:%M} UTC{' — ' + args.note if args.note else ''}\n\n"
            f"Machine: {machine()}; 1-min load average {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after (other work on the machine).\n"
            f"Command: `bench/herd.py --gateways {' '.join(map(str, args.gateways))} "
            f"--concurrency {args.concurrency} --time-scale {args.time_scale:g}"
            f"{' --no-kill' if args.no_kill else f' --kill-gateways {args.kill_gateways}'}`."
            "\n\n"
            f"{table(outcomes)}\n\n{details(outcomes)}\n")
    print(text)
    if args.record:
        doc = DOC.read_text()
        if RECORD_MARK not in doc:
            raise SystemExit(f"{DOC} has no line {RECORD_MARK!r}")
        DOC.write_text(doc.replace(RECORD_MARK, f"{RECORD_MARK}\n\n{text}", 1))
        print(f"recorded in {DOC}", file=sys.stderr)
    bad = [o for o in outcomes if o.exit_code != 0 or o.doc["audit"]["duplicates"]]
    return 1 if bad else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
