"""Settings: precedence flag > env > file > default, sources, secrets as files, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import edge_provision.settings as settings_pkg
from edge_provision.duration import MAX_NS, NS_PER_S, format_duration
from edge_provision.errors import ConfigError
from edge_provision.settings import (
    AgentSettings,
    Field,
    FieldKind,
    LabSettings,
    describe,
    fields_of,
    load_agent_settings,
    load_lab_settings,
)

URL_FILE = "http://file.example:8190"
URL_ENV = "http://env.example:8190"
URL_FLAG = "http://flag.example:8190"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("use_flag", "use_env", "use_file", "expected", "source_prefix"),
    [
        (True, True, True, URL_FLAG, "flag --provision-url"),
        (False, True, True, URL_ENV, "env EDGE_PROVISION_PROVISION_URL"),
        (False, False, True, URL_FILE, "config.toml:2 server.url"),
        (False, False, False, None, "default"),
    ],
)
def test_precedence_flag_env_file_default(
    tmp_path: Path, use_flag: bool, use_env: bool, use_file: bool,
    expected: str | None, source_prefix: str,
) -> None:
    """Each layer wins over the ones below it, and the source says which layer it was."""
    cfg = _config(tmp_path, f'[server]\nurl = "{URL_FILE}"\n') if use_file else None
    env = {"EDGE_PROVISION_PROVISION_URL": URL_ENV} if use_env else {}
    flags = {"provision_url": URL_FLAG} if use_flag else {}
    settings = load_agent_settings(flags, env, cfg)
    assert settings.provision_url == expected
    source = settings.source_of("provision_url")
    assert source.endswith(source_prefix) if use_file and not (use_flag or use_env) else (
        source == source_prefix)


def test_every_field_has_an_env_var_and_unique_names() -> None:
    """The table is complete: every agent field can be set from the environment, no clashes."""
    agent = fields_of(AgentSettings)
    assert all(f.env for f in agent)
    envs = [e for f in agent for e in f.env]
    assert len(envs) == len(set(envs))
    required = {
        "EDGE_PROVISION_STATE_DIR", "EDGE_PROVISION_PROVISION_URL", "EDGE_PROVISION_BOOTSTRAP_URL",
        "EDGE_PROVISION_TOKEN", "EDGE_PROVISION_INTERFACE", "EDGE_PROVISION_EXTERNAL_ID",
        "EDGE_PROVISION_EXTERNAL_KEY", "EDGE_PROVISION_LOG_LEVEL",
    }
    assert required <= set(envs)


def test_secret_from_env_file(tmp_path: Path) -> None:
    """EDGE_PROVISION_TOKEN_FILE supplies the token; trailing newline stripped."""
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-token\n", encoding="utf-8")
    settings = load_agent_settings({}, {"EDGE_PROVISION_TOKEN_FILE": str(secret)}, None)
    assert settings.token == "s3cr3t-token"
    assert settings.source_of("token") == "env EDGE_PROVISION_TOKEN_FILE"


def test_secret_from_config_key_file(tmp_path: Path) -> None:
    """server.token_file in the config file supplies the token."""
    secret = tmp_path / "token"
    secret.write_text("from-file", encoding="utf-8")
    cfg = _config(tmp_path, f'[server]\ntoken_file = "{secret}"\n')
    settings = load_agent_settings({}, {}, cfg)
    assert settings.token == "from-file"


def test_missing_secret_file_is_config_error(tmp_path: Path) -> None:
    """A *_FILE pointing nowhere names the variable and the path."""
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {"EDGE_PROVISION_EXTERNAL_KEY_FILE": str(tmp_path / "nope")}, None)
    assert "env EDGE_PROVISION_EXTERNAL_KEY_FILE" in str(info.value)
    assert "not found" in str(info.value)


def test_bad_values_all_reported_with_file_and_line(tmp_path: Path) -> None:
    """Every bad value in a file is reported at once, with file, line, key and expectation."""
    cfg = _config(
        tmp_path,
        '[server]\nurl = "localhost"\ninsecure = "maybe"\n[agent]\nlog_level = "loud"\n'
        "backoff_cap = -3\n",
    )
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {}, cfg)
    text = str(info.value)
    assert f'{cfg}:2: server.url: expected an http(s) URL' in text
    assert 'got "localhost"' in text
    assert f"{cfg}:3: server.insecure: expected true or false" in text
    assert f"{cfg}:5: agent.log_level: expected one of debug, info, warning, error" in text
    assert f"{cfg}:6: agent.backoff_cap: must be at least" in text
    assert len(info.value.problems) == 4


def test_unknown_key_is_an_error_with_the_known_ones(tmp_path: Path) -> None:
    """A typo in the agent config is caught and the valid keys are listed."""
    cfg = _config(tmp_path, '[server]\nurll = "http://x"\n')
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {}, cfg)
    assert "server.urll: unknown setting; known keys in [server]:" in str(info.value)
    assert "url" in str(info.value)


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    """Malformed TOML reports the line and column."""
    cfg = _config(tmp_path, '[server]\nurl = "http://x\n')
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {}, cfg)
    problem = info.value.problems[0]
    assert problem.line == 2
    assert problem.column is not None
    assert "invalid TOML" in problem.message


@pytest.mark.parametrize("content", [b"\xff\xfe[server]\n", None])
def test_unreadable_config_files(tmp_path: Path, content: bytes | None) -> None:
    """Non-UTF-8 files and directories give a ConfigError, not a traceback."""
    path = tmp_path / "cfg"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {}, path)
    assert str(path) in str(info.value)


def test_explicit_missing_config_is_an_error(tmp_path: Path) -> None:
    """--config naming a missing file fails; the default path may be absent."""
    with pytest.raises(ConfigError, match="not found"):
        load_agent_settings({}, {"EDGE_PROVISION_CONFIG": str(tmp_path / "missing.toml")}, None)
    settings = load_agent_settings({}, {"CONFIGURATION_DIRECTORY": str(tmp_path)}, None)
    assert settings.config_file is None


def test_empty_env_counts_as_unset() -> None:
    """An empty variable falls through to the next layer (as Mainflux's Env() does)."""
    settings = load_agent_settings({}, {"EDGE_PROVISION_LOG_LEVEL": ""}, None)
    assert settings.log_level == "info"
    assert settings.source_of("log_level") == "default"


def test_state_dir_defaults_to_systemd_state_directory(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """$STATE_DIRECTORY set by systemd is the default state dir."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    settings = load_agent_settings({}, {}, None)
    assert settings.state_dir == tmp_path / "state"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("90", 90), ("1h30m", 5400), ("1d", 86400), ("1.5h", 5400), ("500ms", 0.5)],
)
def test_duration_settings_use_the_one_grammar(text: str, seconds: float) -> None:
    """Duration settings read Go durations, ``d`` and bare seconds."""
    settings = load_agent_settings({}, {"EDGE_PROVISION_BACKOFF_CAP": text}, None)
    assert settings.backoff_cap_s == seconds


def test_duration_settings_from_the_file_take_strings_and_numbers(tmp_path: Path) -> None:
    """In config.toml a duration is a string ("5m") or a number of seconds (300)."""
    cfg = _config(tmp_path, '[agent]\nbackoff_cap = "5m"\nmin_rerun = 90\n')
    settings = load_agent_settings({}, {}, cfg)
    assert (settings.backoff_cap_s, settings.min_rerun_s) == (300, 90)
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {"EDGE_PROVISION_BACKOFF_CAP": "soon"}, None)
    assert str(info.value).startswith(
        'env EDGE_PROVISION_BACKOFF_CAP: invalid duration "soon": no number before "soon"'
    )
    assert 'expected a duration like "2400h" or "90s"' in str(info.value)


def test_huge_permanent_retry_is_a_config_error_naming_the_bound() -> None:
    """EDGE_PROVISION_PERMANENT_RETRY=100000000h is refused at load time (was an OverflowError)."""
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {"EDGE_PROVISION_PERMANENT_RETRY": "100000000h"}, None)
    assert str(info.value) == (
        "env EDGE_PROVISION_PERMANENT_RETRY: must be at most 7d, got 100000000h"
    )
    assert info.value.exit_code == 2


def test_bounds_in_the_file_name_file_line_and_key(tmp_path: Path) -> None:
    """A duration out of bounds in config.toml names file:line, key, bound and value."""
    cfg = _config(tmp_path, '[agent]\npermanent_retry = "8d"\nbackoff_initial = "1ms"\n')
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {}, cfg)
    assert set(str(info.value).splitlines()) == {
        f"{cfg}:2: agent.permanent_retry: must be at most 7d, got 8d",
        f"{cfg}:3: agent.backoff_initial: must be at least 10ms, got 1ms",
    }


def _numeric_fields() -> list[Field]:
    numeric = (FieldKind.INT, FieldKind.FLOAT, FieldKind.DURATION)
    return [f for cls in (AgentSettings, LabSettings) for f in fields_of(cls)
            if f.kind in numeric]


def test_every_number_and_duration_setting_has_bounds() -> None:
    """Each number/duration setting has a minimum and a maximum (durations within Go's)."""
    for spec in _numeric_fields():
        assert spec.minimum is not None and spec.maximum is not None, spec.name
        assert spec.minimum <= spec.maximum, spec.name
        if spec.kind is FieldKind.DURATION:
            assert spec.maximum * NS_PER_S <= MAX_NS, spec.name


def _text_of(spec: Field, value: float, nudge: int) -> str:
    """``value`` (+ ``nudge`` smallest steps: 1 for integers, 1 ms otherwise) as env text."""
    if spec.kind is FieldKind.INT:
        return str(int(value) + nudge)
    if spec.kind is FieldKind.DURATION:
        return format_duration(round(value * NS_PER_S) + nudge * 10**6)
    return repr(value + nudge / 1000)


@pytest.mark.parametrize("spec", _numeric_fields(), ids=lambda f: f.name)
def test_each_bound_is_enforced_and_named(spec: Field) -> None:
    """The bounds are inclusive; one step outside is an error naming the bound and the value."""
    assert spec.minimum is not None and spec.maximum is not None
    env_var = spec.env[0]
    load = load_agent_settings if spec in fields_of(AgentSettings) else load_lab_settings
    for bound in (spec.minimum, spec.maximum):
        settings = load({}, {env_var: _text_of(spec, bound, 0)})
        assert getattr(settings, spec.name) == bound
    for nudge, word, bound in ((-1, "least", spec.minimum), (1, "most", spec.maximum)):
        if spec.kind is FieldKind.DURATION and bound + nudge / 1000 < 0:
            continue  # below a minimum of 0s is a negative duration (tested in test_duration)
        text = _text_of(spec, bound, nudge)
        with pytest.raises(ConfigError) as info:
            load({}, {env_var: text})
        assert str(info.value) == f"env {env_var}: must be at {word} {spec.show(bound)}, got {text}"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "9" * 400])
def test_non_finite_numbers_are_refused(value: str, tmp_path: Path) -> None:
    """nan, inf and integers beyond a float are refused, from the environment or from TOML."""
    with pytest.raises(ConfigError, match="expected a finite number"):
        load_agent_settings({}, {"EDGE_PROVISION_CONNECT_TIMEOUT": value}, None)
    cfg = _config(tmp_path, f"[agent]\nbackoff_cap = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {}, cfg)
    assert f"{cfg}:2: agent.backoff_cap: expected a duration" in str(info.value)


@pytest.mark.parametrize(
    ("text", "mode"), [('"0600"', 0o600), ('"640"', 0o640), ('"0o750"', 0o750), ('"0"', 0)]
)
def test_handoff_mode_is_read_as_an_octal_int(tmp_path: Path, text: str, mode: int) -> None:
    """handoff.mode is octal text, read into an int at load time."""
    settings = load_agent_settings({}, {}, _config(tmp_path, f"[handoff]\nmode = {text}\n"))
    assert settings.file_mode == mode
    assert load_agent_settings({}, {}, None).file_mode == 0o640
    assert load_agent_settings({}, {"EDGE_PROVISION_FILE_MODE": "0600"}, None).file_mode == 0o600


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('"0999"', 'expected an octal file mode like "0640", got "0999"'),
        ('"rw-r-----"', 'expected an octal file mode like "0640", got "rw-r-----"'),
        ('""', None),
        ('"1777"', 'must be an octal mode from 0000 to 0777, got "1777"'),
        ("416", 'expected an octal file mode as a string like "0640", got 416'),
    ],
)
def test_bad_handoff_mode_is_a_config_error_at_load_time(
    tmp_path: Path, text: str, fragment: str | None
) -> None:
    """A bad handoff.mode fails when the settings load, naming file:line (not at hand-off)."""
    cfg = _config(tmp_path, f"[handoff]\nmode = {text}\n")
    if fragment is None:  # "" means unset, as everywhere upstream
        assert load_agent_settings({}, {}, cfg).file_mode == 0o640
        return
    with pytest.raises(ConfigError) as info:
        load_agent_settings({}, {}, cfg)
    assert str(info.value) == f"{cfg}:2: handoff.mode: {fragment}"


