"""``simulate --report FILE.html``: one self-contained page for people who would rather look.

Rendered from the ``simulate --json`` document itself, so the page and the JSON cannot
disagree. The page is XHTML-compatible markup (it parses as XML), styled by one inline
``<style>``, with two inline SVG charts -- enrollments over time, latency per step --
and the tables behind them. No script, no link, no image, no font: nothing is fetched
from anywhere when it is opened. Chart elements carry their numbers as ``data-*``
attributes (``data-count`` on each timeline bar) for anyone who wants to check them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

__all__ = ["render_report"]

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em;
       color: #1d2731; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 2em; }
p.meta { color: #5b6770; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #dde3e8; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.ok { color: #17803d; font-weight: 600; } .bad { color: #b42318; font-weight: 600; }
svg { display: block; margin: 0.5em 0; }
svg text { font: 11px system-ui, sans-serif; fill: #3a4650; }
.enrolled { fill: #3d8bd4; } .failed { fill: #d9534f; } .cumulative { fill: none;
  stroke: #17803d; stroke-width: 2; } .axis { stroke: #8895a0; stroke-width: 1; }
.p50 { fill: #3d8bd4; } .p95 { fill: #f0a030; } .p99 { fill: #d9534f; }
ul.problems { font-family: ui-monospace, monospace; font-size: 12px; }
""".strip()

_W, _H, _PAD_L, _PAD_B, _PAD_T, _PAD_R = 760, 260, 56, 36, 16, 56


def _e(value: object) -> str:
    return escape(str(value))


