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
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _lab import LabServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "mapping.lua"
DOC = ROOT / "docs" / "benchmarks.md"
RECORD_MARK = "<!-- lab_mapping.py appends runs below this line -->"


@dataclass(frozen=True)
class Cell:
    """One wrk run."""

    path: str
    clients: int
    threads: int
    seconds: float
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx answers + socket errors


def machine() -> dict[str, str]:
    """nproc, CPU model, kernel, Python version, implementation details that matter."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "http": f"uvicorn auto -> {parser} + {loop}",
        "wrk": (wrk.stdout or wrk.stderr).split("[")[0].strip(),
    }


def run_wrk(server: LabServer, path: str, clients: int, seconds: float, prefix: str) -> Cell:
    threads = min(2, clients)
    mode = "mapping" if path == "/mapping" else "health"
    cmd = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--latency",
           "--timeout", "10s", "-s", str(LUA), server.url + path, "--", mode,
           server.token, prefix]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         timeout=seconds + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("RESULT "):])
    errors = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors",
                                "status_errors", "timeouts"))
    return Cell(path, clients, threads, r["duration_us"] / 1e6, r["requests"],
                r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1000,
                r["p99_us"] / 1000, errors)


def db_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("mappings", "things", "bootstrap_configs")}
    finally:
        conn.close()


def table(cells: list[Cell]) -> str:
    health = {c.clients: c for c in cells if c.path == "/health"}
    lines = ["| clients | endpoint | requests | req/s | p50 ms | p99 ms | errors | "
             "/mapping ÷ /health |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        ratio = ""
        if c.path == "/mapping" and c.clients in health:
            ratio = f"{c.rate / health[c.clients].rate:.0%}"
        lines.append(f"| {c.clients} | `{c.path}` | {c.requests} | {c.rate:,.0f} | "
                     f"{c.p50_ms:.2f} | {c.p99_ms:.2f} | {c.errors} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per cell (default 10)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--record", action="store_true", help=f"append to {DOC}")
    parser.add_argument("--note", default="", help="one line recorded with --record")
    args = parser.parse_args()
    if not 0 < args.seconds <= 120 or not all(0 < c <= 256 for c in args.clients):
        parser.error("--seconds must be in (0, 120] and --clients in 1..256")
    if shutil.which("wrk") is None:
        print("wrk not found; install it (Debian/Ubuntu: sudo apt-get install wrk)",
              file=sys.stderr)
        return 2
    info = machine()
    started = dt.datetime.now(dt.timezone.utc)
    prefix = "b" + secrets.token_hex(4)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="edge-provision-bench-") as tmp:
        state = Path(tmp) / "state"
        server = LabServer(state)
        try:
            # warm-up (imports, first connections, SQLite caches), not counted
            run_wrk(server, "/health", 2, 1, prefix + "w")
            warm = run_wrk(server, "/mapping", 2, 1, prefix + "w")
            answered = warm.requests
            slack = 2
            for clients in args.clients:
                cells.append(run_wrk(server, "/health", clients, args.seconds, prefix))
                cell = run_wrk(server, "/mapping", clients, args.seconds,
                               f"{prefix}c{clients}")
                cells.append(cell)
                answered += cell.requests
                slack += clients
                print(f"  {clients:>3} clients: /health {cells[-2].rate:,.0f}/s  "
                      f"/mapping {cell.rate:,.0f}/s", file=sys.stderr)
            api_total = int(server.get("/things?limit=1")["total"])  # type: ignore[arg-type]
        finally:
            server.kill()
        on_disk = db_counts(state / "lab.db")
    print(table(cells))
    errors = sum(c.errors for c in cells)
    durable_ok = answered <= api_total <= answered + slack and on_disk["things"] == api_total
    summary = (f"mappings answered 201: {answered}; things via API: {api_total}; "
               f"rows in lab.db after SIGKILL: {on_disk['mappings']} mappings, "
               f"{on_disk['things']} things; errors: {errors}")
    print("\n" + summary)
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    if errors or not durable_ok:
        print("FAILED: errors or lost/extra mappings (see above)", file=sys.stderr)
        return 1
    if args.record:
        block = [
            f"### Run {started:%Y-%m-%d %H:%M} UTC" + (f" — {args.note}" if args.note else ""),
            "",
            "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
            f"Command: `bench/lab_mapping.py --seconds {args.seconds:g} --clients "
            f"{' '.join(map(str, args.clients))}`.",
            "",
            table(cells),
            "",
            summary + ".",
            "",
        ]
        text = DOC.read_text() if DOC.exists() else ""
        if RECORD_MARK not in text:
            raise SystemExit(f"{DOC}: marker {RECORD_MARK!r} missing; add it where runs go")
        DOC.write_text(text.replace(RECORD_MARK, RECORD_MARK + "\n\n" + "\n".join(block), 1))
        print(f"recorded in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