def test_every_kind_has_a_converter() -> None:
    """The converter table covers every FieldKind, and every field uses a FieldKind."""
    from edge_provision.settings import _parse

    assert set(_parse._CONVERTERS) == set(FieldKind)
    for cls in (AgentSettings, LabSettings):
        assert all(isinstance(f.kind, FieldKind) for f in fields_of(cls))


def test_public_names_do_not_leak_private_helpers() -> None:
    """The settings package exports its API and no helper of its private module."""
    assert set(settings_pkg.__all__) == {
        "AgentSettings", "LabSettings", "load_agent_settings", "load_lab_settings", "describe",
        "fields_of", "Field", "FieldKind", "DEFAULT_AGENT_CONFIG", "DEFAULT_ENCRYPT_KEY_HEX",
    }
    for helper in ("resolve_one", "read_toml", "FileDoc", "parse_duration_s"):
        assert not hasattr(settings_pkg, helper), helper


def test_describe_hides_secrets() -> None:
    """describe() shows where each value came from but never a secret's value."""
    settings = load_agent_settings({}, {"EDGE_PROVISION_TOKEN": "hunter22"}, None)
    rows = {r["name"]: r for r in describe(settings)}
    assert rows["file_mode"]["value"] == "0640"
    assert rows["token"]["value"] == "<set>"
    assert rows["token"]["source"] == "env EDGE_PROVISION_TOKEN"
    assert "hunter22" not in repr(describe(settings))


