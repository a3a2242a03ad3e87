"""``edge-provision simulate``: a fleet of simulated gateways through one provisioning server.

Parses the options, runs :mod:`edge_provision.fleet` (run, then audit) and renders the
progress, the table, ``--json`` and ``--report``. Only click and the standard library at
module level, like every command module.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from edge_provision.cli._common import CliContext, emit_json, json_option

__all__ = ["EXIT_AUDIT_FAILED", "EXIT_GATEWAYS_FAILED", "ProgressPrinter", "register", "simulate"]

EXIT_GATEWAYS_FAILED = 3
EXIT_AUDIT_FAILED = 4
_BAR_WIDTH = 30


class ProgressPrinter:
    """A bar redrawn in place on a terminal; elsewhere one line per 10 % (on stderr)."""

    def __init__(self, tty: bool) -> None:
        self._tty = tty
        self._next_tenth = 1

    def __call__(self, p: Any) -> None:
        rate = p.enrolled / p.elapsed_s if p.elapsed_s > 0 else 0.0
        tail = (f"{p.done}/{p.total}  {rate:.0f} gw/s  in flight {p.in_flight}  "
                f"retries {p.retries}  failed {p.failed}")  # fmt: skip
        if self._tty:
            filled = int(_BAR_WIDTH * p.done / p.total) if p.total else _BAR_WIDTH
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            click.echo(f"\r[{bar}] {tail}", nl=False, err=True)
            if p.done == p.total:
                click.echo("", err=True)
            return
        while p.total and p.done * 10 >= self._next_tenth * p.total and self._next_tenth <= 10:
            click.echo(f"{self._next_tenth * 10:3d}% {tail}  {p.elapsed_s:.1f} s", err=True)
            self._next_tenth += 1


def _fmt_ms(value: object) -> str:
    return "-" if value is None else f"{value:.2f}"


def _render(doc: dict[str, Any]) -> None:
    fleet, run, audit = doc["fleet"], doc["run"], doc["audit"]
    csr = "on" if fleet["csr"] else "off"
    click.echo(f"fleet {fleet['run_name']} ({fleet['gateways']} gateways, MACs "
               f"{fleet['mac_prefix']}:xx:xx, concurrency {fleet['concurrency']}, ramp "
               f"{fleet['ramp_s']:g} s, CSR {csr}, time scale {fleet['time_scale']:g}) "
               f"-> {fleet['provision_url']}")  # fmt: skip
    click.echo(f"enrolled {run['enrolled']}/{run['gateways']} in {run['elapsed_s']:.2f} s: "
               f"{run['gateways_per_s']:.1f} gateways/s; attempts {run['attempts']}, "
               f"retries {run['retries']}, new mappings {run['mappings_created']}")  # fmt: skip
    click.echo(f"{'step':<12}{'count':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}"
               f"{'max ms':>10}")  # fmt: skip
    for name, s in run["steps"].items():
        click.echo(f"{name:<12}{s['count']:>8}{_fmt_ms(s['p50_ms']):>10}"
                   f"{_fmt_ms(s['p95_ms']):>10}{_fmt_ms(s['p99_ms']):>10}"
                   f"{_fmt_ms(s['max_ms']):>10}")  # fmt: skip
    errors = ", ".join(f"{k} {v}" for k, v in run["attempt_errors"].items()) or "none"
    click.echo(f"failed attempts by class: {errors}")
    failures = ", ".join(f"{k} {v}" for k, v in run["failures"].items()) or "none"
    click.echo(f"gateways that gave up: {failures}")
    click.echo(f"simulator CPU: {run['simulator_cpu_s']:.2f} s "
               f"({run['simulator_cpu_per_gateway_ms']:.2f} ms per gateway)")  # fmt: skip
    if audit["ok"]:
        click.echo(f"audit: ok: {audit['configs']} bootstrap configs, {audit['things']} things,"
                   f" {audit['channels']} channels, one thing-set per gateway, nothing "
                   f"shared; {audit['fetched']} configs fetched with their keys")  # fmt: skip
    else:
        found = ", ".join(f"{k} {v}" for k, v in audit["findings"].items())
        click.echo(f"audit: FAILED: {found} ({audit['duplicates']} gateway(s) duplicated)")
        for problem in audit["problems"][:20]:
            click.echo(f"  {problem}")
        more = sum(audit["findings"].values()) - min(20, len(audit["problems"]))
        if more > 0:
            click.echo(f"  ... and {more} more (see --json)")


@click.command()
@click.option("--gateways", "count", type=click.IntRange(1, 65_536), default=100,
              show_default=True, help="number of simulated gateways")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="gateways talking to the server at the same moment (worker threads)")
@click.option("--ramp", "ramp_s", type=click.FloatRange(0, 86_400), default=0.0,
              show_default=True, help="power the gateways on evenly over SECONDS (0: all at "
              "once)")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None,
              help="replay a run: the same MACs, keys and jitter (default: random)")
@click.option("--provision-url", default=None,
              help="Provision service base URL [env EDGE_PROVISION_PROVISION_URL]")
@click.option("--bootstrap-url", default=None,
              help="Bootstrap service base URL [env EDGE_PROVISION_BOOTSTRAP_URL; default: "
                   "the provision URL]")
@click.option("--certs-url", default=None,
              help="certificate service base URL [env EDGE_PROVISION_CERTS_URL; default: the "
                   "provision URL]")
@click.option("--things-url", default=None,
              help="Things service base URL for the audit's listings [default: the provision "
                   "URL]")
@click.option("--token", default=None,
              help="user token or API key for /mapping and the audit [env "
                   "EDGE_PROVISION_TOKEN]")
@click.option("--no-csr", is_flag=True, help="skip the CSR step")
@click.option("--secure", is_flag=True, default=None,
              help="use the encrypted bootstrap endpoint [key: env MF_BOOTSTRAP_ENCRYPT_KEY]")
@click.option("--mqtt-url", default=None,
              help="also connect with the new credentials to this broker (tcp:// or ssl://)")
@click.option("--time-scale", type=click.FloatRange(0, 1000), default=1.0, show_default=True,
              help="multiply every backoff delay by this (0.01: the 300 s cap becomes 3 s)")
@click.option("--max-attempts", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="attempts per gateway before it gives up")
@click.option("--insecure", is_flag=True, default=None,
              help="do NOT verify TLS certificates (lab only) [env EDGE_PROVISION_INSECURE]")
@click.option("--ca-bundle", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="CA certificates for the servers' TLS [env EDGE_PROVISION_CA_BUNDLE]")
@click.option("--report", "report_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="write a self-contained HTML page (charts, no scripts)")
@json_option
@click.pass_obj
def simulate(obj: CliContext, count: int, concurrency: int, ramp_s: float, seed: int | None,
             provision_url: str | None, bootstrap_url: str | None, certs_url: str | None,
             things_url: str | None, token: str | None, no_csr: bool, secure: bool | None,
             mqtt_url: str | None, time_scale: float, max_attempts: int,
             insecure: bool | None, ca_bundle: Path | None, report_file: Path | None,
             as_json: bool) -> None:  # fmt: skip
    """Enroll a fleet of simulated gateways through one provisioning server, then audit it.

    Each gateway (an id derived like a real MAC: 02:<run prefix>:<index>, its own random
    external key) runs the agent's enrollment with the agent's own clients: bootstrap
    lookup, POST /mapping, bootstrap fetch, a CSR for a key made here, optionally an MQTT
    connect. Transient failures are retried with the daemon's backoff (capped full
    jitter; --time-scale shrinks it), so the run shows how a fleet recovers. Afterwards
    the audit reads GET /things, /channels and /things/configs with the token: exactly
    one thing-set per gateway, nothing shared, every config fetchable with its key.
    Server URLs, token and TLS settings are read as for `enroll`.

    \b
    Exit codes:
      0   every gateway enrolled and the audit found nothing
      2   bad option or setting
      3   some gateways did not enroll (the audit found nothing else)
      4   the audit found duplicates, shared, missing or unfetchable entities
          (or could not read the listings)
      75  the server could not be reached before the run

    \b
    Example:
      edge-provision simulate --provision-url http://127.0.0.1:8190 --token "$TOKEN" \\
          --gateways 1000 --concurrency 16 --report herd.html
    """
    from edge_provision.errors import ConfigError

    settings = obj.agent_settings(
        provision_url=provision_url, bootstrap_url=bootstrap_url, certs_url=certs_url,
        token=token, insecure=insecure, ca_bundle=ca_bundle, secure_bootstrap=secure,
        mqtt_url=mqtt_url,
    )  # fmt: skip
    if not settings.provision_url:
        raise ConfigError("no provision URL: pass --provision-url or set "
                          "EDGE_PROVISION_PROVISION_URL (e.g. http://127.0.0.1:8190)")
    if not settings.token:
        raise ConfigError("the audit needs the operator token: pass --token or set "
                          "EDGE_PROVISION_TOKEN (the lab server keeps it in "
                          "<state dir>/api-token)")
    doc = _run(settings, count=count, concurrency=concurrency, ramp_s=ramp_s, seed=seed,
               things_url=things_url, csr=not no_csr, time_scale=time_scale,
               max_attempts=max_attempts)
    if report_file is not None:
        from edge_provision import fileio
        from edge_provision.fleet.report import render_report

        fileio.atomic_write(report_file, render_report(doc), mode=0o644)
    if as_json:
        emit_json(doc)
    else:
        _render(doc)
        if report_file is not None:
            click.echo(f"report: {report_file}")
    if doc["exit_code"]:
        sys.exit(doc["exit_code"])


def _run(settings: Any, *, count: int, concurrency: int, ramp_s: float, seed: int | None,
         things_url: str | None, csr: bool, time_scale: float,
         max_attempts: int) -> dict[str, Any]:  # fmt: skip
    """Build the fleet from the settings, run it, audit it; the ``--json`` document."""
    import random
    import secrets

    from edge_provision.agent.backoff import Backoff
    from edge_provision.crypto import bootstrap_cipher
    from edge_provision.fleet.arrival import arrival_offsets
    from edge_provision.fleet.audit import audit_run
    from edge_provision.fleet.clients import ClientPool, FleetTarget
    from edge_provision.fleet.gateways import RunPrefix, make_gateways
    from edge_provision.fleet.journey import EnrollmentPlan, MqttCheck
    from edge_provision.fleet.retry import RetryPolicy
    from edge_provision.fleet.runner import run_fleet
    from edge_provision.fleet.stats import summarize
    from edge_provision.http import AuthScheme
    from edge_provision.logs import register_secret

    provision = settings.provision_url.rstrip("/")
    rng = random.Random(seed) if seed is not None else None
    prefix = RunPrefix.draw(rng)
    gateways = make_gateways(count, prefix, rng)
    for gateway in gateways:
        register_secret(gateway.external_key)
    target = FleetTarget(
        provision_url=provision,
        bootstrap_url=(settings.bootstrap_url or provision).rstrip("/"),
        certs_url=(settings.certs_url or provision).rstrip("/"),
        things_url=(things_url or provision).rstrip("/"),
        token=settings.token, auth_scheme=AuthScheme(settings.auth_scheme),
        connect_timeout_s=settings.connect_timeout_s, read_timeout_s=settings.read_timeout_s,
        ca_bundle=settings.ca_bundle, insecure=settings.insecure,
        encrypt_key=bootstrap_cipher.parse_encrypt_key(settings.encrypt_key)
        if settings.secure_bootstrap else None,
    )  # fmt: skip
    mqtt = MqttCheck(settings.mqtt_url, settings.mqtt_timeout_s, settings.mqtt_ca,
                     settings.insecure) if settings.mqtt_url else None  # fmt: skip
    retry = RetryPolicy(Backoff(settings.backoff_initial_s, settings.backoff_cap_s),
                        time_scale, max_attempts)  # fmt: skip
    pool = ClientPool(target)
    note = ""
    try:
        signs_csr = pool.get().certs.supports_csr()  # also: is the server there at all?
        if csr and not signs_csr:
            csr, note = False, "the server does not sign CSRs (GET /health has no csr: true)"
            click.echo(f"warning: {note}; the csr step is skipped", err=True)
        plan = EnrollmentPlan(csr=csr, secure=settings.secure_bootstrap,
                              key_type=settings.key_type, key_bits=settings.key_bits,
                              mqtt=mqtt)  # fmt: skip
        printer = ProgressPrinter(sys.stderr.isatty())
        run = run_fleet(gateways, arrival_offsets(count, ramp_s), pool, plan, retry,
                        concurrency=concurrency,
                        seed=seed if seed is not None else secrets.randbits(32),
                        progress=printer)  # fmt: skip
        click.echo(f"audit: reading the operator listings of {target.things_url} and "
                   f"fetching the bootstrap configs", err=True)  # fmt: skip
        cpu0 = time.process_time()
        audit = audit_run(pool, gateways, run.results, prefix, secure=plan.secure,
                          concurrency=concurrency)  # fmt: skip
        audit_cpu = time.process_time() - cpu0
    finally:
        pool.close()
    summary = summarize(run, plan)
    exit_code = 0
    if summary.failed:
        exit_code = EXIT_GATEWAYS_FAILED
    if not audit.ok:
        exit_code = EXIT_AUDIT_FAILED
    audit_doc = audit.to_dict()
    audit_doc["simulator_cpu_s"] = round(audit_cpu, 3)
    return {
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "fleet": {
            "run_name": prefix.name,
            "mac_prefix": ":".join(prefix.mac_head[i:i + 2] for i in range(0, 8, 2)),
            "seed": seed,
            "gateways": count,
            "concurrency": concurrency,
            "ramp_s": ramp_s,
            "time_scale": time_scale,
            "max_attempts": max_attempts,
            "backoff_initial_s": settings.backoff_initial_s,
            "backoff_cap_s": settings.backoff_cap_s,
            "csr": plan.csr,
            "csr_note": note or None,
            "secure": plan.secure,
            "mqtt_url": settings.mqtt_url,
            "provision_url": target.provision_url,
            "bootstrap_url": target.bootstrap_url,
            "certs_url": target.certs_url,
            "things_url": target.things_url,
        },
        "run": summary.to_dict(),
        "audit": audit_doc,
    }


def register(group: click.Group) -> None:
    """Add ``simulate`` to the CLI."""
    group.add_command(simulate)
