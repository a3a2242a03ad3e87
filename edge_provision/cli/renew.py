"""``edge-provision renew``: renew certificates when due (or now), check and repair credentials.

Only click and the standard library at module level (the daemon runs this as a child).
"""

from __future__ import annotations

import click

from edge_provision.cli._common import CliContext, emit_json, json_option, warn

__all__ = ["register", "renew"]


@click.command()
@click.option("--force", is_flag=True, help="renew now even if the certificates are not due")
@json_option
@click.pass_obj
def renew(obj: CliContext, force: bool, as_json: bool) -> None:
    """Renew this gateway's client certificates when due; otherwise check the credentials.

    A new key is made here and sent as a CSR (or, against an upstream Certs service, a new
    certificate is issued); it goes into a new generation that becomes current only after
    it chains to the trusted CA, matches its key and passes the MQTT check. When the
    platform refuses the current credentials (revoked certificate, changed or deleted
    bootstrap config) the gateway reprovisions itself. On failure the previous generation
    stays current and the exit code is non-zero (75: retry later, 77: refused).

    \b
    Examples:
      edge-provision renew                # renew if due, else check
      edge-provision renew --force --json
    """
    from edge_provision.agent import wiring

    result = wiring.run_renew(obj.agent_settings(), force=force, hard_stop=True, notice=warn)
    if as_json:
        emit_json(result.to_dict())
        return
    if result.renewed:
        click.echo(f"renewed: generation {result.generation}, serial {result.serial}, "
                   f"valid until {result.not_after}")  # fmt: skip
    else:
        click.echo(f"not renewed: {result.reason}")
    if result.reprovisioned:
        click.echo(f"reprovisioned: {result.reason}")
    if result.next_renewal_at:
        click.echo(f"next renewal at {result.next_renewal_at}")
    elif result.next_action:
        click.echo(f"next: {result.next_action}")


def register(group: click.Group) -> None:
    """Add ``renew`` to the CLI."""
    group.add_command(renew)
