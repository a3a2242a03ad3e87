"""``edge-provision run``: the long-running supervisor (systemd ``Type=notify`` service)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from edge_provision.cli._common import CliContext

if TYPE_CHECKING:
    from edge_provision.settings import AgentSettings

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
    from edge_provision.agent.daemon.supervisor import Daemon, command_prefix

    def load() -> AgentSettings:  # the daemon logs at agent.log_level (info by default)
        return obj.agent_settings(interactive=False)

    settings = load()
    state_dir = obj.flags.get("state_dir")
    log_level = obj.flags.get("log_level")
    prefix = command_prefix(
        config=obj.config,
        state_dir=state_dir if isinstance(state_dir, Path) else None,
        log_level=log_level if isinstance(log_level, str) else None,
    )
    Daemon(settings, reload_settings=load, argv_prefix=prefix).run()


def register(group: click.Group) -> None:
    """Add ``run`` to the CLI."""
    group.add_command(run)
