"""Tests for edge_provision.layout: parsing, validation, planning, Go durations."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_provision.errors import ConfigError, LayoutError, Problem
from edge_provision.layout import (
    BootstrapOptions,
    CertOptions,
    ChannelSpec,
    Layout,
    ThingSpec,
    default_layout,
    load_layout,
    plan,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "layouts"
EXT_ID = "02:42:ac:11:00:07"
EXT_KEY = "k3y-for-gw-0007"


def _load(name: str) -> Layout:
    """Load a layout fixture by file name."""
    return load_layout((DATA / name).read_text(encoding="utf-8"), source=name)


def _problems(name: str) -> tuple[Problem, ...]:
    """Load an invalid fixture and return the problems it raised."""
    with pytest.raises(LayoutError) as info:
        _load(name)
    return info.value.problems


def _problems_of(text: str) -> tuple[Problem, ...]:
    """Load invalid layout text and return the problems it raised."""
    with pytest.raises(LayoutError) as info:
        load_layout(text, source="inline.toml")
    return info.value.problems


MINIMAL = """
[[things]]
  name = "gw"
  [things.metadata]
    external_id = ""

[[channels]]
  name = "data-channel"
  [channels.metadata]
    type = "data"
"""

# --------------------------------------------------------------------------- loading


def test_valid_multi_thing_layout_loads() -> None:
    """The multi-thing fixture loads with every table read as written."""
    layout = _load("valid_multi.toml")
    assert [t.name for t in layout.things] == ["sensor-a", "gateway", "sensor-b"]
    assert [t.is_gateway for t in layout.things] == [False, True, True]
    assert [c.type for c in layout.channels] == ["data", None, "export", "control"]
    assert layout.bootstrap == BootstrapOptions(
        provision=True,
        autowhite_list=True,
        x509_provision=True,
        content={
            "agent": {
                "mqtt": {"url": "tcp://mqtt.lab.test:1883", "qos": 1},
                "heartbeat": {"interval": "30s"},
            },
            "export": {"routes": [{"nats_topic": "channels", "workers": 4}]},
        },
    )
    assert layout.cert == CertOptions(ttl="720h", ttl_s=720 * 3600, key_bits=3072, key_type="rsa")
    assert layout.server == {"log_level": "info", "http_port": "8190"}
    assert layout.source == "valid_multi.toml"
    assert layout.warnings == ()


def test_valid_multi_records_explicit_keys() -> None:
    """``explicit`` lists the dotted keys the file set, with one name for keyType."""
    layout = _load("valid_multi.toml")
    assert {
        "bootstrap.provision",
        "bootstrap.autowhite_list",
        "bootstrap.x509_provision",
        "bootstrap.content",
        "cert.ttl",
        "cert.key_type",
        "cert.key_bits",
        "server.log_level",
        "server.http_port",
        "things",
        "channels",
    } <= layout.explicit
    assert "cert.keyType" not in layout.explicit


def test_upstream_example_loads_with_warnings() -> None:
    """The upstream example (content = "", LogLevel, things_location) loads and warns."""
    layout = _load("upstream_example.toml")
    assert layout.bootstrap.content is None
    assert layout.bootstrap.provision and layout.bootstrap.autowhite_list
    assert layout.server["tls"] is True
    assert layout.server["LogLevel"] == "info"
    assert [t.name for t in layout.things] == ["thing"]
    by_path = {w.path: w for w in layout.warnings}
    assert set(by_path) == {
        "bootstrap.content",
        "server.LogLevel",
        "server.things_location",
        "server.users_location",
    }
    assert "no content" in by_path["bootstrap.content"].message
    assert by_path["bootstrap.content"].line == 8
    assert "log_level" in by_path["server.LogLevel"].message
    assert by_path["server.LogLevel"].line == 13
    assert "things_url" in by_path["server.things_location"].message
    assert by_path["server.LogLevel"].source == "upstream_example.toml"


def test_upstream_docker_addon_loads() -> None:
    """The docker add-on shape (content only, no flags) loads with upstream defaults."""
    layout = _load("upstream_docker_addon.toml")
    assert layout.bootstrap.provision and layout.bootstrap.autowhite_list
    assert not layout.bootstrap.x509_provision
    content = layout.bootstrap.content
    assert content is not None
    assert content["agent"]["mqtt"]["url"] == "localhost:1883"  # type: ignore[index]
    assert content["export"]["routes"][0]["workers"] == 10  # type: ignore[index]
    assert layout.warnings == ()
    assert layout.server == {}


def test_default_layout_is_upstreams_builtin() -> None:
    """default_layout() is one thing with external_id and control + data channels."""
    layout = default_layout()
    assert layout.things == (ThingSpec("thing", {"external_id": ""}),)
    assert layout.channels == (
        ChannelSpec("control-channel", {"type": "control"}),
        ChannelSpec("data-channel", {"type": "data"}),
    )
    assert layout.bootstrap == BootstrapOptions()
    assert layout.cert == CertOptions()
    assert layout.source == "<built-in>"
    assert layout.explicit == frozenset()


# --------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("name", "path", "fragment", "line"),
    [
        ("bad_name_type.toml", "things[1].name", "name must be a string, got an integer (5)", 7),
        ("bad_metadata_type.toml", "things[0].metadata", "expected a table", 4),
        ("bad_things_type.toml", "things", "expected an array of tables ([[things]])", 2),
        ("bad_provision_type.toml", "bootstrap.provision", "expected true or false", 3),
        ("bad_key_bits_type.toml", "cert.key_bits", 'got a string ("big")', 3),
        ("missing_name.toml", "channels[1].name", "missing name", 10),
        ("empty_name.toml", "things[0].name", "name is empty", 3),
        ("duplicate_thing.toml", "things[1].name", "duplicate thing name 'gw' (also things[0])", 8),
        ("duplicate_channel.toml", "channels[1].name", "duplicate channel name 'data'", 11),
        ("unknown_channel_type.toml", "channels[0].metadata.type", "'telemetry'", 10),
        ("no_external_id.toml", "bootstrap.provision", "no thing has metadata.external_id", 3),
        ("content_not_table.toml", "bootstrap.content", "expected a table", 3),
        ("datetime_in_metadata.toml", "things[0].metadata.installed", "date/time", 6),
        ("datetime_in_content.toml", "bootstrap.content.agent.since", "date/time", 3),
        ("bad_ttl.toml", "cert.ttl", 'expected a duration like "2400h" or "90s"', 3),
        ("key_bits_mismatch.toml", "cert.key_bits", "use one of 256, 384, 521", 4),
    ],
)
def test_invalid_fixture_reports_path_message_and_line(
    name: str, path: str, fragment: str, line: int
) -> None:
    """Each invalid fixture gives one problem with its path, a clear message and its line."""
    problems = _problems(name)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.path == path
    assert fragment in problem.message
    assert problem.line == line
    assert problem.source == name
    assert str(problem).startswith(f"{name}:{line}")


def test_unknown_channel_type_lists_allowed_values() -> None:
    """The unknown-type message names control, data and export."""
    (problem,) = _problems("unknown_channel_type.toml")
    assert "expected one of 'control', 'data', 'export'" in problem.message


def test_syntax_error_gives_line_and_column() -> None:
    """Malformed TOML is one problem with the parser's line and column."""
    (problem,) = _problems("bad_syntax.toml")
    assert problem.line == 4
    assert problem.column is not None and problem.column >= 11
    assert problem.message.startswith("invalid TOML: Invalid value")
    assert "(at line" not in problem.message
    assert problem.path == ""


