"""``edge-provision reset``: forget the local credentials (keep identity and old files).

Only click and the standard library at module level.
"""

from __future__ import annotations

import sys

import click

from edge_provision.cli._common import CliContext, emit_json, json_option, warn
from edge_provision.errors import ConfigError

__all__ = ["register", "reset"]


@click.command()
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@json_option
@click.pass_obj
def reset(obj: CliContext, yes: bool, as_json: bool) -> None:
    """Forget the local credentials (the current generation); keep identity and old files.

    The next enroll looks up the bootstrap config with the same external_id and key, so
    it gets the same things back. Old generations stay until that enrollment succeeds.

    \b
    Example:
      edge-provision reset --yes && edge-provision enroll
    """
    from edge_provision.agent import wiring

    settings = obj.agent_settings()
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError("reset asks for confirmation: run it in a terminal or pass --yes")
        click.confirm(f"Forget the current credentials in {settings.state_dir}?", abort=True)
    result = wiring.run_reset(settings, notice=warn)
    if as_json:
        emit_json(result.to_dict(str(settings.state_dir)))
    elif result.forgot_generation is None:
        click.echo("nothing to forget: no current generation")
    else:
        click.echo(f"forgot generation {result.forgot_generation}; "
                   f"{len(result.kept_generations)} generation(s) kept until the next "
                   "successful enrollment; run: edge-provision enroll")  # fmt: skip


def register(group: click.Group) -> None:
    """Add ``reset`` to the CLI."""
    group.add_command(reset)
