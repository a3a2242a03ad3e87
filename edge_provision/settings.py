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

Every bad value raises :class:`~edge_provision.errors.ConfigError` with one
problem per bad value, naming its source, for example::

    /etc/edge-provision/config.toml:3: server.url: expected an http(s) URL, got "localhost"
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar, Union
from urllib.parse import urlsplit

from edge_provision import _fs
from edge_provision.errors import ConfigError, Problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_AGENT_CONFIG",
    "DEFAULT_ENCRYPT_KEY_HEX",
    "AgentSettings",
    "Field",
    "LabSettings",
    "describe",
    "fields_of",
    "load_agent_settings",
    "load_lab_settings",
]

DEFAULT_AGENT_CONFIG = Path("/etc/edge-provision/config.toml")
DEFAULT_ENCRYPT_KEY_HEX = "12345678910111213141516171819202"
LOG_LEVELS = ("debug", "info", "warning", "error")

_TRUE = {"1", "t", "true", "yes", "y", "on"}
_FALSE = {"0", "f", "false", "no", "n", "off"}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Field:
    """How one setting is found, parsed and shown."""

    name: str
    kind: str  # str | int | float | bool | url | path | duration | choice | list
    default: object
    env: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    flag: str | None = None
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""


def _setting(
    default: Any,
    kind: str,
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
        None, "path", env=["EDGE_PROVISION_STATE_DIR"], keys=["agent.state_dir"],
        flag="--state-dir", help="where identity, state and credentials are kept",
    )
    log_level: str = _setting(
        "info", "choice", env=["EDGE_PROVISION_LOG_LEVEL"], keys=["agent.log_level"],
        flag="--log-level", choices=LOG_LEVELS, help="log verbosity",
    )
    provision_url: Optional[str] = _setting(
        None, "url", env=["EDGE_PROVISION_PROVISION_URL"], keys=["server.url"],
        flag="--provision-url", help="base URL of the Provision service (POST /mapping)",
    )
    bootstrap_url: Optional[str] = _setting(
        None, "url", env=["EDGE_PROVISION_BOOTSTRAP_URL"], keys=["server.bootstrap_url"],
        flag="--bootstrap-url", help="base URL of the Bootstrap service (default: provision URL)",
    )
    certs_url: Optional[str] = _setting(
        None, "url", env=["EDGE_PROVISION_CERTS_URL"], keys=["server.certs_url"],
        flag="--certs-url", help="base URL for certificates (default: provision URL)",
    )
    token: Optional[str] = _setting(
        None, "str", env=["EDGE_PROVISION_TOKEN"], keys=["server.token"], flag="--token",
        secret=True, help="user token or API key for /mapping (optional on a lab server)",
    )
    auth_scheme: str = _setting(
        "auto", "choice", env=["EDGE_PROVISION_AUTH_SCHEME"], keys=["server.auth_scheme"],
        choices=("auto", "modern", "bare"),
        help="Authorization form: modern (Bearer/Thing, Mainflux 0.13), bare (0.12), auto",
    )
    ca_bundle: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_CA_BUNDLE"], keys=["server.ca_bundle"],
        flag="--ca-bundle", help="CA certificates to verify the servers' TLS certificates",
    )
    client_cert: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_CLIENT_CERT"], keys=["server.client_cert"],
        help="TLS client certificate for the HTTP calls",
    )
    client_key: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_CLIENT_KEY"], keys=["server.client_key"],
        help="key of the TLS client certificate",
    )
    insecure: bool = _setting(
        False, "bool", env=["EDGE_PROVISION_INSECURE"], keys=["server.insecure"],
        flag="--insecure", help="do NOT verify TLS certificates (lab use only)",
    )
    connect_timeout_s: float = _setting(
        5.0, "float", env=["EDGE_PROVISION_CONNECT_TIMEOUT"], keys=["server.connect_timeout_s"],
        minimum=0.1, maximum=300, help="TCP/TLS connect timeout in seconds",
    )
    read_timeout_s: float = _setting(
        30.0, "float", env=["EDGE_PROVISION_READ_TIMEOUT"], keys=["server.read_timeout_s"],
        minimum=0.1, maximum=3600, help="time to wait for a reply, in seconds",
    )
    interface: Optional[str] = _setting(
        None, "str", env=["EDGE_PROVISION_INTERFACE"], keys=["identity.interface"],
        flag="--interface", help="network interface whose MAC becomes the external_id",
    )
    external_id: Optional[str] = _setting(
        None, "str", env=["EDGE_PROVISION_EXTERNAL_ID"], keys=["identity.external_id"],
        flag="--external-id", help="override the MAC-derived external_id",
    )
    external_key: Optional[str] = _setting(
        None, "str", env=["EDGE_PROVISION_EXTERNAL_KEY"], keys=["identity.external_key"],
        flag="--external-key", secret=True,
        help="bootstrap secret (default: generated once and stored)",
    )
    mac_format: str = _setting(
        "colon-lower", "choice", env=["EDGE_PROVISION_MAC_FORMAT"], keys=["identity.mac_format"],
        choices=("colon-lower", "colon-upper", "plain-lower", "plain-upper", "dash-upper"),
        help="how the MAC is written as external_id",
    )
    id_prefix: str = _setting(
        "", "str", env=["EDGE_PROVISION_ID_PREFIX"], keys=["identity.prefix"],
        help="prefix put before the MAC in the external_id",
    )
    name: Optional[str] = _setting(
        None, "str", env=["EDGE_PROVISION_NAME"], keys=["identity.name"], flag="--name",
        help="thing name sent with /mapping",
    )
    secure_bootstrap: bool = _setting(
        False, "bool", env=["EDGE_PROVISION_SECURE_BOOTSTRAP"], keys=["bootstrap.secure"],
        help="use the encrypted bootstrap endpoint (AES-CFB, obfuscation only)",
    )
    encrypt_key: str = _setting(
        DEFAULT_ENCRYPT_KEY_HEX, "str",
        env=["EDGE_PROVISION_BOOTSTRAP_ENCRYPT_KEY", "MF_BOOTSTRAP_ENCRYPT_KEY"],
        keys=["bootstrap.encrypt_key"], secret=True,
        help="hex AES key of the secure bootstrap endpoint",
    )
    backoff_initial_s: float = _setting(
        2.0, "duration", env=["EDGE_PROVISION_BACKOFF_INITIAL"], keys=["agent.backoff_initial"],
        minimum=0.01, help="first retry delay",
    )
    backoff_cap_s: float = _setting(
        300.0, "duration", env=["EDGE_PROVISION_BACKOFF_CAP"], keys=["agent.backoff_cap"],
        minimum=0.1, help="longest retry delay",
    )
    permanent_retry_s: float = _setting(
        3600.0, "duration", env=["EDGE_PROVISION_PERMANENT_RETRY"],
        keys=["agent.permanent_retry"], minimum=1,
        help="retry delay after an error a human must fix",
    )
    mqtt_url: Optional[str] = _setting(
        None, "str", env=["EDGE_PROVISION_MQTT_URL"], keys=["mqtt.url"],
        help="broker URL (tcp://host:1883, ssl://host:8883); default: bootstrap content",
    )
    mqtt_verify: str = _setting(
        "auto", "choice", env=["EDGE_PROVISION_MQTT_VERIFY"], keys=["mqtt.verify"],
        choices=("auto", "always", "never"),
        help="check new credentials over MQTT before using them (auto: when a broker is known)",
    )
    mqtt_ca: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_MQTT_CA"], keys=["mqtt.ca"],
        help="CA for the broker's TLS certificate (default: the platform CA)",
    )
    mqtt_mtls: bool = _setting(
        False, "bool", env=["EDGE_PROVISION_MQTT_MTLS"], keys=["mqtt.mtls"],
        help="present the thing's client certificate to the broker",
    )
    mqtt_timeout_s: float = _setting(
        10.0, "duration", env=["EDGE_PROVISION_MQTT_TIMEOUT"], keys=["mqtt.timeout"],
        minimum=0.1, help="MQTT verification timeout",
    )
    control_listener: bool = _setting(
        False, "bool", env=["EDGE_PROVISION_CONTROL_LISTENER"], keys=["mqtt.control_listener"],
        help="listen on the control channel for renew/reprovision/status commands",
    )
    agent_config: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_AGENT_CONFIG"], keys=["handoff.agent_config"],
        help="write the Mainflux Agent's config.toml here",
    )
    agent_env: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_AGENT_ENV"], keys=["handoff.agent_env"],
        help="write an environment file for the Mainflux Agent's unit here",
    )
    export_config: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_EXPORT_CONFIG"], keys=["handoff.export_config"],
        help="write the Export service's config.toml here (when content has an export section)",
    )
    hooks_dir: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_HOOKS_DIR"], keys=["handoff.hooks_dir"],
        help="run every executable in this directory after a new generation",
    )
    hook_commands: tuple[str, ...] = _setting(
        (), "list", env=["EDGE_PROVISION_HOOK_COMMANDS"], keys=["handoff.commands"],
        help="commands run after a new generation (argv split like a shell)",
    )
    hook_timeout_s: float = _setting(
        60.0, "duration", env=["EDGE_PROVISION_HOOK_TIMEOUT"], keys=["handoff.timeout"],
        minimum=0.1, help="longest a deploy hook may run",
    )
    file_owner: Optional[str] = _setting(
        None, "str", env=["EDGE_PROVISION_FILE_OWNER"], keys=["handoff.owner"],
        help="owner of handed-off files",
    )
    file_group: Optional[str] = _setting(
        None, "str", env=["EDGE_PROVISION_FILE_GROUP"], keys=["handoff.group"],
        help="group of handed-off files",
    )
    file_mode: str = _setting(
        "0640", "str", env=["EDGE_PROVISION_FILE_MODE"], keys=["handoff.mode"],
        help="octal mode of handed-off files",
    )
    renew_before_s: Optional[float] = _setting(
        None, "duration", env=["EDGE_PROVISION_RENEW_BEFORE"], keys=["renewal.renew_before"],
        minimum=0, help="renew this long before expiry (default: at 2/3 of the lifetime)",
    )
    key_type: str = _setting(
        "ec", "choice", env=["EDGE_PROVISION_KEY_TYPE"], keys=["renewal.key_type"],
        choices=("ec", "rsa"), help="key type generated on the gateway",
    )
    key_bits: Optional[int] = _setting(
        None, "int", env=["EDGE_PROVISION_KEY_BITS"], keys=["renewal.key_bits"],
        help="key size (ec 256/384/521, rsa 2048/3072/4096)",
    )
    keep_generations: int = _setting(
        5, "int", env=["EDGE_PROVISION_KEEP_GENERATIONS"], keys=["renewal.keep_generations"],
        minimum=1, maximum=1000, help="how many credential generations to keep",
    )
    metrics_textfile: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_METRICS_TEXTFILE"], keys=["agent.metrics_textfile"],
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
        "127.0.0.1", "str", env=["EDGE_PROVISION_LAB_HOST"], flag="--host",
        help="address to listen on (only loopback unless you say otherwise)",
    )
    port: int = _setting(
        8190, "int", env=["MF_PROVISION_HTTP_PORT"], keys=["server.http_port"], flag="--port",
        minimum=0, maximum=65535, help="TCP port (0 = pick a free one)",
    )
    layout_file: Optional[Path] = _setting(
        None, "path", env=["MF_PROVISION_CONFIG_FILE"], flag="--layout",
        help="Mainflux provision config.toml (default: built-in layout)",
    )
    state_dir: Path = _setting(
        None, "path", env=["EDGE_PROVISION_LAB_STATE_DIR"], flag="--state-dir",
        help="database, CA and token of the lab server",
    )
    token: Optional[str] = _setting(
        None, "str", env=["MF_PROVISION_API_KEY"], keys=["server.mf_api_key"], flag="--token",
        secret=True, help="API key clients must present (default: generated at first start)",
    )
    log_level: str = _setting(
        "info", "choice", env=["MF_PROVISION_LOG_LEVEL"], keys=["server.log_level"],
        flag="--log-level", choices=LOG_LEVELS, help="log verbosity",
    )
    server_cert: Optional[Path] = _setting(
        None, "path", env=["MF_PROVISION_SERVER_CERT"], keys=["server.server_cert"],
        help="HTTPS certificate (HTTPS is on when certificate and key are set)",
    )
    server_key: Optional[Path] = _setting(
        None, "path", env=["MF_PROVISION_SERVER_KEY"], keys=["server.server_key"],
        secret=False, help="HTTPS private key",
    )
    x509_provision: Optional[bool] = _setting(
        None, "bool", env=["MF_PROVISION_X509_PROVISIONING"],
        help="issue a client certificate per thing in /mapping (default: layout)",
    )
    bs_provision: Optional[bool] = _setting(
        None, "bool", env=["MF_PROVISION_BS_CONFIG_PROVISIONING"],
        help="create a bootstrap config (default: layout)",
    )
    autowhite_list: Optional[bool] = _setting(
        None, "bool", env=["MF_PROVISION_BS_AUTO_WHITELIST"],
        help="connect things to channels at once (default: layout)",
    )
    cert_ttl_s: Optional[float] = _setting(
        None, "duration", env=["MF_PROVISION_CERTS_HOURS_VALID"], minimum=1,
        help="certificate validity, Go duration like 2400h or 30s (default: layout)",
    )
    cert_key_bits: Optional[int] = _setting(
        None, "int", env=["MF_PROVISION_CERTS_RSA_BITS"],
        help="key size of server-generated keys (default: layout)",
    )
    cert_key_type: Optional[str] = _setting(
        None, "choice", env=["EDGE_PROVISION_LAB_KEY_TYPE"], choices=("ec", "rsa"),
        help="key type of server-generated keys and of the CA (default: layout, else ec)",
    )
    encrypt_key_hex: str = _setting(
        DEFAULT_ENCRYPT_KEY_HEX, "str", env=["MF_BOOTSTRAP_ENCRYPT_KEY"],
        keys=["bootstrap.encrypt_key"], secret=True,
        help="hex AES key of the secure bootstrap endpoint",
    )
    max_body_bytes: int = _setting(
        65536, "int", env=["EDGE_PROVISION_LAB_MAX_BODY"], minimum=1024, maximum=16 << 20,
        help="largest accepted request body",
    )
    mqtt: bool = _setting(
        False, "bool", env=["EDGE_PROVISION_LAB_MQTT"], flag="--mqtt",
        help="run a mosquitto broker whose auth follows the provisioned things",
    )
    mqtt_port: int = _setting(
        1883, "int", env=["EDGE_PROVISION_LAB_MQTT_PORT"], flag="--mqtt-port",
        minimum=0, maximum=65535, help="mosquitto plain listener port (0 = pick one)",
    )
    mqtt_tls_port: Optional[int] = _setting(
        None, "int", env=["EDGE_PROVISION_LAB_MQTT_TLS_PORT"], flag="--mqtt-tls-port",
        minimum=0, maximum=65535, help="mosquitto TLS listener port with the lab CA",
    )
    mqtt_require_cert: bool = _setting(
        False, "bool", env=["EDGE_PROVISION_LAB_MQTT_REQUIRE_CERT"],
        flag="--mqtt-require-cert", help="TLS listener requires client certificates",
    )
    mosquitto_config_dir: Optional[Path] = _setting(
        None, "path", env=["EDGE_PROVISION_LAB_MOSQUITTO_CONFIG_DIR"],
        flag="--mosquitto-config-dir",
        help="only maintain password/ACL files here for a mosquitto you run yourself",
    )
    mosquitto_bin: str = _setting(
        "mosquitto", "str", env=["EDGE_PROVISION_LAB_MOSQUITTO_BIN"],
        help="mosquitto executable",
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


def _fmt(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def parse_duration_s(text: str) -> float:
    """Parse ``"90"``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2400h"``, ``"500ms"`` to seconds."""
    raw = text.strip()
    m = _DURATION_RE.match(raw)
    if m:
        return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    pos = 0
    total = 0.0
    for part in _DURATION_PART_RE.finditer(raw):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _UNIT_S[part.group(2)]
        pos = part.end()
    if pos == 0 or pos != len(raw):
        raise ValueError(
            f'expected a duration like "90s", "5m", "1h30m" or "2400h", got {_fmt(text)}'
        )
    return total


def _convert(spec: Field, raw: object, from_text: bool) -> object:
    """Turn a raw value (env text, or a TOML value) into the field's type; ValueError says why."""
    kind = spec.kind
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and from_text:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        raise ValueError(f"expected true or false, got {_fmt(raw)}")
    if kind == "int":
        if isinstance(raw, bool):
            raise ValueError(f"expected an integer, got {_fmt(raw)}")
        if isinstance(raw, int):
            value: float = raw
        elif isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            value = int(raw.strip())
        else:
            raise ValueError(f"expected an integer, got {_fmt(raw)}")
        _check_range(spec, value)
        return int(value)
    if kind in ("float", "duration"):
        if isinstance(raw, bool):
            raise ValueError(f"expected a number of seconds, got {_fmt(raw)}")
        if isinstance(raw, (int, float)):
            value = float(raw)
        elif isinstance(raw, str):
            if kind == "duration":
                value = parse_duration_s(raw)
            else:
                try:
                    value = float(raw.strip())
                except ValueError:
                    raise ValueError(f"expected a number, got {_fmt(raw)}") from None
        else:
            raise ValueError(f"expected a number of seconds, got {_fmt(raw)}")
        _check_range(spec, value)
        return value
    if kind == "list":
        if isinstance(raw, str):
            parts = [p.strip() for p in raw.split(";")] if from_text else [raw]
            return tuple(p for p in parts if p)
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise ValueError(f"expected a list of strings, got {_fmt(raw)}")
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {_fmt(raw)}")
    if kind == "path":
        if not raw.strip():
            raise ValueError("expected a path, got an empty string")
        return Path(raw).expanduser()
    if kind == "url":
        url = urlsplit(raw.strip())
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(
                f"expected an http(s) URL like http://127.0.0.1:8190, got {_fmt(raw)}"
            )
        return raw.strip().rstrip("/")
    if kind == "choice":
        low = raw.strip().lower()
        if low not in spec.choices:
            raise ValueError(f"expected one of {', '.join(spec.choices)}, got {_fmt(raw)}")
        return low
    return raw


def _check_range(spec: Field, value: float) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"must be at least {spec.minimum:g}, got {value:g}")
    if spec.maximum is not None and value > spec.maximum:
        raise ValueError(f"must be at most {spec.maximum:g}, got {value:g}")


def _key_line(text: str, dotted: str) -> int | None:
    """Best-effort line number of ``section.key = ...`` in TOML ``text``."""
    section, _, key = dotted.rpartition(".")
    current = ""
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    assign = re.compile(r"^\s*(\"?)([A-Za-z0-9_\-]+)\1\s*=")
    for lineno, line in enumerate(text.splitlines(), start=1):
        hm = header.match(line)
        if hm:
            current = hm.group(1).replace(" ", "")
            continue
        am = assign.match(line)
        if am and am.group(2) == key and current == section:
            return lineno
    return None


def _lookup(doc: Mapping[str, object], dotted: str) -> tuple[bool, object]:
    node: object = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


class _FileDoc:
    """A parsed TOML config file with its text (for line numbers)."""

    def __init__(self, path: Path | None, doc: Mapping[str, object], text: str) -> None:
        self.path = path
        self.doc = doc
        self.text = text

    def where(self, key: str) -> tuple[str, int | None]:
        return (str(self.path) if self.path else "<config>"), _key_line(self.text, key)


def _read_toml(path: Path, what: str) -> _FileDoc:
    try:
        text = _fs.read_text(path, what)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            Problem(
                f"invalid TOML: {msg}",
                source=str(path),
                line=int(m.group(1)) if m else None,
                column=int(m.group(2)) if m else None,
            )
        ) from None
    return _FileDoc(path, doc, text)