def test_syntax_error_at_end_of_document_gives_last_line() -> None:
    """An unterminated string at the end of the file points at the last line."""
    (problem,) = _problems_of('[[things]]\nname = """gw\n')
    assert problem.line == 2
    assert problem.column is None
    assert "at the end of the file" in problem.message


def test_syntax_error_is_a_config_error_with_exit_code_2() -> None:
    """LayoutError is a ConfigError, so the CLI exits 2 for it."""
    with pytest.raises(ConfigError) as info:
        load_layout("= 1", source="x.toml")
    assert isinstance(info.value, LayoutError)
    assert info.value.exit_code == 2


def test_empty_layout_reports_things_and_channels() -> None:
    """A file without things and channels reports both at once."""
    problems = _problems("empty_layout.toml")
    assert [p.path for p in problems] == ["things", "channels"]
    assert "add at least one [[things]]" in problems[0].message
    assert "add at least one [[channels]]" in problems[1].message


def test_many_problems_reported_at_once_in_line_order() -> None:
    """Five independent mistakes come back together, sorted by line."""
    problems = _problems("many_problems.toml")
    assert [(p.path, p.line) for p in problems] == [
        ("bootstrap.provision", 3),
        ("cert.ttl", 6),
        ("things[0].name", 9),
        ("things[1].metadata", 13),
        ("channels[0].metadata.type", 18),
    ]
    assert "negative duration" in problems[1].message


