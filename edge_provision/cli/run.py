"""``edge-provision run``: the long-running supervisor (systemd ``Type=notify`` service).

This is the click command (``run --help``); a plain ``run`` command line skips click
altogether (:mod:`edge_provision.cli._daemon`).
"""

from __future__ import annotations

import click

from edge_provision.cli._common import CliContext
from edge_provision.cli._daemon import start_daemon

__all__ = ["register"]


@click.command("run")
@click.pass_obj
def run(obj: CliContext) -> None:
    """Keep this gateway provisioned: enroll, then renew on schedule, until stopped.

    A small supervisor that sleeps until the next action and runs `enroll` / `renew`
    as child processes (the same commands you can run by hand). Network trouble is
    retried forever with backoff; errors a human must fix are retried slowly and shown
    in systemd's status line. Signals: SIGHUP reloads the settings, SIGUSR1 checks now,
    SIGTERM/SIGINT stop. Talks sd_notify (READY, STATUS, WATCHDOG, STOPPING) when run
    by systemd. With mqtt.control_listener on, the commands renew, reprovision and
    status on the control channel are obeyed and answered (docs/daemon.md).

    \b
    Example:
      edge-provision --config /etc/edge-provision/config.toml run
      systemctl kill -s USR1 edge-provision    # renew/check now
    """
    start_daemon(obj)


def register(group: click.Group) -> None:
    """Add ``run`` to the CLI."""
    group.add_command(run)