def _read_secret_file(path_text: str) -> str:
    try:
        return _fs.read_text(Path(path_text).expanduser(), "secret file").rstrip("\r\n")
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _resolve(
    cls: type[S],
    flags: Mapping[str, object],
    env: Mapping[str, str],
    filedoc: _FileDoc | None,
    state_kind: str,
    known_keys_strict: bool,
) -> S:
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    problems: list[Problem] = []
    for spec in fields_of(cls):
        value, source = _resolve_one(spec, flags, env, filedoc, problems)
        if source is None:
            value = spec.default
            if spec.name == "state_dir" and value is None:
                value = _default_state_dir(state_kind)
            source = "default"
        values[spec.name] = value
        sources[spec.name] = source
    if filedoc is not None and known_keys_strict:
        problems.extend(_unknown_keys(cls, filedoc))
    if problems:
        raise ConfigError(problems)
    return cls(**values, config_file=filedoc.path if filedoc else None, sources=sources)  # type: ignore[arg-type]


def _resolve_one(
    spec: Field,
    flags: Mapping[str, object],
    env: Mapping[str, str],
    filedoc: _FileDoc | None,
    problems: list[Problem],
) -> tuple[object, str | None]:
    flag_value = flags.get(spec.name)
    if flag_value is not None and flag_value != ():
        label = f"flag {spec.flag or '--' + spec.name.replace('_', '-')}"
        try:
            raw_flag = str(flag_value) if isinstance(flag_value, Path) else flag_value
            return _convert(spec, raw_flag, True), label
        except ValueError as exc:
            problems.append(Problem(str(exc), source=label))
            return None, label
    for name in spec.env:
        candidates = [(name, False)]
        if spec.secret:
            candidates.append((name + "_FILE", True))
        for var, is_file in candidates:
            raw = env.get(var, "")
            if raw == "":
                continue
            label = f"env {var}"
            try:
                text = _read_secret_file(raw) if is_file else raw
                return _convert(spec, text, True), label
            except ValueError as exc:
                problems.append(Problem(str(exc), source=label))
                return None, label
    if filedoc is not None:
        for key in spec.keys:
            candidates2 = [(key, False)]
            if spec.secret:
                candidates2.append((key + "_file", True))
            for k, is_file in candidates2:
                found, raw_value = _lookup(filedoc.doc, k)
                if not found:
                    continue
                src, line = filedoc.where(k)
                label = f"{src}:{line} {k}" if line else f"{src} {k}"
                if raw_value == "" and spec.kind not in ("str", "list"):
                    return None, None  # upstream writes "" for "unset" everywhere
                try:
                    if is_file:
                        if not isinstance(raw_value, str):
                            raise ValueError(f"expected a path, got {_fmt(raw_value)}")
                        raw_value = _read_secret_file(raw_value)
                    return _convert(spec, raw_value, is_file), label
                except ValueError as exc:
                    problems.append(Problem(str(exc), path=k, source=src, line=line))
                    return None, label
    return None, None


