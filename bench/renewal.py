#!/usr/bin/env python3
"""Renewal wall time and revoked-certificate-to-working time, against the lab on loopback.

Starts the real lab server as a subprocess with its real mosquitto (``serve --port 0
--mqtt --mqtt-port 0 --mqtt-tls-port 0 --mqtt-require-cert``: a password listener and a
TLS listener that requires client certificates and honours the lab's CRL), then:

1. renewal: one ``enroll`` per gateway, then ``--runs`` times ``python -m edge_provision
   --state-dir A renew --force --json`` (new key, CSR, new generation, MQTT check with
   ``EDGE_PROVISION_MQTT_VERIFY=always``, switch, prune, hand-off of the Agent's
   config.toml and env file), once for a gateway checking over ``tcp://`` (password) and
   once for one checking over ``ssl://`` (mTLS), once with no MQTT check at all; plus
   ``renew --json`` when not due (MQTT check only) and the ``enroll --help`` start-up
   baseline, so that the command's own share and the MQTT check's share can be read off;
2. revoked to working: an mTLS gateway's certificates are revoked through the operator API
   (``DELETE /certs/<thing_id>``), then ``renew --json`` runs back to back (at most
   ``--max-renews`` runs and ``--repair-timeout-s``) until it reports a new serial; the
   time from the DELETE to that answer and the number of runs are recorded, and a further
   ``renew --json`` (not timed) must verify the new certificate over mTLS. ``--repeats``
   times.

Bounded in count and time; 127.0.0.1 only.

    .venv/bin/python bench/renewal.py --runs 10 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _lab import LabServer, mosquitto_path

_EP = [sys.executable, "-m", "edge_provision"]
_RUN_TIMEOUT_S = 120


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str, str]:
    """(wall time, exit code, stdout, stderr) of one CLI run."""
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=_RUN_TIMEOUT_S,
                         check=False)
    return time.perf_counter() - started, out.returncode, out.stdout, out.stderr


def _ok(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    elapsed, code, stdout, stderr = _run(cmd, env)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[2:])} failed ({code}):\n{stdout}\n{stderr[-2000:]}")
    return elapsed, stdout


def _json(stdout: str) -> dict[str, object]:
    try:
        doc = json.loads(stdout)
    except ValueError:
        return {"ok": False, "reason": f"not JSON: {stdout[:200]!r}"}
    return doc if isinstance(doc, dict) else {"ok": False, "reason": "not an object"}


def _gateway_serial(state: Path, env: dict[str, str]) -> tuple[str, str]:
    """(gateway thing id, its certificate serial) from ``status --json``."""
    _, out = _ok([*_EP, "--state-dir", str(state), "status", "--json"], env)
    doc = _json(out)
    gateway = next(t["id"] for t in doc["things"] if t["gateway"])  # type: ignore[attr-defined]
    serial = next(c["serial"] for c in doc["certificates"]  # type: ignore[attr-defined]
                  if c["thing_id"] == gateway)
    return str(gateway), str(serial)


def _revoke(url: str, token: str, thing_id: str) -> list[str]:
    request = urllib.request.Request(f"{url}/certs/{thing_id}", method="DELETE",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        if reply.status != 200:
            raise SystemExit(f"DELETE /certs/{thing_id}: HTTP {reply.status}")
        return [str(s) for s in json.loads(reply.read())["revoked"]]


class Gateway:
    """One agent state directory with its environment."""

    def __init__(self, root: Path, name: str, base: dict[str, str], broker: str,
                 mtls: bool) -> None:  # fmt: skip
        self.state = root / f"agent-{name}"
        out = root / f"handoff-{name}"
        self.handoff = out / "agent" / "config.toml"
        self.env = dict(base, EDGE_PROVISION_EXTERNAL_ID=f"bench-renew-{os.getpid()}-{name}",
                        EDGE_PROVISION_MQTT_URL=broker,
                        EDGE_PROVISION_MQTT_MTLS="true" if mtls else "false",
                        EDGE_PROVISION_AGENT_CONFIG=str(out / "agent" / "config.toml"),
                        EDGE_PROVISION_AGENT_ENV=str(out / "agent.env"))  # fmt: skip

    def without_mqtt_check(self) -> Gateway:
        """The same state directory with ``EDGE_PROVISION_MQTT_VERIFY=never``."""
        other = Gateway.__new__(Gateway)
        other.state = self.state
        other.handoff = self.handoff
        other.env = dict(self.env, EDGE_PROVISION_MQTT_VERIFY="never")
        return other

    def cmd(self, *args: str) -> list[str]:
        return [*_EP, "--state-dir", str(self.state), *args]

    def enroll(self) -> float:
        return _ok(self.cmd("enroll"), self.env)[0]

    def renew(self, *flags: str) -> tuple[float, int, dict[str, object], str]:
        elapsed, code, stdout, stderr = _run(self.cmd("renew", *flags, "--json"), self.env)
        return elapsed, code, _json(stdout), stderr


def _forced(gw: Gateway, runs: int) -> list[float]:
    """``renew --force --json`` ``runs`` times; each must make a new generation and serial."""
    times: list[float] = []
    _, serial = _gateway_serial(gw.state, gw.env)
    generation = None
    for _ in range(runs):
        elapsed, code, doc, stderr = gw.renew("--force")
        if code != 0 or doc.get("renewed") is not True or doc.get("serial") == serial or (
                generation is not None and doc.get("generation") != generation + 1):
            raise SystemExit(f"renew --force ({gw.env['EDGE_PROVISION_MQTT_URL']}) did not "
                             f"renew ({code}): {doc}\n{stderr[-2000:]}")
        serial, generation = str(doc["serial"]), int(doc["generation"])  # type: ignore[call-overload]
        times.append(elapsed)
    if not gw.handoff.is_file():
        raise SystemExit(f"renew did not hand off {gw.handoff}")
    return times


def _checks(gw: Gateway, runs: int) -> list[float]:
    """``renew --json`` when not due: the current credentials checked over MQTT only."""
    times: list[float] = []
    for _ in range(runs):
        elapsed, code, doc, stderr = gw.renew()
        if code != 0 or doc.get("renewed") is not False or "verified" not in str(doc["reason"]):
            raise SystemExit(f"renew (not due) did not verify ({code}): {doc}\n{stderr[-2000:]}")
        times.append(elapsed)
    return times


def _repair(gw: Gateway, url: str, token: str, max_renews: int, timeout_s: float
            ) -> tuple[float, int, float, list[str]]:  # fmt: skip
    """Revoke, then ``renew`` until a new serial: (elapsed, runs, last run's time, notes)."""
    thing_id, old = _gateway_serial(gw.state, gw.env)
    notes: list[str] = []
    started = time.perf_counter()
    revoked = _revoke(url, token, thing_id)
    if old not in revoked:
        raise SystemExit(f"DELETE /certs/{thing_id} did not revoke {old}: {revoked}")
    elapsed = took = None
    run = 0
    while run < max_renews and time.perf_counter() - started < timeout_s:
        run += 1
        took, code, doc, stderr = gw.renew()
        if code == 0 and doc.get("ok") and doc.get("serial") not in (None, old):
            elapsed = time.perf_counter() - started
            if not doc.get("reprovisioned"):
                notes.append(f"renewed without reprovisioning: {doc.get('reason')}")
            break
        notes.append(f"run {run}: exit {code}, {str(doc.get('reason') or doc)[:120]}")
    if elapsed is None or took is None:
        raise SystemExit(f"not repaired within {max_renews} runs / {timeout_s} s: {notes}")
    _, code, doc, stderr = gw.renew()  # not timed: the new certificate works over mTLS
    if code != 0 or doc.get("serial") == old or "verified over MQTT" not in str(doc["reason"]):
        raise SystemExit(f"after the repair, MQTT over mTLS fails ({code}): {doc}\n{stderr}")
    return elapsed, run, took, notes


def _ms(values: list[float]) -> str:
    return (f"{min(values) * 1000:.0f} ms | {statistics.median(values) * 1000:.0f} ms | "
            f"{max(values) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each renewal row")
    parser.add_argument("--repeats", type=int, default=5, help="revoke-and-repair rounds")
    parser.add_argument("--max-renews", type=int, default=10,
                        help="renew runs allowed per round before it counts as failed")
    parser.add_argument("--repair-timeout-s", type=float, default=30.0,
                        help="time allowed per round before it counts as failed")
    args = parser.parse_args()
    if min(args.runs, args.repeats, args.max_renews) < 1:
        parser.error("--runs, --repeats and --max-renews must be at least 1")
    mosquitto = mosquitto_path("bench/renewal.py")
    with tempfile.TemporaryDirectory(prefix="ep-renew-") as tmp:
        root = Path(tmp)
        lab = LabServer(root / "lab", ("--mqtt", "--mqtt-port", "0", "--mqtt-tls-port", "0",
                                       "--mqtt-require-cert"),
                        {"EDGE_PROVISION_LAB_MOSQUITTO_BIN": mosquitto})
        url, brokers, token = lab.url, lab.brokers, lab.token
        if set(brokers) != {"tcp", "ssl"}:
            lab.stop()
            raise SystemExit(f"the lab server did not start both brokers:\n"
                             f"{lab.log.read_text()[-2000:]}")
        try:
            base = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_PROVISION_")}
            base.update({"CONFIGURATION_DIRECTORY": str(root / "etc"),
                         "EDGE_PROVISION_PROVISION_URL": url,
                         "EDGE_PROVISION_TOKEN_FILE": str(lab.token_path),
                         "EDGE_PROVISION_MQTT_VERIFY": "always",
                         "EDGE_PROVISION_MQTT_TIMEOUT": "5"})  # fmt: skip
            startup = [_ok([*_EP, "enroll", "--help"], base)[0] for _ in range(args.runs)]
            plain = Gateway(root, "plain", base, brokers["tcp"], mtls=False)
            mtls = Gateway(root, "mtls", base, brokers["ssl"], mtls=True)
            enrolls = [plain.enroll(), mtls.enroll()]
            forced = "`renew --force --json`, MQTT check over"
            check = "`renew --json` not due (MQTT check only) over"
            rows = {
                f"{forced} tcp:// (password)": _forced(plain, args.runs),
                f"{forced} ssl:// (mTLS)": _forced(mtls, args.runs),
                "`renew --force --json` without MQTT check (`MQTT_VERIFY=never`)":
                    _forced(plain.without_mqtt_check(), args.runs),
                f"{check} tcp://": _checks(plain, args.runs),
                f"{check} ssl:// (mTLS)": _checks(mtls, args.runs),
            }
            victim = Gateway(root, "revoked", base, brokers["ssl"], mtls=True)
            victim.enroll()
            repairs = [_repair(victim, url, token, args.max_renews, args.repair_timeout_s)
                       for _ in range(args.repeats)]
        finally:
            lab.stop()
    print(f"lab server {url}; brokers {brokers['tcp']} (password), {brokers['ssl']} "
          "(TLS, client certificate required, lab CRL)")
    print(f"enroll (one each, for the setup): {', '.join(f'{t * 1000:.0f} ms' for t in enrolls)}")
    print()
    print("| what | runs | min | median | max |")
    print("|---|---:|---:|---:|---:|")
    print(f"| interpreter + CLI start-up (`enroll --help`) | {len(startup)} | {_ms(startup)} |")
    for name, values in rows.items():
        print(f"| {name} | {len(values)} | {_ms(values)} |")
    base_s = statistics.median(startup)
    print()
    for name, values in rows.items():
        print(f"- median minus median start-up, {name}: "
              f"{(statistics.median(values) - base_s) * 1000:.0f} ms")
    elapsed = [r[0] for r in repairs]
    counts = [r[1] for r in repairs]
    last = [r[2] for r in repairs]
    print()
    print("| revoked → working (mTLS) | rounds | min | median | max |")
    print("|---|---:|---:|---:|---:|")
    print(f"| `DELETE /certs/<thing_id>` → `renew` reports a new serial | {len(elapsed)} | "
          f"{_ms(elapsed)} |")
    print(f"| the successful `renew` run alone | {len(last)} | {_ms(last)} |")
    print(f"| `renew` runs needed | {len(counts)} | {min(counts)} | "
          f"{statistics.median(counts):g} | {max(counts)} |")
    notes = [n for r in repairs for n in r[3]]
    if notes:
        print()
        print("runs that did not repair yet:")
        for note in notes:
            print(f"- {note}")


if __name__ == "__main__":
    main()
