"""``edge-provision identity``: the external_id this gateway uses, and why (never the key)."""

from __future__ import annotations

import click

from edge_provision.cli._common import CliContext, emit_json, json_option

__all__ = ["identity", "register"]


@click.command()
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
    from edge_provision.agent.identity import preview_identity

    settings = obj.agent_settings(interface=interface)
    preview = preview_identity(settings)
    ident = preview.identity
    rows = [{"name": i.name, "mac": i.mac, "index": i.index, "up": i.is_up,
             "usable": preview.usable(i)} for i in preview.interfaces]  # fmt: skip
    if as_json:
        emit_json({
            "ok": True,
            "external_id": ident.external_id,
            "external_id_source": ident.external_id_source,
            "external_key_set": bool(ident.external_key),
            "external_key_source": ident.external_key_source,
            "interface": ident.interface,
            "state_dir": str(settings.state_dir),
            "interfaces": rows,
        })
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


def register(group: click.Group) -> None:
    """Add ``identity`` to the CLI."""
    group.add_command(identity)