def test_names_longer_than_1024_are_rejected() -> None:
    """A 1025-character name is a problem; 1024 characters is fine."""
    ok = MINIMAL.replace('name = "gw"', f'name = "{"g" * 1024}"')
    assert load_layout(ok).things[0].name == "g" * 1024
    (problem,) = _problems_of(MINIMAL.replace('name = "gw"', f'name = "{"g" * 1025}"'))
    assert problem.path == "things[0].name"
    assert "1025 characters long; the limit is 1024" in problem.message
    assert problem.line == 3


def test_things_entries_must_be_tables() -> None:
    """``things = [1, "x"]`` reports each entry that is not a table."""
    text = 'things = [1, "x"]\n[[channels]]\nname = "c"\n'
    problems = _problems_of(text)
    assert [p.path for p in problems] == ["things[0]", "things[1]"]
    assert all(p.line == 1 for p in problems)
    assert "got an integer (1)" in problems[0].message


def test_non_finite_float_in_metadata_is_rejected() -> None:
    """nan and inf cannot be sent as JSON and are reported."""
    text = MINIMAL.replace('external_id = ""', 'external_id = ""\n    level = nan')
    (problem,) = _problems_of(text)
    assert problem.path == "things[0].metadata.level"
    assert problem.line == 6


def test_server_and_cert_must_be_tables() -> None:
    """``server = 1`` and ``cert = "x"`` are each reported."""
    problems = _problems_of('server = 1\ncert = "x"\n' + MINIMAL)
    assert [(p.path, p.line) for p in problems] == [("server", 1), ("cert", 2)]


def test_ttl_zero_and_non_string_rejected() -> None:
    """A zero ttl and an integer ttl are both problems."""
    (zero,) = _problems_of('[cert]\nttl = "0s"\n' + MINIMAL)
    assert "must be positive" in zero.message
    (number,) = _problems_of("[cert]\nttl = 2400\n" + MINIMAL)
    assert 'expected a duration string like "2400h"' in number.message
    assert number.line == 2


def test_key_bits_boolean_rejected() -> None:
    """``key_bits = true`` is not an integer."""
    (problem,) = _problems_of("[cert]\nkey_bits = true\n" + MINIMAL)
    assert problem.path == "cert.key_bits"
    assert "got a boolean" in problem.message


def test_rsa_size_without_key_type_hints_at_key_type() -> None:
    """key_bits = 4096 with the default ec type suggests keyType = "rsa"."""
    (problem,) = _problems_of("[cert]\nkey_bits = 4096\n" + MINIMAL)
    assert 'set keyType = "rsa"' in problem.message


@pytest.mark.parametrize("spelling", ["keyType", "KeyType", "keytype", "key_type"])
def test_key_type_spellings_are_accepted(spelling: str) -> None:
    """Every upstream spelling of keyType (and key_type) selects the key type."""
    layout = load_layout(f'[cert]\n{spelling} = "rsa"\nkey_bits = 4096\n' + MINIMAL)
    assert layout.cert.key_type == "rsa"
    assert layout.cert.key_bits == 4096
    warned = [w.path for w in layout.warnings]
    assert warned == (["cert.key_type"] if spelling == "key_type" else [])


