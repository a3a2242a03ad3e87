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


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        pytest.param(
            '# comment\n[server]\nurl = "x"\n"quoted key" = 1\n'
            "[ agent ]\nbackoff.cap = 3\n'single' = 2\n",
            {"server": 2, "server.url": 3, "server.quoted key": 4, "agent": 5,
             "agent.backoff.cap": 6, "agent.single": 7},
            id="headers-bare-quoted-dotted-keys",
        ),
        pytest.param(
            '[[things]]\nname = "a"\n[[things]]\nname = "b"\n[things.metadata]\n'
            "[[things.routes]]\n[[things]]\n[[things.routes]]\n",
            {"things[0].name": 2, "things[1].name": 4, "things[1].metadata": 5,
             "things[1].metadata.missing.deeper": 5, "things[1].routes[0]": 6,
             "things[2].routes[0]": 8, "nowhere": None},
            id="arrays-of-tables-nested-and-parent-fallback",
        ),
        pytest.param(
            'note = """\n[server]\nurl = 1\n"""\n[server]\nurl = 2\n',
            {"server": 5, "server.url": 6},
            id="multiline-strings-skipped",
        ),
    ],
)
def test_line_index_maps_paths_to_lines(text: str, lines: dict[str, int | None]) -> None:
    """Headers, keys, numbered [[arrays]] and parents map to lines; multi-line strings skipped."""
    index = LineIndex(text)
    assert {path: index.line(path) for path in lines} == lines


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
@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        pytest.param('[[things]]\nname = """gw\n', 2, None,
                     "Unterminated string at the end of the file", id="end-of-document"),
        pytest.param("a = 1\na = 2\n", 2, 6, "Cannot overwrite a value", id="mid-file"),
    ],
)
def test_syntax_problem_is_the_same_with_either_parser(
    parser: object, text: str, line: int, column: int | None, message: str
) -> None:
    """Line, column and message agree whether read from attributes (tomli) or the text."""
    with pytest.raises(ValueError) as info:
        parser.loads(text)  # type: ignore[attr-defined]
    problem = syntax_problem(info.value, text, "l.toml")
    assert (problem.line, problem.column) == (line, column)
    assert problem.message == (
        f"invalid TOML: {message}; fix the syntax there (see https://toml.io)"
    )


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
