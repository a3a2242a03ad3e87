"""Benchmark the lab server: ``POST /mapping`` and ``GET /health`` under wrk.

Starts the real lab server as a subprocess (``python -m edge_provision
--state-dir <tmp> serve --port 0``) on 127.0.0.1, then runs wrk against it for
each concurrency (default 1, 4 and 16 connections), ``/health`` and
``/mapping`` alternately in the same run so their ratio is comparable. Every
``/mapping`` request carries a unique external_id (bench/mapping.lua), so every
answered request is a new, durable mapping (the server answers 201 only after
the COMMIT holding the rows returned).

Afterwards it checks durability: the things the operator API reports must equal
the 201s wrk counted (plus at most one in-flight request per connection at the
end of each cell); then it kills the server with SIGKILL and counts the rows in
the SQLite file directly, which must equal the API's count.

Prints a markdown table; ``--record`` appends it, with machine and date, to
docs/benchmarks.md. Needs wrk (``sudo apt-get install wrk``).

    .venv/bin/python bench/lab_mapping.py                # 10 s per cell
    .venv/bin/python bench/lab_mapping.py --seconds 3 --clients 4
    .venv/bin/python bench/lab_mapping.py --record --note "httptools installed"

``--server LABEL=CHECKOUT[,NAME=VALUE...]`` (repeatable) compares source trees
in one run: one server per checkout (each with its own ``.venv/bin/python`` if it
has one, and the given environment variables), started side by side and
measured alternately, cell by cell, so that the machine's drift hits all alike;
``--rounds`` repeats the whole sequence. Before/after a change::

    .venv/bin/python bench/lab_mapping.py --server before=/work/before --server after=.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _lab import LabServer, add_record_options, append_run, machine_basics

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "mapping.lua"
DOC = ROOT / "docs" / "benchmarks.md"
RECORD_MARK = "<!-- lab_mapping.py appends runs below this line -->"


@dataclass(frozen=True)
class Cell:
    """One wrk run."""

    server: str
    path: str
    clients: int
    threads: int
    seconds: float
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx answers + socket errors
    cpu_us: float  # server CPU (user + system, all threads) per request


@dataclass(frozen=True)
class Target:
    """A source tree to measure: label, checkout, extra environment."""

    label: str
    checkout: Path
    env: dict[str, str]


def parse_target(text: str) -> Target:
    """``LABEL=CHECKOUT[,NAME=VALUE...]``."""
    label, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or not label or not parts[0] or not all("=" in p for p in parts[1:]):
        raise argparse.ArgumentTypeError(
            f"--server {text!r}: expected LABEL=CHECKOUT[,NAME=VALUE...], "
            "e.g. before=/work/before")
    checkout = Path(parts[0]).resolve()
    if not (checkout / "edge_provision").is_dir():
        raise argparse.ArgumentTypeError(f"--server {text!r}: {checkout} has no edge_provision/")
    env = dict(p.split("=", 1) for p in parts[1:])
    return Target(label, checkout, env)


def machine() -> dict[str, str]:
    """nproc, CPU model, kernel, Python version, implementation details that matter."""
    try:
        import httptools  # noqa: F401
        parser = "httptools"
    except ImportError:
        parser = "h11"
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        **machine_basics(),
        "http": f"uvicorn auto -> {parser} + {loop}",
        "wrk": (wrk.stdout or wrk.stderr).split("[")[0].strip(),
    }


def run_wrk(server: LabServer, label: str, path: str, clients: int, seconds: float,
            prefix: str) -> Cell:
    threads = min(2, clients)
    mode = "mapping" if path == "/mapping" else "health"
    cmd = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--latency",
           "--timeout", "10s", "-s", str(LUA), server.url + path, "--", mode,
           server.token, prefix]
    cpu = server.cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         timeout=seconds + 60)
    cpu = server.cpu_seconds() - cpu
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("RESULT "):])
    errors = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors",
                                "status_errors", "timeouts"))
    return Cell(label, path, clients, threads, r["duration_us"] / 1e6, r["requests"],
                r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1000,
                r["p99_us"] / 1000, errors, cpu / max(1, r["requests"]) * 1e6)


def db_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("mappings", "things", "bootstrap_configs")}
    finally:
        conn.close()


def table(cells: list[Cell]) -> str:
    """Every cell; with several servers a server column."""
    several = len({c.server for c in cells}) > 1
    health = {(c.server, c.clients): c for c in cells if c.path == "/health"}
    lines = ["| " + ("server | " if several else "") + "clients | endpoint | requests | req/s "
             "| p50 ms | p99 ms | errors | server CPU µs/req | /mapping ÷ /health |",
             "|" + ("---|" if several else "") + "---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        ratio = ""
        h = health.get((c.server, c.clients))
        if c.path == "/mapping" and h is not None:
            ratio = f"{c.rate / h.rate:.0%}"
        lines.append("| " + (f"{c.server} | " if several else "") +
                     f"{c.clients} | `{c.path}` | {c.requests} | {c.rate:,.0f} | "
                     f"{c.p50_ms:.2f} | {c.p99_ms:.2f} | {c.errors} | {c.cpu_us:,.0f} | {ratio} |")
    return "\n".join(lines)


def comparison(cells: list[Cell], labels: list[str]) -> str:
    """Per clients and endpoint, one column per server: req/s (median p50), CPU per request.

    Rates are over all rounds; server CPU per request (all threads, user + system)
    is what other work on a shared machine disturbs least.
    """
    lines = ["| clients | endpoint | " + " | ".join(labels) + " |",
             "|---:|---|" + "---:|" * len(labels)]
    keys = sorted({(c.clients, c.path) for c in cells}, key=lambda k: (k[0], k[1] != "/health"))
    for clients, path in keys:
        row = []
        for label in labels:
            mine = [c for c in cells if (c.server, c.clients, c.path) == (label, clients, path)]
            rate = sum(c.requests for c in mine) / sum(c.seconds for c in mine)
            p50 = sorted(c.p50_ms for c in mine)[len(mine) // 2]
            cpu = sum(c.cpu_us * c.requests for c in mine) / max(1, sum(c.requests for c in mine))
            row.append(f"{rate:,.0f}/s ({p50:.2f} ms), {cpu:,.0f} µs CPU")
        lines.append(f"| {clients} | `{path}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per cell (default 10)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--server", type=parse_target, action="append", default=[],
                        metavar="LABEL=CHECKOUT[,NAME=VALUE...]",
                        help="compare source trees in one run (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the cells (default 1)")
    add_record_options(parser, DOC)
    args = parser.parse_args()
    if not 0 < args.seconds <= 120 or not all(0 < c <= 256 for c in args.clients):
        parser.error("--seconds must be in (0, 120] and --clients in 1..256")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be in 1..10")
    targets: list[Target] = args.server or [Target("this", ROOT, {})]
    if len({t.label for t in targets}) != len(targets):
        parser.error("--server labels must differ")
    if shutil.which("wrk") is None:
        print("wrk not found; install it (Debian/Ubuntu: sudo apt-get install wrk)",
              file=sys.stderr)
        return 2
    info = machine()
    started = dt.datetime.now(dt.timezone.utc)
    prefix = "b" + secrets.token_hex(4)
    cells: list[Cell] = []
    summaries: list[str] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="edge-provision-bench-") as tmp:
        servers: dict[str, LabServer] = {}
        answered: dict[str, int] = {}
        slack: dict[str, int] = {}
        try:
            for target in targets:
                state = Path(tmp) / f"state-{target.label}"
                servers[target.label] = LabServer(state, extra_env=target.env,
                                                  checkout=target.checkout)
            for label, server in servers.items():
                # warm-up (imports, first connections, SQLite caches), not counted
                run_wrk(server, label, "/health", 2, 1, prefix + "w")
                answered[label] = run_wrk(server, label, "/mapping", 2, 1, prefix + "w").requests
                slack[label] = 2
            for n in range(args.rounds):
                for clients in args.clients:
                    order = list(servers.items())
                    if n % 2:  # alternate who goes first
                        order.reverse()
                    for label, server in order:
                        cells.append(run_wrk(server, label, "/health", clients, args.seconds,
                                             prefix))
                        cell = run_wrk(server, label, "/mapping", clients, args.seconds,
                                       f"{prefix}r{n}c{clients}")
                        cells.append(cell)
                        answered[label] += cell.requests
                        slack[label] += clients
                        print(f"  {label} round {n + 1}, {clients:>3} clients: "
                              f"/health {cells[-2].rate:,.0f}/s  /mapping {cell.rate:,.0f}/s",
                              file=sys.stderr)
            api_total = {label: int(server.get("/things?limit=1")["total"])  # type: ignore[arg-type]
                         for label, server in servers.items()}
        finally:
            for server in servers.values():
                server.kill()
        for label, server in servers.items():
            on_disk = db_counts(server.state_dir / "lab.db")
            errors = sum(c.errors for c in cells if c.server == label)
            ok = (answered[label] <= api_total[label] <= answered[label] + slack[label]
                  and on_disk["things"] == api_total[label])
            failed = failed or bool(errors) or not ok
            summaries.append(
                (f"{label}: " if len(servers) > 1 else "")
                + f"mappings answered 201: {answered[label]}; things via API: "
                f"{api_total[label]}; rows in lab.db after SIGKILL: {on_disk['mappings']} "
                f"mappings, {on_disk['things']} things; errors: {errors}")
    labels = [t.label for t in targets]
    text = table(cells)
    if len(targets) > 1:
        text = (comparison(cells, labels) + "\n\nServers: " + "; ".join(
            f"{t.label} = `{t.checkout}`" + "".join(f" {k}={v}" for k, v in t.env.items())
            for t in targets) + ". Every cell:\n\n" + text)
    print(text)
    print("\n" + "\n".join(summaries))
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    if failed:
        print("FAILED: errors or lost/extra mappings (see above)", file=sys.stderr)
        return 1
    if args.record:
        command = f"bench/lab_mapping.py --seconds {args.seconds:g} --clients " + " ".join(
            map(str, args.clients))
        if args.server:
            command += f" --rounds {args.rounds} " + " ".join(
                f"--server {t.label}=…" for t in targets)
        block = [
            f"### Run {started:%Y-%m-%d %H:%M} UTC" + (f" — {args.note}" if args.note else ""),
            "",
            "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
            f"Command: `{command}`.",
            "",
            text,
            "",
            "\n".join(s + "." for s in summaries),
            "",
        ]
        append_run(DOC, RECORD_MARK, block)
        print(f"recorded in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
