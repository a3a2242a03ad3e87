"""``edge-provision status``: what this gateway is and does next (never a key).

Text and ``--json`` are two renderings of one :class:`~edge_provision.agent.status.GatewayStatus`.
Only click and the standard library at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from edge_provision.cli._common import CliContext, emit_json, json_option

if TYPE_CHECKING:
    from edge_provision.agent.status import GatewayStatus

__all__ = ["register", "render_text", "status"]


@click.command()
@click.option("--verbose", "-v", is_flag=True,
              help="also show every setting with its source, and the recent journal")
@json_option
@click.pass_obj
def status(obj: CliContext, verbose: bool, as_json: bool) -> None:
    """Show this gateway's enrollment: state, things, channels, certificates, errors.

    Keys are never printed. Reads only; safe while the daemon runs.

    \b
    Example:
      edge-provision status --json
    """
    from edge_provision.agent import wiring

    current = wiring.read_status(obj.agent_settings())
    if as_json:
        emit_json(current.to_dict(verbose=verbose))
    else:
        for line in render_text(current, verbose=verbose):
            click.echo(line)


def render_text(current: GatewayStatus, *, verbose: bool = False) -> list[str]:
    """The lines ``status`` prints for ``current``."""
    lines = [f"state        {current.phase.value}" + (
        "  (a /mapping outcome is unknown; the next enroll looks up first)"
        if current.mapping_in_flight else "")]  # fmt: skip
    lines.append(f"external_id  {current.external_id or '- (not yet resolved)'}")
    lines.append(f"state dir    {current.state_dir}")
    gen = current.generation
    if gen is not None:
        fallback = (f"  WARNING: current link damaged, using generation {gen.number}: "
                    f"{gen.fallback_reason}" if gen.fallback_from is not None else "")
        lines.append(f"generation   {gen.number} (from {gen.source}, {gen.created}){fallback}")
    else:
        lines.append("generation   none (run: edge-provision enroll)")
    credentials = current.credentials
    for thing in credentials.things:
        role = " (gateway)" if thing.gateway else ""
        lines.append(f"thing        {thing.id}  {thing.name or '-'}{role}")
    for channel in credentials.channels:
        lines.append(f"channel      {channel.id}  {channel.name or '-'}  "
                     f"type={channel.type or '-'}")
    for cert in credentials.certificates:
        if cert.error is not None:
            lines.append(f"certificate  {cert.thing_id}: unreadable: {cert.error}")
            continue
        validity = "EXPIRED" if cert.expired else f"expires {cert.not_after}"
        lines.append(f"certificate  {cert.subject}  {validity}  serial {cert.serial}")
    for damage in current.damage:
        lines.append(f"PROBLEM      {damage.kind}: {damage.message}")
    err = current.last_error
    if err is not None:
        lines.append(f"last error   {err.kind}: {err.message} (at {err.at})")
    if current.next_action:
        when = f"at {current.next_action_at}" if current.next_action_at else "now"
        lines.append(f"next         {current.next_action} {when}")
    if verbose:
        lines.append("settings:")
        for row in current.settings:
            lines.append(f"  {row['name']!s:<20} {row['value']!s:<40} ({row['source']})")
    return lines


def register(group: click.Group) -> None:
    """Add ``status`` to the CLI."""
    group.add_command(status)
