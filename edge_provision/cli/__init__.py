"""Command-line interface: parse, call one use case, render. Nothing imports this module.

Errors are mapped to exit codes in one place, :func:`main` (see ``errors.py`` for
the table). With ``--json`` a command prints exactly one JSON document on stdout,
also on failure: ``{"ok": false, "error": {"kind", "message", "problems"}}``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from edge_provision import __version__, fileio
from edge_provision.cli import agent as _agent_commands
from edge_provision.cli import renew as _renew_commands
from edge_provision.cli import run as _run_commands
from edge_provision.cli import simulate as _simulate_commands
from edge_provision.cli._common import CliContext, emit_json, error_doc, json_option
from edge_provision.errors import (
    EXIT_CONFIG,
    ConfigError,
    EdgeProvisionError,
)
from edge_provision.logs import register_secret, setup_logging
from edge_provision.settings import LabSettings, load_lab_settings

__all__ = ["cli", "main"]

logger = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="edge-provision")
@click.option(
    "--config", type=click.Path(path_type=Path, dir_okay=False),
    help="agent config file [env EDGE_PROVISION_CONFIG; default /etc/edge-provision/config.toml]",
)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              help="state directory [env EDGE_PROVISION_STATE_DIR]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="log verbosity [env EDGE_PROVISION_LOG_LEVEL; default info]")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, state_dir: Path | None,
        log_level: str | None) -> None:
    """Provision this gateway on a Mainflux-style IoT platform, or run a lab server.

    \b
    Examples:
      edge-provision layout check /etc/mainflux/provision/config.toml
      edge-provision identity
      edge-provision serve                       # lab server on 127.0.0.1:8190
    """
    ctx.obj = CliContext(config=config, flags={"state_dir": state_dir, "log_level": log_level})
    setup_logging(log_level or "warning")


# --------------------------------------------------------------------------- layout


@cli.group()
def layout() -> None:
    """Check a provision layout (a Mainflux provision config.toml) and preview its plan."""


def _load_layout_file(path: Path) -> Any:
    from edge_provision import layout as layout_mod

    try:
        text = fileio.read_text(path, "layout file")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return layout_mod.load_layout(text, source=str(path))


@layout.command("check")
@click.argument("file", type=click.Path(path_type=Path))
@json_option
@click.pass_obj
def layout_check(obj: CliContext, file: Path, as_json: bool) -> None:
    """Validate FILE and list every problem at once (exit 2 if any).

    \b
    Example:
      edge-provision layout check configs/provision-layout.toml
    """
    parsed = _load_layout_file(file)
    summary = _layout_summary(parsed)
    if as_json:
        emit_json({"ok": True, "file": str(file), **summary})
        return
    click.echo(f"ok: {file}: {summary['description']}")
    for warning in summary["warnings"]:
        click.echo(f"warning: {warning}")


def _layout_summary(parsed: Any) -> dict[str, Any]:
    things = [{"name": t.name, "gateway": t.is_gateway} for t in parsed.things]
    channels = [{"name": c.name, "type": c.type} for c in parsed.channels]
    types = ", ".join(c["type"] or "untyped" for c in channels)
    onoff = {True: "on", False: "off"}
    boot = parsed.bootstrap
    description = (
        f"{len(things)} thing{'s' if len(things) != 1 else ''}, {len(channels)} "
        f"channel{'s' if len(channels) != 1 else ''} ({types}); bootstrap config "
        f"{onoff[boot.provision]}, auto-whitelist {onoff[boot.autowhite_list]}, "
        f"X.509 {onoff[boot.x509_provision]}"
    )
    return {
        "description": description,
        "things": things,
        "channels": channels,
        "bootstrap": {
            "provision": boot.provision,
            "autowhite_list": boot.autowhite_list,
            "x509_provision": boot.x509_provision,
            "has_content": boot.content is not None,
        },
        "warnings": [str(w) for w in parsed.warnings],
    }


@layout.command("plan")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--external-id", required=True, help="the gateway's external_id, e.g. its MAC")
@click.option("--external-key", default=None, help="the bootstrap key (shown redacted)")
@click.option("--name", default=None, help="thing name override, as /mapping's `name`")
@json_option
@click.pass_obj
def layout_plan(obj: CliContext, file: Path, external_id: str, external_key: str | None,
                name: str | None, as_json: bool) -> None:
    """Show what /mapping would create for one gateway with layout FILE.

    \b
    Example:
      edge-provision layout plan config.toml --external-id 02:42:ac:11:00:07 --json
    """
    from edge_provision import layout as layout_mod

    parsed = _load_layout_file(file)
    the_plan = layout_mod.plan(parsed, external_id, external_key or "<external_key>", name)
    doc = the_plan.to_dict(show_key=False)
    if as_json:
        emit_json({"ok": True, "file": str(file), "plan": doc})
        return
    click.echo(f"plan for external_id {external_id} from {file}:")
    for thing in the_plan.things:
        role = " (gateway, gets the bootstrap config)" if (
            the_plan.bootstrap and the_plan.bootstrap.thing_index == thing.index) else ""
        click.echo(f"  thing   {thing.name}{role}  metadata={json.dumps(thing.metadata)}")
    for channel in the_plan.channels:
        click.echo(f"  channel {channel.name}  type={channel.type or '-'}")
    names_t = {t.index: t.name for t in the_plan.things}
    names_c = {c.index: c.name for c in the_plan.channels}
    if the_plan.connections:
        by_thing: dict[int, list[str]] = {}
        for conn in the_plan.connections:
            by_thing.setdefault(conn.thing_index, []).append(names_c[conn.channel_index])
        for thing_index, channel_names in by_thing.items():
            click.echo(f"  connect {names_t[thing_index]} -> {', '.join(channel_names)}")
    else:
        click.echo("  connect nothing (auto-whitelist is off)")
    if the_plan.bootstrap:
        b = the_plan.bootstrap
        click.echo(f"  bootstrap config for {names_t[b.thing_index]} with channels "
                   + ", ".join(names_c[i] for i in b.channel_indexes)
                   + f"; content {len(b.content)} bytes of JSON")
    else:
        click.echo("  no bootstrap config (bootstrap.provision is off)")
    for cert in the_plan.certificates:
        click.echo(f"  certificate for {names_t[cert.thing_index]}: {cert.key_type} "
                   f"{cert.key_bits} bits, valid {cert.ttl_s} s")


# --------------------------------------------------------------------------- identity


@cli.command()
@click.option("--interface", default=None,
              help="use this interface's MAC [env EDGE_PROVISION_INTERFACE]")
@json_option
@click.pass_obj
def identity(obj: CliContext, interface: str | None, as_json: bool) -> None:
    """Show the external_id this gateway uses, where it comes from, and the interfaces seen.

    Nothing is written: a stored identity is shown as stored; otherwise what the
    first enrollment would store. The external_key is never printed.

    \b
    Example:
      edge-provision identity --interface eth0 --json
    """
    from edge_provision.agent import identity as identity_mod

    settings = obj.agent_settings(interface=interface)
    interfaces = identity_mod.list_interfaces()
    ident = identity_mod.resolve_identity(
        settings.state_dir,
        external_id=settings.external_id,
        external_key=settings.external_key,
        interface=settings.interface,
        mac_format=identity_mod.MacFormat(settings.mac_format),
        prefix=settings.id_prefix,
        interfaces=interfaces,
        persist=False,
    )
    rows = [
        {"name": i.name, "mac": i.mac, "index": i.index, "up": i.is_up,
         "usable": (not identity_mod.is_virtual(i.name)) and identity_mod.is_usable_mac(i.mac)}
        for i in sorted(interfaces, key=lambda i: i.index)
    ]
    doc = {
        "ok": True,
        "external_id": ident.external_id,
        "external_id_source": ident.external_id_source,
        "external_key_set": bool(ident.external_key),
        "external_key_source": ident.external_key_source,
        "interface": ident.interface,
        "state_dir": str(settings.state_dir),
        "interfaces": rows,
    }
    if as_json:
        emit_json(doc)
        return
    click.echo(f"external_id   {ident.external_id}  ({ident.external_id_source})")
    click.echo(f"external_key  {'set' if ident.external_key else 'not set'}  "
               f"({ident.external_key_source})")
    click.echo(f"state dir     {settings.state_dir}")
    click.echo("interfaces:")
    for row in rows:
        mark = "*" if row["name"] == ident.interface else " "
        verdict = "chosen" if mark == "*" else ("usable" if row["usable"] else "skipped")
        click.echo(f"  {mark} {row['index']:>3} {row['name']:<16} {row['mac'] or '-':<17} "
                   f"{'up' if row['up'] else 'down':<4} {verdict}")


# --------------------------------------------------------------------------- lab server


@cli.command()
@click.option("--host", default=None, help="listen address [default 127.0.0.1]")
@click.option("--port", type=int, default=None,
              help="port [env MF_PROVISION_HTTP_PORT; default 8190; 0 picks a free one]")
@click.option("--layout", "layout_file", type=click.Path(path_type=Path), default=None,
              help="Mainflux provision config.toml [env MF_PROVISION_CONFIG_FILE]")
@click.option("--token", default=None, help="API key [env MF_PROVISION_API_KEY; default generated]")
@click.option("--state-dir", "serve_state_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="database, CA and token [env EDGE_PROVISION_LAB_STATE_DIR]")
@click.option("--mqtt", is_flag=True, default=None,
              help="also run a mosquitto broker kept in step with the provisioned things")
@click.option("--mqtt-port", type=int, default=None, help="mosquitto port [default 1883]")
@click.option("--mqtt-tls-port", type=int, default=None, help="mosquitto TLS port (lab CA)")
@click.option("--mqtt-require-cert", is_flag=True, default=None,
              help="TLS listener requires client certificates")
@click.option("--mosquitto-config-dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="maintain password/ACL files here for your own mosquitto")
@click.pass_obj
def serve(obj: CliContext, /, **options: object) -> None:
    """Run the lab server: Mainflux-compatible /mapping, bootstrap and certificates.

    Everything lives in the state directory (SQLite database, local CA, API token);
    nothing else needs to be installed. Listens on 127.0.0.1 unless --host says
    otherwise. Stop it with Ctrl-C or SIGTERM.

    \b
    Example:
      edge-provision serve --port 8190 --layout /etc/mainflux/provision/config.toml
    """
    flags = {"state_dir": obj.flags.get("state_dir"), "log_level": obj.flags.get("log_level")}
    serve_state_dir = options.pop("serve_state_dir", None)
    if serve_state_dir is not None:
        flags["state_dir"] = serve_state_dir
    flags.update({k: v for k, v in options.items() if v is not None})
    settings: LabSettings = load_lab_settings(flags)
    register_secret(settings.token)
    setup_logging(settings.log_level)
    try:
        from edge_provision.lab.server import serve as run_server
    except ImportError as exc:  # the optional "lab" extra is missing
        raise ConfigError(
            f"the lab server needs the 'lab' extra ({exc.name} is not installed); "
            "install it with: pip install 'edge-provision[lab]'"
        ) from None
    run_server(settings, echo=click.echo)


# --------------------------------------------------------------------------- agent commands

# Each module adds its commands: _cli.agent (enroll, status, reset), _cli.run (run),
# _cli.renew (renew).
for _commands in (_agent_commands, _run_commands, _renew_commands, _simulate_commands):
    _commands.register(cli)


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and map every outcome to an exit code (the one place that does)."""
    try:
        cli.main(args=argv, prog_name="edge-provision", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code if exc.exit_code else EXIT_CONFIG)
    except EdgeProvisionError as exc:
        as_json = "--json" in (argv if argv is not None else sys.argv[1:])
        if as_json:
            emit_json(error_doc(exc))
        else:
            problems = exc.problems if isinstance(exc, ConfigError) else (str(exc),)
            for problem in problems:
                click.echo(f"error: {problem}", err=True)
        logger.debug("command failed", exc_info=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
