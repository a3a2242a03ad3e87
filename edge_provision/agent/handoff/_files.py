"""Rendering of handed-off files (for :mod:`edge_provision.agent.handoff`, which re-exports it).

A tiny TOML writer (no dependency) and the Mainflux Agent / Export configurations built
from a stored generation. Pure apart from reading the generation's own files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_provision.agent.store import Generation
from edge_provision.settings import AgentSettings

__all__ = [
    "channel_ids",
    "render_agent_config",
    "render_agent_env",
    "render_export_config",
    "stable_paths",
    "to_toml",
]

logger = logging.getLogger(__name__)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_DEFAULT_MQTT_URL = "localhost:1883"


# --------------------------------------------------------------------------- TOML


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_str(key)


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: object, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{where}: TOML cannot hold {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(
            f"{_toml_key(str(k))} = {_toml_value(v, where)}" for k, v in value.items()
        )
        return "{" + inner + "}"
    raise ValueError(f"{where}: cannot write a {type(value).__name__} as TOML")


def _is_table_array(value: object) -> bool:
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def _emit(doc: Mapping[str, object], prefix: tuple[str, ...], lines: list[str]) -> None:
    scalars = [
        (k, v)
        for k, v in doc.items()
        if v is not None and not isinstance(v, Mapping) and not _is_table_array(v)
    ]
    for key, value in scalars:
        lines.append(f"{_toml_key(str(key))} = {_toml_value(value, '.'.join((*prefix, key)))}")
    for key, value in doc.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
            _emit(value, path, lines)
        elif _is_table_array(value):
            assert isinstance(value, (list, tuple))
            for item in value:
                lines.append("")
                lines.append("[[" + ".".join(_toml_key(p) for p in path) + "]]")
                _emit(item, path, lines)


def to_toml(doc: Mapping[str, object]) -> str:
    """Serialize a JSON-like mapping as TOML (tables, arrays of tables, scalars, lists).

    ``None`` values are left out; ``ValueError`` for values TOML cannot hold.
    """
    lines: list[str] = []
    _emit(doc, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


# --------------------------------------------------------------------------- rendering


def _content(generation: Generation) -> dict[str, object]:
    text = generation.bootstrap_content.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        logger.warning("bootstrap content is not JSON generation=%s", generation.number)
        return {}
    return value if isinstance(value, dict) else {}


def _section(doc: Mapping[str, object], *names: str) -> dict[str, object]:
    node: object = doc
    for name in names:
        node = node.get(name) if isinstance(node, Mapping) else None
    return dict(node) if isinstance(node, Mapping) else {}


def _text(value: object, default: str) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, (int, float)):
        return str(value)
    return default


def _duration(value: object, default: str) -> str:
    """A Go duration string; a bare number is nanoseconds (as the Agent reads it)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return f"{value / 1e9:g}s"
    return default


def channel_ids(generation: Generation) -> dict[str, str]:
    """Channel id by ``metadata.type`` (first of each type; never by position)."""
    found: dict[str, str] = {}
    for channel in generation.channels:
        kind = channel.metadata.get("type")
        if isinstance(kind, str) and kind not in found:
            found[kind] = channel.id
    return found


@dataclass(frozen=True)
class StablePaths:
    cert: str
    key: str
    ca: str


def stable_paths(settings: AgentSettings, generation: Generation) -> StablePaths:
    """Paths of the gateway's files through the ``current`` link ("" when absent)."""
    link = Path(settings.state_dir) / "current"
    gateway = generation.gateway_thing_id
    has_cert = gateway in generation.certificates
    ca = str(settings.mqtt_ca) if settings.mqtt_ca else (
        str(link / "ca.crt") if generation.has_ca else ""
    )
    return StablePaths(
        cert=str(link / f"{gateway}.crt") if has_cert else "",
        key=str(link / f"{gateway}.key") if has_cert else "",
        ca=ca,
    )


def _mqtt_url(settings: AgentSettings, content: Mapping[str, object]) -> str:
    return settings.mqtt_url or _text(_section(content, "agent", "mqtt").get("url"), "") or (
        _DEFAULT_MQTT_URL
    )


def render_agent_config(
    settings: AgentSettings, generation: Generation, config_path: Path | None = None
) -> str:
    """The Mainflux Agent's ``config.toml`` for ``generation`` (contract section 8.2)."""
    content = _content(generation)
    agent = _section(content, "agent")
    server, mqtt = _section(agent, "server"), _section(agent, "mqtt")
    thing = generation.gateway_thing
    ids = channel_ids(generation)
    paths = stable_paths(settings, generation)
    pem = generation.read_certificate(thing.id) or ("", "")
    ca_pem = ""
    if generation.ca_path is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            ca_pem = generation.ca_path.read_text("utf-8")
    server_doc: dict[str, object] = {
        "port": _text(server.get("port"), "9000"),
        "nats_url": _text(server.get("nats_url"), "nats://localhost:4222"),
    }
    if server.get("broker_url"):
        server_doc["broker_url"] = _text(server.get("broker_url"), "")
    qos = mqtt.get("qos", 0)
    doc: dict[str, object] = {
        "File": str(config_path or settings.agent_config or "config.toml"),
        "server": server_doc,
        "channels": {"control": ids.get("control", ""), "data": ids.get("data", "")},
        "edgex": {"url": _text(_section(agent, "edgex").get("url"),
                               "http://localhost:48090/api/v1/")},
        "log": {"level": _text(_section(agent, "log").get("level"), "info")},
        "mqtt": {
            "url": _mqtt_url(settings, content),
            "username": thing.id,
            "password": thing.key,
            "mtls": bool(settings.mqtt_mtls or mqtt.get("mtls") is True),
            "skip_tls_ver": False,
            "retain": mqtt.get("retain") is True,
            "qos": qos if isinstance(qos, int) and not isinstance(qos, bool) else 0,
            "ca_path": paths.ca,
            "cert_path": paths.cert,
            "priv_key_path": paths.key,
            "client_cert": pem[0],
            "client_key": pem[1],
            "ca_cert": ca_pem,
        },
        "heartbeat": {"interval": _duration(_section(agent, "heartbeat").get("interval"),
                                            "10s")},
        "terminal": {"session_timeout": _duration(
            _section(agent, "terminal").get("session_timeout"), "60s")},
    }  # fmt: skip
    return to_toml(doc)


