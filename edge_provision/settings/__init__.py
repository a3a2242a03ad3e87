"""Typed settings for the agent and the lab server, declared once.

Each setting is one dataclass field whose metadata is a :class:`Field`: its type,
default, environment variables, config-file keys and whether it is secret. The
same declaration drives resolution, ``--help``-style listings and
``status --verbose``'s "where did this value come from".

Precedence: CLI flag > environment variable > config file > default. Each
resolved value remembers its source (``flag --token``, ``env
EDGE_PROVISION_TOKEN``, ``/etc/edge-provision/config.toml:7 server.token`` or
``default``). An empty environment variable counts as unset (as Mainflux's own
``Env(key, default)`` does). Secrets can also be given as files: ``<ENV>_FILE``
or the ``<key>_file`` config key; the file's content (without a trailing
newline) is the value.

Each field has a :class:`FieldKind`, and each kind one converter (``_parse``).
Durations use the project's one grammar (:mod:`edge_provision.duration`: Go durations,
``d``, bare seconds; a TOML number is seconds); every number and duration has a minimum
and a maximum (the table is in ``docs/configuration.md``); ``handoff.mode`` is octal
text read into an int. The file is read by the shared TOML front end
(:mod:`edge_provision.tomlfile`), so every problem in it names its line.

Every bad value raises :class:`~edge_provision.errors.ConfigError` at load time with
one problem per bad value, naming its source, for example::

    /etc/edge-provision/config.toml:3: server.url: expected an http(s) URL, got "localhost"
    env EDGE_PROVISION_PERMANENT_RETRY: must be at most 7d, got 100000000h
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from edge_provision import tomlfile
from edge_provision.errors import ConfigError, Problem
from edge_provision.settings import _parse
from edge_provision.settings._parse import Field, FieldKind

__all__ = [
    "DEFAULT_AGENT_CONFIG",
    "DEFAULT_ENCRYPT_KEY_HEX",
    "AgentSettings",
    "Field",
    "FieldKind",
    "LabSettings",
    "describe",
    "fields_of",
    "load_agent_settings",
    "load_lab_settings",
]

DEFAULT_AGENT_CONFIG = Path("/etc/edge-provision/config.toml")
DEFAULT_ENCRYPT_KEY_HEX = "12345678910111213141516171819202"
LOG_LEVELS = ("debug", "info", "warning", "error")

_HOUR = 3600.0
_DAY = 86400.0
_GO_MAX_HOURS = 2562047  # whole hours below Go's int64-nanosecond limit


def _setting(
    default: Any,
    kind: FieldKind,
    *,
    env: Sequence[str] = (),
    keys: Sequence[str] = (),
    flag: str | None = None,
    secret: bool = False,
    choices: Sequence[str] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    help: str = "",
) -> Any:
    spec = {
        "kind": kind,
        "env": tuple(env),
        "keys": tuple(keys),
        "flag": flag,
        "secret": secret,
        "choices": tuple(choices),
        "minimum": minimum,
        "maximum": maximum,
        "help": help,
    }
    return field(default=default, metadata={"setting": spec})


def _sources_field() -> Any:
    return field(default_factory=dict, compare=False, repr=False)


def _default_state_dir(kind: str) -> Path:
    """systemd's ``$STATE_DIRECTORY`` first, then the FHS place for root, else XDG."""
    systemd_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd_dir:
        return Path(systemd_dir)
    name = "edge-provision" if kind == "agent" else "edge-provision-lab"
    if os.geteuid() == 0:
        return Path("/var/lib") / name
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / name


# --------------------------------------------------------------------------- agent


