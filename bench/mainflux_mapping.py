#!/usr/bin/env python3
"""Benchmark ``serve --backend mainflux``: mappings/s and outbound calls per mapping.

Starts the real lab server as a subprocess (``python -m edge_provision serve
--backend mainflux --port 0``) in front of a Mainflux platform: by default the fake
one from ``edge_provision.testing.mainflux`` (both auth generations, in this
process, on 127.0.0.1), or any real Mainflux given by URL::

    .venv/bin/python bench/mainflux_mapping.py                     # the fake, 0.12 and 0.13
    MF_PROVISION_API_KEY=... .venv/bin/python bench/mainflux_mapping.py \\
        --things-url http://things:8182 --bs-svc-url http://bootstrap:8202/things
    MF_PROVISION_USER=... MF_PROVISION_PASS=... .venv/bin/python bench/mainflux_mapping.py \\
        --things-url ... --bs-svc-url ... --users-url http://users:8180
    .venv/bin/python bench/mainflux_mapping.py --record --note "what changed"

For each number of concurrent clients (default 1, 4 and 16) it posts up to
``--mappings`` new mappings (each with its own external_id, built-in layout: 1 thing,
2 channels, a whitelisted bootstrap config), at most ``--seconds`` long, then the
same ones again (repeats). The outbound calls are read from the lab's own counter
(``edge_provision_lab_upstream_requests_total`` on ``/metrics``; the scrape's own
three counting calls are taken off) and, against the fake, checked against what
the platform received. The lab server's CPU per mapping comes from /proc.
Credentials come from the environment (upstream's ``MF_PROVISION_*`` names), never
from the command line. Against a real platform the mappings stay there: their
things carry ``edge_provision_mapping=<run prefix>-...`` metadata, to find them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from _lab import LabServer, add_record_options, append_run, machine_basics

from edge_provision.testing.mainflux import FakeMainflux

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
RECORD_MARK = "<!-- mainflux_mapping.py appends runs below this line -->"
UPSTREAM = re.compile(r"^edge_provision_lab_upstream_requests_total\{.*\} (\S+)$", re.M)
SCRAPE_CALLS = 3  # /metrics counts things, channels and configs on the platform
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Cell:
    """One measured batch: new mappings or repeats, with ``clients`` at once."""

    platform: str
    kind: str
    clients: int
    answered: int
    errors: int
    seconds: float
    calls: float
    platform_calls: int | None
    cpu_s: float

    @property
    def rate(self) -> float:
        """Mappings answered per second."""
        return self.answered / self.seconds if self.seconds else 0.0


def upstream_total(lab: LabServer) -> float:
    """The lab's outbound calls so far (including this scrape's own)."""
    text = requests.get(f"{lab.url}/metrics", timeout=TIMEOUT_S).text
    return sum(float(v) for v in UPSTREAM.findall(text))


def post_all(lab: LabServer, ids: list[str], clients: int, seconds: float
             ) -> tuple[list[str], int, float]:
    """POST /mapping for ``ids`` from ``clients`` threads, within ``seconds``.

    Returns the ids answered 201, the number of other answers, the wall time.
    """
    lock = threading.Lock()
    todo = iter(ids)
    done: list[str] = []
    errors = [0]
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {lab.token}"}

    def worker() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    external_id = next(todo, None)
                if external_id is None:
                    return
                resp = session.post(f"{lab.url}/mapping", headers=headers, timeout=TIMEOUT_S,
                                    json={"external_id": external_id,
                                          "external_key": "bench-key"})
                with lock:
                    if resp.status_code == 201:
                        done.append(external_id)
                    else:
                        errors[0] += 1
                        if errors[0] == 1:
                            print(f"  first error: {resp.status_code} {resp.text[:200]}",
                                  file=sys.stderr)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + TIMEOUT_S)
    return done, errors[0], time.monotonic() - started


def measure(lab: LabServer, fake: FakeMainflux | None, platform: str, kind: str,
            ids: list[str], clients: int, seconds: float) -> tuple[Cell, list[str]]:
    """One cell: the mappings of ``ids`` with ``clients`` at once; the ids answered 201."""
    before = upstream_total(lab)
    fake_before = fake.calls() if fake is not None else 0
    cpu = lab.cpu_seconds()
    done, errors, wall = post_all(lab, ids, clients, seconds)
    cpu = lab.cpu_seconds() - cpu
    calls = upstream_total(lab) - before - SCRAPE_CALLS
    received = (fake.calls() - fake_before - SCRAPE_CALLS) if fake is not None else None
    cell = Cell(platform, kind, clients, len(done), errors, wall, calls, received, cpu)
    print(f"  {platform} {kind:>6} {clients:>3} clients: {cell.rate:,.1f}/s, "
          f"{calls / max(1, len(done)):.2f} calls each", file=sys.stderr)
    return cell, done


def run_platform(platform: str, env: dict[str, str], fake: FakeMainflux | None,
                 args: argparse.Namespace, tmp: Path, prefix: str) -> list[Cell]:
    """Start a lab in front of one platform and measure every concurrency."""
    lab = LabServer(tmp / f"state-{platform}", extra_args=["--backend", "mainflux"],
                    extra_env=env)
    cells: list[Cell] = []
    try:
        warm = [f"{prefix}-warm-{n}" for n in range(4)]
        post_all(lab, warm, 2, TIMEOUT_S)  # login, header form, connections: not counted
        post_all(lab, warm, 2, TIMEOUT_S)
        for clients in args.clients:
            ids = [f"{prefix}-c{clients}-{n}" for n in range(args.mappings)]
            new, made = measure(lab, fake, platform, "new", ids, clients, args.seconds)
            again, _ = measure(lab, fake, platform, "repeat", made, clients, args.seconds)
            cells += [new, again]
        if fake is not None:  # what is on the platform: exactly one thing per answered mapping
            ours = [t for t in fake.things()
                    if str(t["metadata"].get("edge_provision_mapping", ""))  # type: ignore[attr-defined]
                    .startswith(f"{prefix}-c")]
            answered = sum(c.answered for c in cells if c.kind == "new")
            if len(ours) != answered:
                raise SystemExit(f"{platform}: {answered} mappings answered but {len(ours)} "
                                 "things on the platform")
    finally:
        lab.stop()
    return cells


def table(cells: list[Cell]) -> str:
    """One row per cell."""
    lines = ["| platform | clients | mappings | answered | errors | mappings/s | calls per "
             "mapping (lab counter) | received by the platform | lab CPU ms/mapping |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        each = max(1, c.answered)
        received = f"{c.platform_calls / each:.2f}" if c.platform_calls is not None else "n/a"
        lines.append(f"| {c.platform} | {c.clients} | {c.kind} | {c.answered} | {c.errors} | "
                     f"{c.rate:,.1f} | {c.calls / each:.2f} | {received} | "
                     f"{c.cpu_s / each * 1000:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--things-url", help="a real Mainflux: its Things service")
    parser.add_argument("--bs-svc-url", help="a real Mainflux: its Bootstrap service")
    parser.add_argument("--users-url", help="a real Mainflux: its Users service (for a login)")
    parser.add_argument("--generation", nargs="+", choices=["0.12", "0.13"],
                        default=["0.12", "0.13"], help="the fake's generations (default both)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--mappings", type=int, default=200, help="per cell (default 200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="at most, per cell")
    add_record_options(parser, DOC)
    args = parser.parse_args()
    if not 0 < args.seconds <= 300 or not all(0 < c <= 64 for c in args.clients):
        parser.error("--seconds must be in (0, 300] and --clients in 1..64")
    if not 1 <= args.mappings <= 10_000:
        parser.error("--mappings must be in 1..10000")
    if bool(args.things_url) != bool(args.bs_svc_url):
        parser.error("a real Mainflux needs both --things-url and --bs-svc-url")
    prefix = "mfb" + secrets.token_hex(3)
    started = dt.datetime.now(dt.timezone.utc)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="edge-provision-bench-") as tmp:
        if args.things_url:
            env = {"MF_PROVISION_THINGS_LOCATION": args.things_url,
                   "MF_PROVISION_BS_SVC_URL": args.bs_svc_url}
            if args.users_url:
                env["MF_PROVISION_USERS_LOCATION"] = args.users_url
            for name in ("MF_PROVISION_API_KEY", "MF_PROVISION_USER", "MF_PROVISION_PASS"):
                if os.environ.get(name):
                    env[name] = os.environ[name]
            cells += run_platform(args.things_url, env, None, args, Path(tmp), prefix)
        else:
            for generation in args.generation:
                with FakeMainflux(generation=generation) as fake:
                    env = {"MF_PROVISION_THINGS_LOCATION": fake.things_url,
                           "MF_PROVISION_BS_SVC_URL": fake.bootstrap_url + "/things",
                           "MF_PROVISION_API_KEY": fake.api_key()}
                    cells += run_platform(f"fake {generation}", env, fake, args, Path(tmp),
                                          prefix)
    info = machine_basics()
    text = table(cells)
    print(text)
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    if any(c.errors for c in cells):
        print("FAILED: some mappings were not answered 201 (see above)", file=sys.stderr)
        return 1
    if args.record:
        where = "a real Mainflux" if args.things_url else "the fake Mainflux (in the bench process)"
        command = (f"bench/mainflux_mapping.py --mappings {args.mappings} --seconds "
                   f"{args.seconds:g} --clients " + " ".join(map(str, args.clients)))
        append_run(DOC, RECORD_MARK, [
            f"### Run {started:%Y-%m-%d %H:%M} UTC against {where}"
            + (f" — {args.note}" if args.note else ""),
            "",
            "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
            f"Command: `{command}`.",
            "",
            text,
            "",
        ])
        print(f"recorded in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