def _a(value: object) -> str:
    return quoteattr(str(value))


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(cells: Sequence[object], header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{_e(c)}</{tag}>" for c in cells) + "</tr>"


def _nice_top(value: float) -> float:
    """The smallest 1/2/5 x 10^n at or above ``value`` (at least 1)."""
    top = 1.0
    while top < value:
        for factor in (2.0, 2.5, 2.0):
            top *= factor
            if top >= value:
                break
    return top


def _timeline_svg(timeline: Mapping[str, Any], enrolled_total: int) -> str:
    width_s = float(timeline["bucket_s"])
    enrolled = list(timeline["enrolled"])
    failed = list(timeline["failed_attempts"])
    n = max(1, len(enrolled))
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    top = _nice_top(max([*enrolled, *failed, 1]))
    cum_top = max(1, enrolled_total)
    bar_w = plot_w / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="{_W}" '
             f'height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
             f'data-enrolled="{enrolled_total}" data-bucket-s="{width_s:g}">',
             f"<title>Enrollments over time, per {width_s:g} s</title>"]
    y0 = _PAD_T + plot_h
    parts.append(f'<line class="axis" x1="{_PAD_L}" y1="{y0}" x2="{_PAD_L + plot_w}" '
                 f'y2="{y0}"/>')
    parts.append(f'<line class="axis" x1="{_PAD_L}" y1="{_PAD_T}" x2="{_PAD_L}" y2="{y0}"/>')
    for i, (ok, bad) in enumerate(zip(enrolled, failed)):
        x = _PAD_L + i * bar_w
        h_ok = plot_h * ok / top
        h_bad = plot_h * bad / top
        parts.append(f'<rect class="enrolled" x="{x + 0.5:.1f}" y="{y0 - h_ok:.1f}" '
                     f'width="{max(bar_w - 1, 0.5):.1f}" height="{h_ok:.1f}" '
                     f'data-count="{ok}"><title>{i * width_s:g} s: {ok} enrolled</title>'
                     f"</rect>")
        if bad:
            parts.append(f'<rect class="failed" x="{x + bar_w / 4:.1f}" '
                         f'y="{y0 - h_bad:.1f}" width="{max(bar_w / 2, 0.5):.1f}" '
                         f'height="{h_bad:.1f}" data-count="{bad}"><title>{i * width_s:g} s: '
                         f"{bad} failed attempts</title></rect>")
    points, running = [f"{_PAD_L},{y0}"], 0
    for i, ok in enumerate(enrolled):
        running += ok
        x = _PAD_L + (i + 1) * bar_w
        points.append(f"{x:.1f},{y0 - plot_h * running / cum_top:.1f}")
    parts.append(f'<polyline class="cumulative" points="{" ".join(points)}" '
                 f'data-final="{running}"/>')
    parts.append(f'<text x="{_PAD_L - 6}" y="{_PAD_T + 4}" text-anchor="end">{top:g}</text>')
    parts.append(f'<text x="{_PAD_L - 6}" y="{y0}" text-anchor="end">0</text>')
    parts.append(f'<text x="{_PAD_L + plot_w + 6}" y="{_PAD_T + 4}">{cum_top}</text>')
    parts.append(f'<text x="{_PAD_L + plot_w + 6}" y="{_PAD_T + 18}">total</text>')
    parts.append(f'<text x="{_PAD_L}" y="{_H - 10}">0 s</text>')
    parts.append(f'<text x="{_PAD_L + plot_w}" y="{_H - 10}" text-anchor="end">'
                 f"{n * width_s:g} s</text>")
    parts.append(f'<text x="{_PAD_L + plot_w / 2}" y="{_H - 10}" text-anchor="middle">'
                 f"bars: gateways enrolled (blue) and attempts failed (red) per {width_s:g} s;"
                 f" line: enrolled so far</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def _latency_svg(steps: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [(name, s) for name, s in steps.items() if s["count"]]
    row_h, label_w = 54, 96
    height = _PAD_T + row_h * max(1, len(rows)) + _PAD_B
    plot_w = _W - label_w - _PAD_R - 40
    top = _nice_top(max([float(s["p99_ms"]) for _, s in rows] + [1.0]))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="latency" width="{_W}" '
             f'height="{height}" viewBox="0 0 {_W} {height}" role="img" '
             f'data-top-ms="{top:g}">', "<title>Latency per step (ms)</title>"]
    for r, (name, s) in enumerate(rows):
        y = _PAD_T + r * row_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 26}" text-anchor="end">{_e(name)}</text>')
        for k, q in enumerate(("p50", "p95", "p99")):
            value = float(s[f"{q}_ms"])
            w = max(plot_w * value / top, 0.5)
            yy = y + 4 + k * 15
            parts.append(f'<rect class="{q}" x="{label_w}" y="{yy}" width="{w:.1f}" '
                         f'height="12" data-step={_a(name)} data-ms="{value:.2f}">'
                         f"<title>{_e(name)} {q}: {value:.2f} ms</title></rect>")
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{yy + 10}">{q} {value:.2f} ms'
                         "</text>")
    parts.append(f'<text x="{label_w}" y="{height - 10}">0 ms</text>')
    parts.append(f'<text x="{label_w + plot_w}" y="{height - 10}" text-anchor="end">'
                 f"{top:g} ms</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def _counts_table(table_id: str, title: str, counts: Mapping[str, int]) -> str:
    if not counts:
        return f'<p id="{table_id}">{_e(title)}: none.</p>'
    rows = [_row([title, "count"], header=True)]
    rows += [_row([k, v]) for k, v in counts.items()]
    return f'<table id="{table_id}">{"".join(rows)}</table>'


def render_report(doc: Mapping[str, Any]) -> str:
    """The HTML page for one ``simulate --json`` document."""
    fleet, run, audit = doc["fleet"], doc["run"], doc["audit"]
    verdict = ('<span class="ok">passed</span>' if audit["ok"]
               else '<span class="bad">FAILED</span>')
    summary = [
        ("gateways", run["gateways"]), ("enrolled", run["enrolled"]),
        ("gave up", run["failed"]), ("elapsed (s)", f"{run['elapsed_s']:.3f}"),
        ("gateways/s", f"{run['gateways_per_s']:.1f}"), ("attempts", run["attempts"]),
        ("retries", run["retries"]), ("new mappings", run["mappings_created"]),
        ("simulator CPU (s)", f"{run['simulator_cpu_s']:.3f}"),
        ("simulator CPU per gateway (ms)", f"{run['simulator_cpu_per_gateway_ms']:.3f}"),
    ]  # fmt: skip
    steps = [_row(["step", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"], header=True)]
    steps += [_row([name, s["count"], _ms(s["p50_ms"]), _ms(s["p95_ms"]), _ms(s["p99_ms"]),
                    _ms(s["max_ms"])]) for name, s in run["steps"].items()]  # fmt: skip
    problems = "".join(f"<li>{_e(p)}</li>" for p in audit["problems"])
    title = f"edge-provision simulate: {fleet['run_name']}"
    body = [
        '<?xml version="1.0" encoding="utf-8"?>',
        "<!DOCTYPE html>",
        '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(run["started_at"])}; {fleet["gateways"]} gateways (MACs '
        f'{_e(fleet["mac_prefix"])}:xx:xx), concurrency {fleet["concurrency"]}, ramp '
        f'{fleet["ramp_s"]:g} s, CSR {"on" if fleet["csr"] else "off"}, secure bootstrap '
        f'{"on" if fleet["secure"] else "off"}, MQTT {_e(fleet["mqtt_url"] or "off")}, time '
        f'scale {fleet["time_scale"]:g}; {_e(fleet["provision_url"])}. Audit: {verdict}.</p>',
        '<table id="summary">' + "".join(_row([k, v]) for k, v in summary) + "</table>",
        "<h2>Enrollments over time</h2>",
        _timeline_svg(run["timeline"], int(run["enrolled"])),
        "<h2>Latency per step</h2>",
        _latency_svg(run["steps"]),
        f'<table id="steps">{"".join(steps)}</table>',
        "<h2>Errors</h2>",
        _counts_table("attempt-errors", "failed attempts by class", run["attempt_errors"]),
        _counts_table("failures", "gateways that gave up, by class", run["failures"]),
        "<h2>Audit</h2>",
        f'<p id="audit" data-ok="{str(audit["ok"]).lower()}">{verdict}: '
        f'{audit["configs"]} bootstrap configs, {audit["things"]} things, '
        f'{audit["channels"]} channels of the run; {audit["fetched"]} configs fetched with '
        f'their keys; {audit["duplicates"]} gateway(s) duplicated.</p>',
        _counts_table("findings", "findings by kind", audit["findings"]),
        f'<ul class="problems">{problems}</ul>' if problems else "",
        "</body>",
        "</html>",
    ]
    return "\n".join(part for part in body if part) + "\n"