def test_lab_reads_mainflux_env_vars() -> None:
    """The lab server honours MF_PROVISION_* variables."""
    lab = load_lab_settings({}, {
        "MF_PROVISION_HTTP_PORT": "9190",
        "MF_PROVISION_API_KEY": "api-key-1",
        "MF_PROVISION_X509_PROVISIONING": "True",
        "MF_PROVISION_BS_AUTO_WHITELIST": "f",
        "MF_PROVISION_CERTS_HOURS_VALID": "30s",
        "MF_PROVISION_CERTS_RSA_BITS": "2048",
        "MF_BOOTSTRAP_ENCRYPT_KEY": "00112233445566778899aabbccddeeff",
    })
    assert (lab.port, lab.token, lab.x509_provision, lab.autowhite_list) == (
        9190, "api-key-1", True, False)
    assert lab.cert_ttl_s == 30
    assert lab.cert_key_bits == 2048
    assert lab.encrypt_key_hex == "00112233445566778899aabbccddeeff"
    assert lab.source_of("port") == "env MF_PROVISION_HTTP_PORT"
    assert lab.x509_provision is not None and lab.bs_provision is None


def test_lab_reads_server_keys_from_the_layout_file(tmp_path: Path) -> None:
    """[server] http_port (a string upstream) and mf_api_key come from the layout file."""
    layout = _config(tmp_path, '[server]\nhttp_port = "8291"\nmf_api_key = "k"\nLogLevel = "x"\n')
    lab = load_lab_settings({}, {"MF_PROVISION_CONFIG_FILE": str(layout)})
    assert lab.port == 8291
    assert lab.token == "k"
    assert lab.layout_file == layout
    assert lab.source_of("port") == f"{layout}:2 server.http_port"
    flagged = load_lab_settings({"port": 7000}, {"MF_PROVISION_CONFIG_FILE": str(layout),
                                                 "MF_PROVISION_HTTP_PORT": "7001"})
    assert flagged.port == 7000


