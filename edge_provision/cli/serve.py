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
@click.option("--backend", type=click.Choice(["embedded", "mainflux"]), default=None,
              help="embedded (SQLite in the state dir) or mainflux (a real platform) "
                   "[env EDGE_PROVISION_LAB_BACKEND; default embedded]")
@click.option("--things-url", default=None,
              help="mainflux: Things service URL [env MF_PROVISION_THINGS_LOCATION]")
@click.option("--bs-svc-url", "bootstrap_svc_url", default=None,
              help="mainflux: Bootstrap service URL [env MF_PROVISION_BS_SVC_URL]")
@click.option("--users-url", default=None,
              help="mainflux: Users service URL, for a login [env MF_PROVISION_USERS_LOCATION]")
@click.option("--mf-user", default=None,
              help="mainflux: log in as this user (password: env MF_PROVISION_PASS or "
                   "MF_PROVISION_PASS_FILE) unless an API key is set (MF_PROVISION_API_KEY)")
@click.option("--platform-ca-bundle", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="mainflux: CA certificates to verify the platform's TLS")
@click.option("--platform-insecure", is_flag=True, default=None,
              help="mainflux: do NOT verify the platform's TLS certificates (lab use only)")
@click.pass_obj
def serve(obj: CliContext, /, **options: object) -> None:
    """Run the lab server: Mainflux-compatible /mapping, bootstrap and certificates.

    Everything lives in the state directory (SQLite database, local CA, API token);
    nothing else needs to be installed. Listens on 127.0.0.1 unless --host says
    otherwise. Stop it with Ctrl-C or SIGTERM. With --backend mainflux the
    mappings go to a real Mainflux (0.12 or 0.13+) instead, configured with
    upstream Provision's own MF_PROVISION_* variables; certificates are still
    signed by the lab's CA.

    \b
    Examples:
      edge-provision serve --port 8190 --layout /etc/mainflux/provision/config.toml
      MF_PROVISION_API_KEY=... edge-provision serve --backend mainflux \\
          --things-url http://things:8182 --bs-svc-url http://bootstrap:8202/things
    """
    flags = {"state_dir": obj.flags.get("state_dir"), "log_level": obj.flags.get("log_level")}
    serve_state_dir = options.pop("serve_state_dir", None)
    if serve_state_dir is not None:
        flags["state_dir"] = serve_state_dir
    flags.update({k: v for k, v in options.items() if v is not None})
    settings: LabSettings = load_lab_settings(flags)
    register_secret(settings.token)
    register_secret(settings.mf_pass)
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