def test_key_type_invalid_and_conflicting() -> None:
    """An unknown key type and two spellings with different values are both reported."""
    (bad,) = _problems_of('[cert]\nkeyType = "dsa"\n' + MINIMAL)
    assert bad.path == "cert.keyType"
    assert 'expected "ec" or "rsa", got a string ("dsa")' in bad.message
    conflict = _problems_of('[cert]\nkeyType = "ec"\nkey_type = "rsa"\n' + MINIMAL)
    assert [p.path for p in conflict] == ["cert.key_type"]
    assert "set twice" in conflict[0].message


def test_unknown_entry_keys_warn_but_id_and_key_do_not() -> None:
    """Unknown keys in things/channels entries warn; upstream's id and key are accepted."""
    text = MINIMAL.replace('name = "gw"', 'name = "gw"\n  id = "x"\n  key = "y"\n  colour = 1')
    text = text.replace('name = "data-channel"', 'name = "data-channel"\n  mode = "x"')
    layout = load_layout(text, source="w.toml")
    assert [(w.path, w.line) for w in layout.warnings] == [
        ("things[0].colour", 6),
        ("channels[0].mode", 12),
    ]
    assert "unknown key 'colour' ignored" in layout.warnings[0].message


def test_provision_off_allows_layout_without_external_id() -> None:
    """Without bootstrap provisioning a layout needs no external_id thing."""
    text = "[bootstrap]\nprovision = false\n" + MINIMAL.replace('external_id = ""', "a = 1")
    layout = load_layout(text)
    assert not layout.bootstrap.provision
    assert plan(layout, EXT_ID, EXT_KEY).bootstrap is None


# --------------------------------------------------------------------------- planning


def test_plan_multi_thing_gateway_is_first_with_external_id() -> None:
    """The first thing declaring external_id is the gateway and gets the bootstrap config."""
    result = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY)
    assert [t.is_gateway for t in result.things] == [False, True, False]
    assert result.bootstrap is not None
    assert result.bootstrap.thing_index == 1
    assert result.bootstrap.name == "gateway"
    assert result.bootstrap.external_id == EXT_ID
    assert result.bootstrap.external_key == EXT_KEY


def test_plan_fills_external_id_into_every_declaring_thing() -> None:
    """Every thing with external_id metadata gets the request's value; others none."""
    result = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY)
    assert result.things[0].metadata == {"model": "th-100"}
    assert result.things[1].metadata == {
        "external_id": EXT_ID,
        "model": "gw-x1",
        "tags": ["edge", "lab"],
    }
    assert result.things[2].metadata == {"external_id": EXT_ID}


def test_plan_connects_every_thing_to_every_channel() -> None:
    """With auto-whitelist, 3 things x 4 channels give 12 connections, thing-major."""
    result = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY)
    pairs = [(c.thing_index, c.channel_index) for c in result.connections]
    assert pairs == [(t, c) for t in range(3) for c in range(4)]


def test_plan_bootstrap_channels_ordered_control_data_export_untyped() -> None:
    """Bootstrap channels go control, data, export, then untyped."""
    result = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY)
    assert result.bootstrap is not None
    assert result.bootstrap.channel_indexes == (3, 0, 2, 1)
    assert [c.type for c in result.channels] == ["data", None, "export", "control"]


def test_plan_untyped_channels_keep_file_order() -> None:
    """Several channels of one type keep their file order within the type."""
    extra = """
[[channels]]
name = "u1"
[[channels]]
name = "c"
metadata = {type = "control"}
[[channels]]
name = "u2"
"""
    text = MINIMAL + extra
    result = plan(load_layout(text), EXT_ID, EXT_KEY)
    assert result.bootstrap is not None
    names = [result.channels[i].name for i in result.bootstrap.channel_indexes]
    assert names == ["c", "data-channel", "u1", "u2"]


def test_plan_name_override_single_thing() -> None:
    """A lone thing takes the request name as is."""
    result = plan(default_layout(), EXT_ID, EXT_KEY, name="gw-0007")
    assert [t.name for t in result.things] == ["gw-0007"]
    assert result.bootstrap is not None and result.bootstrap.name == "gw-0007"


def test_plan_name_override_several_things() -> None:
    """With several things the gateway gets the name, the others name-<thing>."""
    result = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY, name="gw-0007")
    assert [t.name for t in result.things] == ["gw-0007-sensor-a", "gw-0007", "gw-0007-sensor-b"]
    assert result.bootstrap is not None and result.bootstrap.name == "gw-0007"