def test_lab_bad_values(tmp_path: Path) -> None:
    """Bad lab values name their variable."""
    with pytest.raises(ConfigError) as info:
        load_lab_settings({}, {"MF_PROVISION_HTTP_PORT": "http", "MF_PROVISION_X509_PROVISIONING":
                               "sure"})
    text = str(info.value)
    assert "env MF_PROVISION_HTTP_PORT: expected an integer" in text
    assert "env MF_PROVISION_X509_PROVISIONING: expected true or false" in text
    for bad in ("--5", "1_000", "\u0663", "80.0"):
        with pytest.raises(ConfigError) as bad_info:
            load_lab_settings({}, {"MF_PROVISION_HTTP_PORT": bad})
        expected = f'env MF_PROVISION_HTTP_PORT: expected an integer, got "{bad}"'
        assert str(bad_info.value) == expected


def test_lab_defaults_listen_on_loopback() -> None:
    """Nothing listens beyond 127.0.0.1 unless configured to."""
    lab = load_lab_settings({}, {})
    assert lab.host == "127.0.0.1"
    assert lab.port == 8190
    assert isinstance(lab, LabSettings)


def test_shipped_example_config_is_valid_when_every_key_is_uncommented(tmp_path: Path) -> None:
    """configs/config.toml documents only real keys with valid example values."""
    import re

    shipped = Path(__file__).resolve().parents[2] / "configs" / "config.toml"
    lines = []
    uncommented = 0
    for line in shipped.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^# ([a-z_]+) = (.*)$", line)
        if m and not m.group(1).endswith("_file"):
            line = f"{m.group(1)} = {m.group(2)}"
            uncommented += 1
        lines.append(line)
    cfg = _config(tmp_path, "\n".join(lines) + "\n")
    settings = load_agent_settings({}, {}, cfg)
    assert uncommented > 30
    assert settings.provision_url == "https://provision.example.net:8190"
    assert settings.backoff_cap_s == 300
    assert settings.hook_commands == ("systemctl restart mainflux-agent",)
    assert load_agent_settings({}, {}, shipped).config_file == shipped


def test_docs_bounds_table_matches_the_settings_table() -> None:
    """docs/configuration.md lists every number/duration setting with its real bounds."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text("utf-8")
    rows = [line for line in doc.splitlines() if line.startswith(("| agent |", "| lab |"))]
    none = "\u2013"  # an en dash marks "no file key" / "no default"
    expected = []
    for cls, program in ((AgentSettings, "agent"), (LabSettings, "lab")):
        for spec in fields_of(cls):
            if spec not in _numeric_fields():
                continue
            key = f"`{spec.keys[0]}`" if spec.keys else none
            default = none if spec.default is None else spec.show(spec.default)
            expected.append(
                f"| {program} | `{spec.name}` | {key} | `{spec.env[0]}` | {spec.kind.value} | "
                f"{default} | {spec.show(spec.minimum)} | {spec.show(spec.maximum)} |"
            )
    assert rows == expected
