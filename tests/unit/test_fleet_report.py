"""The HTML report: well-formed XML, self-contained, the same numbers as --json."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from edge_provision.fleet.report import render_report

NS = {"h": "http://www.w3.org/1999/xhtml", "s": "http://www.w3.org/2000/svg"}


def _doc(ok: bool = True) -> dict[str, Any]:
    step = {"count": 3, "p50_ms": 1.234, "p95_ms": 2.5, "p99_ms": 9.876, "max_ms": 10.0}
    return {
        "ok": ok, "exit_code": 0 if ok else 4,
        "fleet": {"run_name": "sim-abcdef", "mac_prefix": "02:ab:cd:ef", "seed": 1,
                  "gateways": 3, "concurrency": 2, "ramp_s": 0.0, "time_scale": 0.01,
                  "csr": True, "secure": False, "mqtt_url": None,
                  "provision_url": "http://127.0.0.1:1/<&>"},
        "run": {"gateways": 3, "enrolled": 3, "failed": 0, "attempts": 4, "retries": 1,
                "mappings_created": 3, "started_at": "2026-11-30T00:00:00Z",
                "elapsed_s": 1.5, "gateways_per_s": 2.0, "simulator_cpu_s": 0.3,
                "simulator_cpu_per_gateway_ms": 100.0,
                "steps": {"lookup": step, "mapping": dict(step, count=0, p50_ms=None,
                                                          p95_ms=None, p99_ms=None,
                                                          max_ms=None)},
                "attempt_errors": {"ServiceUnavailable": 1}, "failures": {},
                "failed_steps": {"lookup": 1},
                "timeline": {"bucket_s": 0.5, "enrolled": [1, 0, 2], "arrived": [3, 0, 0],
                             "failed_attempts": [1, 0, 0]}},
        "audit": {"ok": ok, "gateways": 3, "things": 3, "channels": 6, "configs": 3,
                  "fetched": 3, "duplicates": 0 if ok else 1,
                  "findings": {} if ok else {"duplicate": 1},
                  "problems": [] if ok else ["duplicate: gateway 1 (<x>): 2 configs"]},
    }


def test_report_is_xml_and_self_contained() -> None:
    """It parses as XML; no script, no external reference, characters escaped."""
    page = render_report(_doc(ok=False))
    root = ET.fromstring(page.split("\n", 1)[1].split("\n", 1)[1])  # after <?xml?>, DOCTYPE
    assert root.tag == "{http://www.w3.org/1999/xhtml}html"
    assert not any(el.tag.endswith("script") for el in root.iter())
    assert not any(k in ("href", "src") or k.endswith("}href") for el in root.iter()
                   for k in el.attrib)
    assert not re.search(r"url\(|@import|https?://(?!127\.0\.0\.1)", page.replace(
        "http://www.w3.org/", ""))
    assert "<&>" not in page and "&lt;&amp;&gt;" in page
    assert ET.fromstring(page.encode()) is not None  # the whole file, prolog included


def test_report_numbers_match_the_document() -> None:
    """Step table, timeline bars and audit verdict carry the --json numbers."""
    doc = _doc()
    root = ET.fromstring(render_report(doc).encode())
    rows = root.findall(".//h:table[@id='steps']/h:tr", NS)[1:]
    cells = {r[0].text: [c.text for c in r[1:]] for r in rows}
    assert cells["lookup"] == ["3", "1.23", "2.50", "9.88", "10.00"]
    assert cells["mapping"] == ["0", "-", "-", "-", "-"]
    bars = root.findall(".//s:svg[@id='timeline']/s:rect[@class='enrolled']", NS)
    assert [int(b.get("data-count", "")) for b in bars] == [1, 0, 2]
    line = root.find(".//s:svg[@id='timeline']/s:polyline", NS)
    assert line is not None and line.get("data-final") == "3"
    latency = root.findall(".//s:svg[@id='latency']/s:rect", NS)
    assert [(r.get("data-step"), r.get("data-ms")) for r in latency] == [
        ("lookup", "1.23"), ("lookup", "2.50"), ("lookup", "9.88")]
    audit = root.find(".//h:p[@id='audit']", NS)
    assert audit is not None and audit.get("data-ok") == "true"