def test_plan_rejects_name_override_that_is_too_long() -> None:
    """A request name that makes a thing name exceed 1024 characters is a ConfigError."""
    with pytest.raises(ConfigError) as info:
        plan(default_layout(), EXT_ID, EXT_KEY, name="n" * 1025)
    assert info.value.problems[0].path == "name"
    assert "limit is 1024" in info.value.problems[0].message


@pytest.mark.parametrize("name", [None, ""])
def test_plan_without_name_keeps_layout_names(name: str | None) -> None:
    """No name (None or empty) keeps the layout's names."""
    result = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY, name=name)
    assert [t.name for t in result.things] == ["sensor-a", "gateway", "sensor-b"]


def test_plan_without_autowhite_list_has_no_connections() -> None:
    """autowhite_list = false plans no connections but still a bootstrap config."""
    layout = load_layout("[bootstrap]\nautowhite_list = false\n" + MINIMAL)
    result = plan(layout, EXT_ID, EXT_KEY)
    assert result.connections == ()
    assert result.bootstrap is not None


def test_plan_is_deterministic() -> None:
    """The same input gives equal plans and byte-identical to_dict JSON."""
    first = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY, "gw")
    second = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY, "gw")
    assert first == second
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())


def test_plan_metadata_is_a_deep_copy() -> None:
    """Mutating a plan's metadata never reaches the layout or another plan."""
    layout = _load("valid_multi.toml")
    before = copy.deepcopy(layout.things[1].metadata)
    first = plan(layout, EXT_ID, EXT_KEY)
    first.things[1].metadata["tags"].append("mutated")  # type: ignore[attr-defined]
    first.channels[0].metadata["type"] = "mutated"
    assert layout.things[1].metadata == before
    assert layout.channels[0].metadata == {"type": "data"}
    second = plan(layout, "other-id", EXT_KEY)
    assert second.things[1].metadata["tags"] == ["edge", "lab"]
    assert layout.things[1].metadata["external_id"] == "placeholder"
    dumped = first.to_dict()
    dumped["things"][0]["metadata"]["x"] = 1  # type: ignore[index]
    assert "x" not in first.things[0].metadata


def test_plan_content_is_compact_sorted_json() -> None:
    """The bootstrap content is compact JSON with sorted keys."""
    result = plan(_load("upstream_docker_addon.toml"), EXT_ID, EXT_KEY)
    assert result.bootstrap is not None
    content = result.bootstrap.content
    assert content.startswith('{"agent":{"edgex":{"url":"http://localhost:48090/api/v1/"},')
    assert " " not in content.replace("http://", "")
    decoded = json.loads(content)
    assert json.dumps(decoded, sort_keys=True, separators=(",", ":")) == content
    assert decoded["export"]["routes"][0]["nats_topic"] == ">"


def test_plan_without_content_sends_empty_object() -> None:
    """No content (absent or ``content = ""``) becomes the JSON string "{}"."""
    for layout in (default_layout(), _load("upstream_example.toml")):
        result = plan(layout, EXT_ID, EXT_KEY)
        assert result.bootstrap is not None
        assert result.bootstrap.content == "{}"


def test_plan_certificates_one_per_thing() -> None:
    """x509_provision plans one certificate per thing with the [cert] values."""
    result = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY)
    assert [(c.thing_index, c.key_type, c.key_bits, c.ttl_s) for c in result.certificates] == [
        (i, "rsa", 3072, 2_592_000) for i in range(3)
    ]


@pytest.mark.parametrize(("key_type", "bits"), [("ec", 256), ("rsa", 2048)])
def test_plan_certificate_default_key_bits(key_type: str, bits: int) -> None:
    """Without key_bits the certificate uses the key type's default size."""
    text = f'[bootstrap]\nx509_provision = true\n[cert]\nkeyType = "{key_type}"\n' + MINIMAL
    (cert,) = plan(load_layout(text), EXT_ID, EXT_KEY).certificates
    assert (cert.key_type, cert.key_bits, cert.ttl_s) == (key_type, bits, 8_640_000)