def _unknown_keys(cls: type[S], filedoc: _FileDoc) -> list[Problem]:
    known: set[str] = set()
    for spec in fields_of(cls):
        for key in spec.keys:
            known.add(key)
            if spec.secret:
                known.add(key + "_file")
    sections = sorted({k.split(".")[0] for k in known})
    problems = []
    for section, table in filedoc.doc.items():
        if not isinstance(table, Mapping):
            src, line = filedoc.where(section)
            problems.append(
                Problem(f"unknown top-level key; expected one of the sections "
                        f"[{'], ['.join(sections)}]", path=section, source=src, line=line)
            )
            continue
        for key in table:
            dotted = f"{section}.{key}"
            if dotted not in known:
                src, line = filedoc.where(dotted)
                choices = sorted(k.split(".", 1)[1] for k in known if k.startswith(section + "."))
                hint = (f"known keys in [{section}]: {', '.join(choices)}" if choices
                        else f"known sections: [{'], ['.join(sections)}]")
                problems.append(Problem(f"unknown setting; {hint}", path=dotted, source=src,
                                        line=line))
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
    filedoc = None
    if explicit or path.exists():
        filedoc = _read_toml(path, "config file")
    return _resolve(AgentSettings, flags, env, filedoc, "agent", known_keys_strict=True)


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
    layout_path, _ = _resolve_one(layout_spec, flags, env, None, problems)
    if problems:
        raise ConfigError(problems)
    filedoc = _read_toml(layout_path, "layout file") if isinstance(layout_path, Path) else None
    return _resolve(LabSettings, flags, env, filedoc, "lab", known_keys_strict=False)


def describe(settings: AgentSettings | LabSettings) -> list[dict[str, object]]:
    """Each setting with its value (secrets shown as ``<set>``) and source, for ``--verbose``."""
    rows: list[dict[str, object]] = []
    for spec in fields_of(type(settings)):
        value: object = getattr(settings, spec.name)
        if spec.secret and value:
            value = "<set>"
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        rows.append({"name": spec.name, "value": value, "source": settings.source_of(spec.name)})
    return rows


StrOrPath = Union[str, Path]
