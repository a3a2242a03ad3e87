"""The click application: the group, its global options and every command group.

Each command group is one module (``layout``, ``identity``, ``enroll``, ``status``,
``reset``, ``renew``, ``run``, ``serve``, ``simulate``) whose top-level imports are click and the
standard library only (the daemon runs ``enroll``/``renew`` as children, and ``status``
must start fast). :func:`run_app` maps every outcome to an exit code (see ``errors.py``
for the table). With ``--json`` a command prints exactly one JSON document on stdout,
also on failure: ``{"ok": false, "error": {"kind", "message", "problems", ...}}``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from edge_provision import __version__
from edge_provision.cli import (
    enroll,
    identity,
    layout,
    renew,
    reset,
    run,
    serve,
    simulate,
    status,
)
from edge_provision.cli._common import CliContext, emit_json, error_doc
from edge_provision.cli._context import error_lines
from edge_provision.errors import EXIT_CONFIG, EdgeProvisionError
from edge_provision.logs import setup_logging

__all__ = ["cli", "run_app"]

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


for _group in (layout, identity, serve, enroll, status, reset, run, renew, simulate):
    _group.register(cli)


def run_app(argv: list[str] | None = None) -> None:
    """Run the CLI and map every outcome to an exit code."""
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
            for line in error_lines(exc):
                click.echo(line, err=True)
        logger.debug("command failed", exc_info=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