def test_plan_without_x509_has_no_certificates() -> None:
    """x509_provision off plans no certificates."""
    assert plan(default_layout(), EXT_ID, EXT_KEY).certificates == ()


@pytest.mark.parametrize(
    ("external_id", "external_key", "paths"),
    [
        ("", EXT_KEY, ["external_id"]),
        (EXT_ID, " ", ["external_key"]),
        ("", "", ["external_id", "external_key"]),
    ],
)
def test_plan_rejects_empty_identity(external_id: str, external_key: str, paths: list[str]) -> None:
    """Empty external_id / external_key raise a ConfigError (not LayoutError) naming them."""
    with pytest.raises(ConfigError) as info:
        plan(default_layout(), external_id, external_key)
    assert not isinstance(info.value, LayoutError)
    assert [p.path for p in info.value.problems] == paths
    assert all(f"{p.path} is empty" in p.message for p in info.value.problems)


def test_to_dict_shape_for_default_layout() -> None:
    """to_dict gives the documented shape, names instead of indexes, key redacted."""
    assert plan(default_layout(), EXT_ID, EXT_KEY, "gw").to_dict() == {
        "external_id": EXT_ID,
        "external_key": "<redacted>",
        "things": [
            {"index": 0, "name": "gw", "metadata": {"external_id": EXT_ID}, "gateway": True}
        ],
        "channels": [
            {
                "index": 0,
                "name": "control-channel",
                "type": "control",
                "metadata": {"type": "control"},
            },
            {"index": 1, "name": "data-channel", "type": "data", "metadata": {"type": "data"}},
        ],
        "connections": [
            {"thing": "gw", "channel": "control-channel"},
            {"thing": "gw", "channel": "data-channel"},
        ],
        "bootstrap": {
            "thing": "gw",
            "external_id": EXT_ID,
            "channels": ["control-channel", "data-channel"],
            "content": "{}",
        },
        "certificates": [],
    }


def test_to_dict_shows_key_only_on_request_and_repr_hides_it() -> None:
    """show_key=True reveals the key; repr of the plan never does."""
    result = plan(_load("valid_multi.toml"), EXT_ID, EXT_KEY)
    assert result.to_dict(show_key=True)["external_key"] == EXT_KEY
    assert EXT_KEY not in json.dumps(result.to_dict())
    assert EXT_KEY not in repr(result)
    doc = result.to_dict()
    assert doc["certificates"][0] == {  # type: ignore[index]
        "thing": "sensor-a",
        "key_type": "rsa",
        "key_bits": 3072,
        "ttl_s": 2_592_000,
    }
    assert doc["bootstrap"]["channels"] == [  # type: ignore[index]
        "control-channel",
        "data-channel",
        "export-channel",
        "events",
    ]
    assert doc["channels"][1]["type"] is None  # type: ignore[index]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2400h", 8_640_000),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("2h45m30.5s", 9931),
        ("500ms", 1),
        ("1ns", 1),
        ("3001ms", 4),
        ("+10s", 10),
        ("2562047h", 2562047 * 3600),
    ],
)
def test_ttl_go_durations_become_whole_seconds_rounded_up(text: str, seconds: int) -> None:
    """A Go duration in [cert].ttl gives whole seconds, rounded up, and no warning."""
    layout = load_layout(f'[cert]\nttl = "{text}"\n' + MINIMAL)
    assert (layout.cert.ttl, layout.cert.ttl_s) == (text, seconds)
    assert layout.warnings == ()


@pytest.mark.parametrize(
    ("text", "seconds", "go_text"),
    [("30d", 30 * 86400, "720h"), ("90", 90, "1m30s"), ("1d0.5s", 86401, "24h500ms")],
)
def test_ttl_beyond_go_is_read_with_a_warning(text: str, seconds: int, go_text: str) -> None:
    """``d`` and bare seconds are accepted; a warning says Mainflux would refuse the file."""
    layout = load_layout(f'[cert]\nttl = "{text}"\n' + MINIMAL, source="l.toml")
    assert layout.cert.ttl_s == seconds
    (warning,) = layout.warnings
    assert (warning.path, warning.line, warning.source) == ("cert.ttl", 2, "l.toml")
    assert "Mainflux's own provision service would refuse this file" in warning.message
    assert f'write "{go_text}"' in warning.message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty duration"),
        ("-1h", "negative duration"),
        ("10 days", "unknown unit"),
        ("1h30", "no unit after 30"),
        ("9999999h", "too long; the maximum is Go's limit, 2562047h47m16.854775807s"),
    ],
)
def test_ttl_invalid_is_a_problem_on_its_line(text: str, fragment: str) -> None:
    """A bad ttl is one problem at cert.ttl with its line and what is expected."""
    (problem,) = _problems_of(f'[cert]\nttl = "{text}"\n' + MINIMAL)
    assert (problem.path, problem.line) == ("cert.ttl", 2)
    assert fragment in problem.message


