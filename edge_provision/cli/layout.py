"""``edge-provision layout check|plan``: validate a provision layout, preview its plan.

Only click and the standard library at module level; the layout engine loads when a
command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edge_provision import fileio
from edge_provision.cli._common import CliContext, emit_json, json_option
from edge_provision.errors import ConfigError

__all__ = ["layout", "register"]


@click.group()
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


def register(group: click.Group) -> None:
    """Add the ``layout`` group to the CLI."""
    group.add_command(layout)