def _env_line(name: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError(f"{name}: value contains a line break")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def render_agent_env(settings: AgentSettings, generation: Generation) -> str:
    """An ``EnvironmentFile`` for the Mainflux Agent's unit (``MF_AGENT_*``)."""
    content = _content(generation)
    agent = _section(content, "agent")
    mqtt = _section(agent, "mqtt")
    thing = generation.gateway_thing
    ids = channel_ids(generation)
    paths = stable_paths(settings, generation)
    values: list[tuple[str, str]] = [
        ("MF_AGENT_BOOTSTRAP_RETRIES", "0"),
        ("MF_AGENT_MQTT_USERNAME", thing.id),
        ("MF_AGENT_MQTT_PASSWORD", thing.key),
        ("MF_AGENT_CONTROL_CHANNEL", ids.get("control", "")),
        ("MF_AGENT_DATA_CHANNEL", ids.get("data", "")),
        ("MF_AGENT_MQTT_URL", _mqtt_url(settings, content)),
        ("MF_AGENT_MQTT_MTLS", "true" if settings.mqtt_mtls or mqtt.get("mtls") is True
         else "false"),
    ]  # fmt: skip
    if settings.agent_config is not None:
        values.append(("MF_AGENT_CONFIG_FILE", str(settings.agent_config)))
    for name, value in (
        ("MF_AGENT_MQTT_CA", paths.ca),
        ("MF_AGENT_MQTT_CLIENT_CERT", paths.cert),
        ("MF_AGENT_MQTT_CLIENT_PK", paths.key),
    ):
        if value:
            values.append((name, value))
    optional = (
        ("MF_AGENT_LOG_LEVEL", _section(agent, "log").get("level")),
        ("MF_AGENT_HTTP_PORT", _section(agent, "server").get("port")),
        ("MF_AGENT_NATS_URL", _section(agent, "server").get("nats_url")),
        ("MF_AGENT_EDGEX_URL", _section(agent, "edgex").get("url")),
        ("MF_AGENT_MQTT_QOS", mqtt.get("qos")),
        ("MF_AGENT_HEARTBEAT_INTERVAL", _section(agent, "heartbeat").get("interval")),
        ("MF_AGENT_TERMINAL_SESSION_TIMEOUT", _section(agent, "terminal").get("session_timeout")),
    )
    for name, raw in optional:
        if raw is None or raw == "" or isinstance(raw, (bool, dict, list)):
            continue
        values.append((name, _duration(raw, "") if "INTERVAL" in name or "TIMEOUT" in name
                       else _text(raw, "")))  # fmt: skip
    if mqtt.get("retain") is True:
        values.append(("MF_AGENT_MQTT_RETAIN", "true"))
    header = (
        f"# written by edge-provision for generation {generation.number}; do not edit\n"
        "# (the Mainflux Agent rewrites its config.toml from these variables at start)\n"
    )
    return header + "\n".join(_env_line(n, v) for n, v in values) + "\n"


def render_export_config(
    settings: AgentSettings, generation: Generation, config_path: Path | None = None
) -> str | None:
    """The Export service's ``config.toml``, or ``None`` if the content has no ``export``."""
    content = _content(generation)
    export = content.get("export")
    if not isinstance(export, Mapping) or not export:
        return None
    doc: dict[str, object] = copy.deepcopy(dict(export))
    thing = generation.gateway_thing
    paths = stable_paths(settings, generation)
    pem = generation.read_certificate(thing.id) or ("", "")
    mqtt_raw = doc.get("mqtt")
    mqtt: dict[str, object] = dict(mqtt_raw) if isinstance(mqtt_raw, Mapping) else {}
    fill = {
        "username": thing.id,
        "password": thing.key,
        "ca_path": paths.ca,
        "client_cert_path": paths.cert,
        "client_priv_key_path": paths.key,
        "client_cert": pem[0],
        "client_cert_key": pem[1],
    }
    for key, value in fill.items():
        if not mqtt.get(key) and value:
            mqtt[key] = value
    doc["mqtt"] = mqtt
    data_id = channel_ids(generation).get("data", "")
    routes = doc.get("routes")
    if isinstance(routes, list):
        filled = []
        for route in routes:
            item = dict(route) if isinstance(route, Mapping) else route
            if isinstance(item, dict) and not item.get("mqtt_topic") and data_id:
                item["mqtt_topic"] = f"channels/{data_id}/messages"
            filled.append(item)
        doc["routes"] = filled
    path = config_path or settings.export_config
    ordered: dict[str, object] = {"File": str(path)} if path and "File" not in doc else {}
    ordered.update(doc)
    return to_toml(ordered)