@dataclass(frozen=True)
class AgentSettings:
    """Settings of the gateway agent (``enroll``, ``run``, ``status``, ``renew`` ...)."""

    state_dir: Path = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_STATE_DIR"], keys=["agent.state_dir"],
        flag="--state-dir", help="where identity, state and credentials are kept",
    )
    log_level: str = _setting(
        "info", FieldKind.CHOICE, env=["EDGE_PROVISION_LOG_LEVEL"], keys=["agent.log_level"],
        flag="--log-level", choices=LOG_LEVELS, help="log verbosity",
    )
    provision_url: Optional[str] = _setting(
        None, FieldKind.URL, env=["EDGE_PROVISION_PROVISION_URL"], keys=["server.url"],
        flag="--provision-url", help="base URL of the Provision service (POST /mapping)",
    )
    bootstrap_url: Optional[str] = _setting(
        None, FieldKind.URL, env=["EDGE_PROVISION_BOOTSTRAP_URL"], keys=["server.bootstrap_url"],
        flag="--bootstrap-url", help="base URL of the Bootstrap service (default: provision URL)",
    )
    certs_url: Optional[str] = _setting(
        None, FieldKind.URL, env=["EDGE_PROVISION_CERTS_URL"], keys=["server.certs_url"],
        flag="--certs-url", help="base URL for certificates (default: provision URL)",
    )
    token: Optional[str] = _setting(
        None, FieldKind.STR, env=["EDGE_PROVISION_TOKEN"], keys=["server.token"], flag="--token",
        secret=True, help="user token or API key for /mapping (optional on a lab server)",
    )
    auth_scheme: str = _setting(
        "auto", FieldKind.CHOICE, env=["EDGE_PROVISION_AUTH_SCHEME"], keys=["server.auth_scheme"],
        choices=("auto", "modern", "bare"),
        help="Authorization form: modern (Bearer/Thing, Mainflux 0.13), bare (0.12), auto",
    )
    ca_bundle: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_CA_BUNDLE"], keys=["server.ca_bundle"],
        flag="--ca-bundle", help="CA certificates to verify the servers' TLS certificates",
    )
    client_cert: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_CLIENT_CERT"], keys=["server.client_cert"],
        help="TLS client certificate for the HTTP calls",
    )
    client_key: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_CLIENT_KEY"], keys=["server.client_key"],
        help="key of the TLS client certificate",
    )
    insecure: bool = _setting(
        False, FieldKind.BOOL, env=["EDGE_PROVISION_INSECURE"], keys=["server.insecure"],
        flag="--insecure", help="do NOT verify TLS certificates (lab use only)",
    )
    connect_timeout_s: float = _setting(
        5.0, FieldKind.FLOAT, env=["EDGE_PROVISION_CONNECT_TIMEOUT"],
        keys=["server.connect_timeout_s"],
        minimum=0.1, maximum=300, help="TCP/TLS connect timeout in seconds",
    )
    read_timeout_s: float = _setting(
        30.0, FieldKind.FLOAT, env=["EDGE_PROVISION_READ_TIMEOUT"], keys=["server.read_timeout_s"],
        minimum=0.1, maximum=3600, help="time to wait for a reply, in seconds",
    )
    request_deadline_s: float = _setting(
        60.0, FieldKind.FLOAT, env=["EDGE_PROVISION_REQUEST_DEADLINE"],
        keys=["server.request_deadline_s"], minimum=0.1, maximum=3600,
        help="longest one HTTP request may take, connect to last byte, in seconds",
    )
    interface: Optional[str] = _setting(
        None, FieldKind.STR, env=["EDGE_PROVISION_INTERFACE"], keys=["identity.interface"],
        flag="--interface", help="network interface whose MAC becomes the external_id",
    )
    external_id: Optional[str] = _setting(
        None, FieldKind.STR, env=["EDGE_PROVISION_EXTERNAL_ID"], keys=["identity.external_id"],
        flag="--external-id", help="override the MAC-derived external_id",
    )
    external_key: Optional[str] = _setting(
        None, FieldKind.STR, env=["EDGE_PROVISION_EXTERNAL_KEY"], keys=["identity.external_key"],
        flag="--external-key", secret=True,
        help="bootstrap secret (default: generated once and stored)",
    )
    mac_format: str = _setting(
        "colon-lower", FieldKind.CHOICE, env=["EDGE_PROVISION_MAC_FORMAT"],
        keys=["identity.mac_format"],
        choices=("colon-lower", "colon-upper", "plain-lower", "plain-upper", "dash-upper"),
        help="how the MAC is written as external_id",
    )
    id_prefix: str = _setting(
        "", FieldKind.STR, env=["EDGE_PROVISION_ID_PREFIX"], keys=["identity.prefix"],
        help="prefix put before the MAC in the external_id",
    )
    name: Optional[str] = _setting(
        None, FieldKind.STR, env=["EDGE_PROVISION_NAME"], keys=["identity.name"], flag="--name",
        help="thing name sent with /mapping",
    )
    secure_bootstrap: bool = _setting(
        False, FieldKind.BOOL, env=["EDGE_PROVISION_SECURE_BOOTSTRAP"], keys=["bootstrap.secure"],
        help="use the encrypted bootstrap endpoint (AES-CFB, obfuscation only)",
    )
    encrypt_key: str = _setting(
        DEFAULT_ENCRYPT_KEY_HEX, FieldKind.STR,
        env=["EDGE_PROVISION_BOOTSTRAP_ENCRYPT_KEY", "MF_BOOTSTRAP_ENCRYPT_KEY"],
        keys=["bootstrap.encrypt_key"], secret=True,
        help="hex AES key of the secure bootstrap endpoint",
    )
    backoff_initial_s: float = _setting(
        2.0, FieldKind.DURATION, env=["EDGE_PROVISION_BACKOFF_INITIAL"],
        keys=["agent.backoff_initial"], minimum=0.01, maximum=_HOUR, help="first retry delay",
    )
    backoff_cap_s: float = _setting(
        300.0, FieldKind.DURATION, env=["EDGE_PROVISION_BACKOFF_CAP"], keys=["agent.backoff_cap"],
        minimum=0.1, maximum=_DAY, help="longest retry delay",
    )
    permanent_retry_s: float = _setting(
        3600.0, FieldKind.DURATION, env=["EDGE_PROVISION_PERMANENT_RETRY"],
        keys=["agent.permanent_retry"], minimum=1, maximum=7 * _DAY,
        help="retry delay after an error a human must fix",
    )
    min_rerun_s: float = _setting(
        60.0, FieldKind.DURATION, env=["EDGE_PROVISION_MIN_RERUN"], keys=["agent.min_rerun"],
        minimum=0.1, maximum=_DAY,
        help="after a success, wait at least this long before the next run",
    )
    run_deadline_s: float = _setting(
        600.0, FieldKind.DURATION, env=["EDGE_PROVISION_RUN_DEADLINE"], keys=["agent.run_deadline"],
        minimum=1, maximum=_DAY,
        help="longest one enroll or renew run may take (and hold the state lock)",
    )
    lock_wait_s: float = _setting(
        600.0, FieldKind.DURATION, env=["EDGE_PROVISION_LOCK_WAIT"], keys=["agent.lock_wait"],
        minimum=0, maximum=_DAY,
        help="how long enroll/renew/reset wait for another run's state lock (0: not at all)",
    )
    mqtt_url: Optional[str] = _setting(
        None, FieldKind.STR, env=["EDGE_PROVISION_MQTT_URL"], keys=["mqtt.url"],
        help="broker URL (tcp://host:1883, ssl://host:8883); default: bootstrap content",
    )
    mqtt_verify: str = _setting(
        "auto", FieldKind.CHOICE, env=["EDGE_PROVISION_MQTT_VERIFY"], keys=["mqtt.verify"],
        choices=("auto", "always", "never"),
        help="check new credentials over MQTT before using them (auto: when a broker is known)",
    )
    mqtt_ca: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_MQTT_CA"], keys=["mqtt.ca"],
        help="CA for the broker's TLS certificate (default: the platform CA)",
    )
    mqtt_mtls: bool = _setting(
        False, FieldKind.BOOL, env=["EDGE_PROVISION_MQTT_MTLS"], keys=["mqtt.mtls"],
        help="present the thing's client certificate to the broker",
    )
    mqtt_timeout_s: float = _setting(
        10.0, FieldKind.DURATION, env=["EDGE_PROVISION_MQTT_TIMEOUT"], keys=["mqtt.timeout"],
        minimum=0.1, maximum=_HOUR, help="MQTT verification timeout",
    )
    mqtt_new_credentials_grace_s: float = _setting(
        10.0, FieldKind.DURATION, env=["EDGE_PROVISION_MQTT_NEW_CREDENTIALS_GRACE"],
        keys=["mqtt.new_credentials_grace"], minimum=0, maximum=5 * 60,
        help="how long a refusal of credentials this run's /mapping just created is retried "
             "(a broker may learn of a new thing a moment later)",
    )
    control_listener: bool = _setting(
        False, FieldKind.BOOL, env=["EDGE_PROVISION_CONTROL_LISTENER"],
        keys=["mqtt.control_listener"],
        help="listen on the control channel for renew/reprovision/status commands",
    )
    agent_config: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_AGENT_CONFIG"], keys=["handoff.agent_config"],
        help="write the Mainflux Agent's config.toml here",
    )
    agent_env: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_AGENT_ENV"], keys=["handoff.agent_env"],
        help="write an environment file for the Mainflux Agent's unit here",
    )
    export_config: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_EXPORT_CONFIG"], keys=["handoff.export_config"],
        help="write the Export service's config.toml here (when content has an export section)",
    )
    hooks_dir: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_HOOKS_DIR"], keys=["handoff.hooks_dir"],
        help="run every executable in this directory after a new generation",
    )
    hook_commands: tuple[str, ...] = _setting(
        (), FieldKind.LIST, env=["EDGE_PROVISION_HOOK_COMMANDS"], keys=["handoff.commands"],
        help="commands run after a new generation (argv split like a shell)",
    )
    hook_timeout_s: float = _setting(
        60.0, FieldKind.DURATION, env=["EDGE_PROVISION_HOOK_TIMEOUT"], keys=["handoff.timeout"],
        minimum=0.1, maximum=_HOUR, help="longest a deploy hook may run",
    )
    file_owner: Optional[str] = _setting(
        None, FieldKind.STR, env=["EDGE_PROVISION_FILE_OWNER"], keys=["handoff.owner"],
        help="owner of handed-off files",
    )
    file_group: Optional[str] = _setting(
        None, FieldKind.STR, env=["EDGE_PROVISION_FILE_GROUP"], keys=["handoff.group"],
        help="group of handed-off files",
    )
    file_mode: int = _setting(
        0o640, FieldKind.FILE_MODE, env=["EDGE_PROVISION_FILE_MODE"], keys=["handoff.mode"],
        help='octal mode of handed-off files, as text ("0640")',
    )
    renew_before_s: Optional[float] = _setting(
        None, FieldKind.DURATION, env=["EDGE_PROVISION_RENEW_BEFORE"],
        keys=["renewal.renew_before"], minimum=0, maximum=365 * _DAY,
        help="renew this long before expiry (default: at 2/3 of the lifetime)",
    )
    key_type: str = _setting(
        "ec", FieldKind.CHOICE, env=["EDGE_PROVISION_KEY_TYPE"], keys=["renewal.key_type"],
        choices=("ec", "rsa"), help="key type generated on the gateway",
    )
    key_bits: Optional[int] = _setting(
        None, FieldKind.INT, env=["EDGE_PROVISION_KEY_BITS"], keys=["renewal.key_bits"],
        minimum=256, maximum=4096, help="key size (ec 256/384/521, rsa 2048/3072/4096)",
    )
    keep_generations: int = _setting(
        5, FieldKind.INT, env=["EDGE_PROVISION_KEEP_GENERATIONS"],
        keys=["renewal.keep_generations"],
        minimum=1, maximum=1000, help="how many credential generations to keep",
    )
    metrics_textfile: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_METRICS_TEXTFILE"],
        keys=["agent.metrics_textfile"],
        help="write Prometheus metrics to this file (node_exporter textfile collector)",
    )
    config_file: Optional[Path] = field(default=None, compare=False)
    sources: dict[str, str] = _sources_field()

    def source_of(self, name: str) -> str:
        """Where the value of setting ``name`` came from."""
        return self.sources.get(name, "default")


