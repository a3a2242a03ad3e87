"""``edge-provision serve``: the lab server (needs the ``lab`` extra).

Only click and the standard library at module level: the server (FastAPI, uvicorn)
loads when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from edge_provision.cli._common import CliContext
from edge_provision.errors import ConfigError
from edge_provision.logs import register_secret, setup_logging
from edge_provision.settings import LabSettings, load_lab_settings

__all__ = ["register", "serve"]


@click.command()
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


def register(group: click.Group) -> None:
    """Add ``serve`` to the CLI."""
    group.add_command(serve)