def test_public_names_are_what_an_embedder_needs() -> None:
    """The layout package exports the engine and its values, not the duration parser."""
    import edge_provision.layout as layout_pkg

    assert set(layout_pkg.__all__) == {
        "CHANNEL_TYPES", "MAX_NAME_LENGTH", "BootstrapOptions", "CertOptions", "ChannelSpec",
        "ChannelType", "Layout", "Plan", "PlannedBootstrap", "PlannedCertificate",
        "PlannedChannel", "PlannedConnection", "PlannedThing", "ThingSpec", "control_first",
        "default_layout", "load_layout", "plan",
    }
    assert all(hasattr(layout_pkg, name) for name in layout_pkg.__all__)


# --------------------------------------------------------------------------- properties

_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
_TYPES = st.sampled_from([None, "control", "data", "export"])


@st.composite
def _layout_texts(draw: st.DrawFn) -> tuple[str, int, int, int]:
    """Random valid layout text: 1..5 things (some gateways), 1..6 channels."""
    things = draw(st.lists(_NAMES, min_size=1, max_size=5, unique=True))
    channels = draw(st.lists(_NAMES, min_size=1, max_size=6, unique=True))
    gateways = draw(st.sets(st.integers(0, len(things) - 1), min_size=1))
    lines = []
    for i, name in enumerate(things):
        lines += ["[[things]]", f'name = "{name}"']
        if i in gateways:
            lines += ["[things.metadata]", 'external_id = "x"']
    for name in channels:
        lines += ["[[channels]]", f'name = "{name}"']
        kind = draw(_TYPES)
        if kind is not None:
            lines += ["[channels.metadata]", f'type = "{kind}"']
    return "\n".join(lines) + "\n", len(things), len(channels), min(gateways)


@settings(max_examples=75, deadline=None)
@given(_layout_texts(), st.one_of(st.none(), _NAMES))
def test_random_layouts_always_plan_fully(
    case: tuple[str, int, int, int], name: str | None
) -> None:
    """Any valid layout plans things*channels connections and exactly one bootstrap."""
    text, n_things, n_channels, gateway = case
    result = plan(load_layout(text), EXT_ID, EXT_KEY, name)
    assert len(result.connections) == n_things * n_channels
    assert result.bootstrap is not None
    assert result.bootstrap.thing_index == gateway
    assert sorted(result.bootstrap.channel_indexes) == list(range(n_channels))
    assert sum(t.is_gateway for t in result.things) == 1
    assert len({t.name for t in result.things}) == n_things
    assert result == plan(load_layout(text), EXT_ID, EXT_KEY, name)


def test_invalid_gateway_entry_does_not_add_a_bogus_external_id_problem() -> None:
    """A gateway thing with a bad name gives only the name problem."""
    (problem,) = _problems_of(MINIMAL.replace('name = "gw"', "name = 5"))
    assert problem.path == "things[0].name"


def test_lines_skip_multiline_strings_and_count_nested_arrays() -> None:
    """Headers inside multi-line strings are not counted; nested [[...]] get their index."""
    text = '''[bootstrap.content]
note = """
[[things]]
"""
[[bootstrap.content.routes]]
a = 1
[[bootstrap.content.routes]]
a = 2000-01-01
[[things]]
name = 5
'''
    problems = _problems_of(text)
    assert [(p.path, p.line) for p in problems] == [
        ("bootstrap.content.routes[1].a", 8),
        ("things[0].name", 10),
        ("channels", None),
    ]