# --------------------------------------------------------------------------- lab


@dataclass(frozen=True)
class LabSettings:
    """Settings of ``edge-provision serve``; honours Mainflux Provision's own variables."""

    host: str = _setting(
        "127.0.0.1", FieldKind.STR, env=["EDGE_PROVISION_LAB_HOST"], flag="--host",
        help="address to listen on (only loopback unless you say otherwise)",
    )
    port: int = _setting(
        8190, FieldKind.INT, env=["MF_PROVISION_HTTP_PORT"],
        keys=["server.http_port"], flag="--port",
        minimum=0, maximum=65535, help="TCP port (0 = pick a free one)",
    )
    layout_file: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["MF_PROVISION_CONFIG_FILE"], flag="--layout",
        help="Mainflux provision config.toml (default: built-in layout)",
    )
    state_dir: Path = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_LAB_STATE_DIR"], flag="--state-dir",
        help="database, CA and token of the lab server",
    )
    token: Optional[str] = _setting(
        None, FieldKind.STR, env=["MF_PROVISION_API_KEY"],
        keys=["server.mf_api_key"], flag="--token",
        secret=True, help="API key clients must present (default: generated at first start)",
    )
    log_level: str = _setting(
        "info", FieldKind.CHOICE, env=["MF_PROVISION_LOG_LEVEL"], keys=["server.log_level"],
        flag="--log-level", choices=LOG_LEVELS, help="log verbosity",
    )
    server_cert: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["MF_PROVISION_SERVER_CERT"], keys=["server.server_cert"],
        help="HTTPS certificate (HTTPS is on when certificate and key are set)",
    )
    server_key: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["MF_PROVISION_SERVER_KEY"], keys=["server.server_key"],
        secret=False, help="HTTPS private key",
    )
    x509_provision: Optional[bool] = _setting(
        None, FieldKind.BOOL, env=["MF_PROVISION_X509_PROVISIONING"],
        help="issue a client certificate per thing in /mapping (default: layout)",
    )
    bs_provision: Optional[bool] = _setting(
        None, FieldKind.BOOL, env=["MF_PROVISION_BS_CONFIG_PROVISIONING"],
        help="create a bootstrap config (default: layout)",
    )
    autowhite_list: Optional[bool] = _setting(
        None, FieldKind.BOOL, env=["MF_PROVISION_BS_AUTO_WHITELIST"],
        help="connect things to channels at once (default: layout)",
    )
    cert_ttl_s: Optional[float] = _setting(
        None, FieldKind.DURATION, env=["MF_PROVISION_CERTS_HOURS_VALID"], minimum=1,
        maximum=_GO_MAX_HOURS * _HOUR,
        help="certificate validity, Go duration like 2400h or 30s (default: layout)",
    )
    cert_key_bits: Optional[int] = _setting(
        None, FieldKind.INT, env=["MF_PROVISION_CERTS_RSA_BITS"], minimum=256, maximum=4096,
        help="key size of server-generated keys (default: layout)",
    )
    cert_key_type: Optional[str] = _setting(
        None, FieldKind.CHOICE, env=["EDGE_PROVISION_LAB_KEY_TYPE"], choices=("ec", "rsa"),
        help="key type of server-generated keys and of the CA (default: layout, else ec)",
    )
    encrypt_key_hex: str = _setting(
        DEFAULT_ENCRYPT_KEY_HEX, FieldKind.STR, env=["MF_BOOTSTRAP_ENCRYPT_KEY"],
        keys=["bootstrap.encrypt_key"], secret=True,
        help="hex AES key of the secure bootstrap endpoint",
    )
    max_body_bytes: int = _setting(
        65536, FieldKind.INT, env=["EDGE_PROVISION_LAB_MAX_BODY"], minimum=1024, maximum=16 << 20,
        help="largest accepted request body",
    )
    max_connections: int = _setting(
        4096, FieldKind.INT, env=["EDGE_PROVISION_LAB_MAX_CONNECTIONS"], minimum=16,
        maximum=1_000_000,
        help="open HTTP connections at most (one more closes the longest idle one, else 503)",
    )
    header_timeout_s: float = _setting(
        10.0, FieldKind.DURATION, env=["EDGE_PROVISION_LAB_HEADER_TIMEOUT"], minimum=0.1,
        maximum=3600, help="time a client has to send a request's headers (else 408)",
    )
    body_timeout_s: float = _setting(
        30.0, FieldKind.DURATION, env=["EDGE_PROVISION_LAB_BODY_TIMEOUT"], minimum=0.1,
        maximum=3600, help="time a client has to send a request's body (else closed)",
    )
    mqtt: bool = _setting(
        False, FieldKind.BOOL, env=["EDGE_PROVISION_LAB_MQTT"], flag="--mqtt",
        help="run a mosquitto broker whose auth follows the provisioned things",
    )
    mqtt_port: int = _setting(
        1883, FieldKind.INT, env=["EDGE_PROVISION_LAB_MQTT_PORT"], flag="--mqtt-port",
        minimum=0, maximum=65535, help="mosquitto plain listener port (0 = pick one)",
    )
    mqtt_tls_port: Optional[int] = _setting(
        None, FieldKind.INT, env=["EDGE_PROVISION_LAB_MQTT_TLS_PORT"], flag="--mqtt-tls-port",
        minimum=0, maximum=65535, help="mosquitto TLS listener port with the lab CA",
    )
    mqtt_require_cert: bool = _setting(
        False, FieldKind.BOOL, env=["EDGE_PROVISION_LAB_MQTT_REQUIRE_CERT"],
        flag="--mqtt-require-cert", help="TLS listener requires client certificates",
    )
    mosquitto_config_dir: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_LAB_MOSQUITTO_CONFIG_DIR"],
        flag="--mosquitto-config-dir",
        help="only maintain password/ACL files here for a mosquitto you run yourself",
    )
    mosquitto_bin: str = _setting(
        "mosquitto", FieldKind.STR, env=["EDGE_PROVISION_LAB_MOSQUITTO_BIN"],
        help="mosquitto executable",
    )
    # The platform behind the lab: upstream Provision's own names (contract 1.3, 1.5).
    backend: str = _setting(
        "embedded", FieldKind.CHOICE, env=["EDGE_PROVISION_LAB_BACKEND"], keys=["server.backend"],
        flag="--backend", choices=("embedded", "mainflux"),
        help="where mappings are stored: embedded (SQLite here) or mainflux (a real platform)",
    )
    things_url: Optional[str] = _setting(
        None, FieldKind.URL, env=["MF_PROVISION_THINGS_LOCATION"], keys=["server.things_url"],
        flag="--things-url", help="mainflux backend: the Things service URL",
    )
    bootstrap_svc_url: Optional[str] = _setting(
        None, FieldKind.URL, env=["MF_PROVISION_BS_SVC_URL"], keys=["server.mf_bs_url"],
        flag="--bs-svc-url",
        help="mainflux backend: the Bootstrap service URL (with or without /things)",
    )
    users_url: Optional[str] = _setting(
        None, FieldKind.URL, env=["MF_PROVISION_USERS_LOCATION"], keys=["server.users_url"],
        flag="--users-url", help="mainflux backend: the Users service URL (for the login)",
    )
    mf_user: Optional[str] = _setting(
        None, FieldKind.STR, env=["MF_PROVISION_USER"], keys=["server.mf_user"],
        flag="--mf-user",
        help="mainflux backend: the platform user the lab logs in as (without an API key)",
    )
    mf_pass: Optional[str] = _setting(
        None, FieldKind.STR, env=["MF_PROVISION_PASS"], keys=["server.mf_pass"], secret=True,
        help="mainflux backend: that user's password",
    )
    platform_auth_scheme: str = _setting(
        "auto", FieldKind.CHOICE, env=["EDGE_PROVISION_LAB_PLATFORM_AUTH_SCHEME"],
        keys=["server.platform_auth_scheme"], choices=("auto", "modern", "bare"),
        help="mainflux backend: Authorization form, modern (0.13 Bearer), bare (0.12), auto",
    )
    platform_ca_bundle: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_LAB_PLATFORM_CA_BUNDLE"],
        keys=["server.platform_ca_bundle"], flag="--platform-ca-bundle",
        help="mainflux backend: CA certificates to verify the platform's TLS certificates",
    )
    platform_client_cert: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_LAB_PLATFORM_CLIENT_CERT"],
        keys=["server.platform_client_cert"],
        help="mainflux backend: TLS client certificate for the platform calls",
    )
    platform_client_key: Optional[Path] = _setting(
        None, FieldKind.PATH, env=["EDGE_PROVISION_LAB_PLATFORM_CLIENT_KEY"],
        keys=["server.platform_client_key"], help="mainflux backend: key of that certificate",
    )
    platform_insecure: bool = _setting(
        False, FieldKind.BOOL, env=["EDGE_PROVISION_LAB_PLATFORM_INSECURE"],
        keys=["server.platform_insecure"], flag="--platform-insecure",
        help="mainflux backend: do NOT verify the platform's TLS certificates (lab use only)",
    )
    config_file: Optional[Path] = field(default=None, compare=False)
    sources: dict[str, str] = _sources_field()

    def source_of(self, name: str) -> str:
        """Where the value of setting ``name`` came from."""
        return self.sources.get(name, "default")


