"""Tests for edge_provision.tomlfile: the one TOML reader, line index and syntax-error report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomli

from edge_provision.errors import ConfigError, LayoutError
from edge_provision.tomlfile import LineIndex, load, loads, syntax_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11
    import tomli as tomllib


def test_line_index_finds_headers_keys_quoted_and_dotted_keys() -> None:
    """Table headers, bare, quoted and dotted keys each map to their own line."""
    index = LineIndex(
        '# comment\n[server]\nurl = "x"\n"quoted key" = 1\n'
        "[ agent ]\nbackoff.cap = 3\n'single' = 2\n"
    )
    assert index.line("server") == 2
    assert index.line("server.url") == 3
    assert index.line("server.quoted key") == 4
    assert index.line("agent") == 5
    assert index.line("agent.backoff.cap") == 6
    assert index.line("agent.single") == 7


def test_line_index_numbers_arrays_of_tables_and_falls_back_to_parents() -> None:
    """The Nth [[things]] is things[N-1]; nested arrays restart; unknown paths use a parent."""
    index = LineIndex(
        '[[things]]\nname = "a"\n[[things]]\nname = "b"\n[things.metadata]\n'
        "[[things.routes]]\n[[things]]\n[[things.routes]]\n"
    )
    assert index.line("things[0].name") == 2
    assert index.line("things[1].name") == 4
    assert index.line("things[1].metadata") == 5
    assert index.line("things[1].metadata.missing.deeper") == 5
    assert index.line("things[1].routes[0]") == 6
    assert index.line("things[2].routes[0]") == 8
    assert index.line("nowhere") is None


def test_line_index_skips_multiline_strings() -> None:
    """A header or key inside a multi-line string is not counted."""
    index = LineIndex('note = """\n[server]\nurl = 1\n"""\n[server]\nurl = 2\n')
    assert index.line("server") == 5
    assert index.line("server.url") == 6


def test_loads_returns_document_with_lines() -> None:
    """loads() gives the parsed table, the text, the source and working line lookups."""
    document = loads('[cert]\nttl = "1h"\n', "x.toml")
    assert document.doc == {"cert": {"ttl": "1h"}}
    assert document.source == "x.toml"
    assert document.line("cert.ttl") == 2


@pytest.mark.parametrize("error", [ConfigError, LayoutError])
def test_syntax_error_has_source_line_column_in_the_callers_class(
    error: type[ConfigError],
) -> None:
    """A syntax error is one Problem with line and column, raised as the caller's class."""
    with pytest.raises(error) as info:
        loads('[server]\nurl = "http://x\n', "cfg.toml", error)
    assert type(info.value) is error
    (problem,) = info.value.problems
    assert (problem.source, problem.line, problem.column) == ("cfg.toml", 2, 16)
    assert problem.message.startswith("invalid TOML: Illegal character")
    assert "(at line" not in problem.message
    assert str(problem).startswith("cfg.toml:2:16: invalid TOML")


@pytest.mark.parametrize("parser", [tomllib, tomli], ids=["tomllib", "tomli"])
def test_syntax_error_at_end_of_document_points_at_the_last_line(parser: object) -> None:
    """An unterminated string at the end is on the last line, the same with either parser."""
    text = '[[things]]\nname = """gw\n'
    with pytest.raises(ValueError) as info:
        parser.loads(text)  # type: ignore[attr-defined]
    problem = syntax_problem(info.value, text, "l.toml")
    assert (problem.line, problem.column) == (2, None)
    assert problem.message == (
        "invalid TOML: Unterminated string at the end of the file; fix the syntax there "
        "(see https://toml.io)"
    )


@pytest.mark.parametrize("parser", [tomllib, tomli], ids=["tomllib", "tomli"])
def test_syntax_error_mid_file_is_the_same_with_either_parser(parser: object) -> None:
    """Message, line and column agree whether read from attributes or from the text."""
    text = "a = 1\na = 2\n"
    with pytest.raises(ValueError) as info:
        parser.loads(text)  # type: ignore[attr-defined]
    problem = syntax_problem(info.value, text, "d.toml")
    assert (problem.line, problem.column) == (2, 6)
    assert problem.message.startswith("invalid TOML: Cannot overwrite a value; fix")


def test_load_reads_utf8_and_names_the_file(tmp_path: Path) -> None:
    """load() parses a file; missing, non-UTF-8 and directory paths give a clear error."""
    good = tmp_path / "good.toml"
    good.write_text('name = "caf\u00e9"\n', encoding="utf-8")
    assert load(good, "config file").doc == {"name": "caf\u00e9"}
    assert load(good, "config file").source == str(good)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'a = 1\nname = "\xff"\n')
    with pytest.raises(LayoutError, match=r"bad.toml:2: not valid UTF-8.*save the layout file"):
        load(bad, "layout file", LayoutError)
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "missing.toml", "config file")
    with pytest.raises(ConfigError, match="is a directory, expected a config file"):
        load(tmp_path, "config file")