# --------------------------------------------------------------------------- resolution

S = TypeVar("S", AgentSettings, LabSettings)


def fields_of(cls: type[AgentSettings] | type[LabSettings]) -> tuple[Field, ...]:
    """The declarative table of settings of ``cls``."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(Field(name=f.name, default=default, **spec))
    return tuple(out)


def _resolve(
    cls: type[S],
    flags: Mapping[str, object],
    env: Mapping[str, str],
    document: tomlfile.TomlDocument | None,
    config_file: Path | None,
    state_kind: str,
    known_keys_strict: bool,
) -> S:
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    problems: list[Problem] = []
    for spec in fields_of(cls):
        value, source = _parse.resolve_one(spec, flags, env, document, problems)
        if source is None:
            value = spec.default
            if spec.name == "state_dir" and value is None:
                value = _default_state_dir(state_kind)
            source = "default"
        values[spec.name] = value
        sources[spec.name] = source
    if document is not None and known_keys_strict:
        problems.extend(_unknown_keys(cls, document))
    if problems:
        raise ConfigError(problems)
    return cls(**values, config_file=config_file, sources=sources)  # type: ignore[arg-type]


def _unknown_keys(cls: type[S], document: tomlfile.TomlDocument) -> list[Problem]:
    known: set[str] = set()
    for spec in fields_of(cls):
        for key in spec.keys:
            known.add(key)
            if spec.secret:
                known.add(key + "_file")
    sections = sorted({k.split(".")[0] for k in known})
    problems = []
    src = document.source
    for section, table in document.doc.items():
        if not isinstance(table, Mapping):
            problems.append(
                Problem(f"unknown top-level key; expected one of the sections "
                        f"[{'], ['.join(sections)}]", path=section, source=src,
                        line=document.line(section))
            )
            continue
        for key in table:
            dotted = f"{section}.{key}"
            if dotted not in known:
                choices = sorted(k.split(".", 1)[1] for k in known if k.startswith(section + "."))
                hint = (f"known keys in [{section}]: {', '.join(choices)}" if choices
                        else f"known sections: [{'], ['.join(sections)}]")
                problems.append(Problem(f"unknown setting; {hint}", path=dotted, source=src,
                                        line=document.line(dotted)))
    return problems


def load_agent_settings(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> AgentSettings:
    """Resolve the agent's settings from flags, environment, config file and defaults.

    The config file is ``config_path`` (``--config``), else ``EDGE_PROVISION_CONFIG``,
    else ``$CONFIGURATION_DIRECTORY/config.toml``, else ``/etc/edge-provision/config.toml``
    when it exists. A file named explicitly must exist.
    """
    env = os.environ if env is None else env
    flags = flags or {}
    path: Path | None = config_path
    explicit = path is not None
    if path is None and env.get("EDGE_PROVISION_CONFIG"):
        path, explicit = Path(env["EDGE_PROVISION_CONFIG"]).expanduser(), True
    if path is None and env.get("CONFIGURATION_DIRECTORY"):
        path = Path(env["CONFIGURATION_DIRECTORY"].split(":")[0]) / "config.toml"
    if path is None:
        path = DEFAULT_AGENT_CONFIG
    if not (explicit or path.exists()):
        return _resolve(AgentSettings, flags, env, None, None, "agent", known_keys_strict=True)
    document = tomlfile.load(path, "config file")
    return _resolve(AgentSettings, flags, env, document, path, "agent", known_keys_strict=True)


def load_lab_settings(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> LabSettings:
    """Resolve ``serve``'s settings; the config file is the provision layout itself.

    The layout (``--layout`` / ``MF_PROVISION_CONFIG_FILE``) is a Mainflux provision
    ``config.toml``; its ``[server]`` keys (``http_port``, ``mf_api_key``, ``log_level``,
    ``server_cert``, ``server_key``) are read here, its layout and ``[bootstrap]`` /
    ``[cert]`` tables by :mod:`edge_provision.layout`. Unknown keys are ignored, as
    upstream does.
    """
    env = os.environ if env is None else env
    flags = flags or {}
    layout_spec = next(f for f in fields_of(LabSettings) if f.name == "layout_file")
    problems: list[Problem] = []
    layout_path, _ = _parse.resolve_one(layout_spec, flags, env, None, problems)
    if problems:
        raise ConfigError(problems)
    if not isinstance(layout_path, Path):
        return _resolve(LabSettings, flags, env, None, None, "lab", known_keys_strict=False)
    document = tomlfile.load(layout_path, "layout file")
    return _resolve(LabSettings, flags, env, document, layout_path, "lab", known_keys_strict=False)


def describe(settings: AgentSettings | LabSettings) -> list[dict[str, object]]:
    """Each setting with its value (secrets shown as ``<set>``) and source, for ``--verbose``."""
    rows: list[dict[str, object]] = []
    for spec in fields_of(type(settings)):
        value: object = getattr(settings, spec.name)
        if spec.secret and value:
            value = "<set>"
        elif spec.kind is FieldKind.FILE_MODE and isinstance(value, int):
            value = spec.show(value)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        rows.append({"name": spec.name, "value": value, "source": settings.source_of(spec.name)})
    return rows


