"""A schema-based fuzzer (schemathesis) against the real lab server, with every check on.

The fuzzer takes the document the server serves at ``/openapi.json`` and, for
every documented operation, sends requests built from it (valid ones and
deliberately invalid ones); every answer must be documented (status, content
type, headers, schema), valid data accepted, invalid data refused, no 5xx, and
an undocumented method a 405 with a right ``Allow``. Bounded for CI: a fixed
number of examples per operation (``EDGE_PROVISION_FUZZ_EXAMPLES``, default 25),
derandomised, and each example's request has a timeout.

schemathesis needs Python >= 3.11: on older interpreters the module is skipped.
The server's operator token is written to its state directory before it
starts, so that the fuzzer can be configured when the module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from _lab_util import lab_settings, serving
from hypothesis import HealthCheck, settings

from edge_provision.lab.http.openapi import document
from edge_provision.lab.server import TOKEN_FILE, RunningLabServer

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis (test extra) needs Python >= 3.11; the fuzzer runs "
    "on the suite's main interpreter")

TIMEOUT = 10
FUZZ_EXAMPLES = int(os.environ.get("EDGE_PROVISION_FUZZ_EXAMPLES", "25"))
OPERATOR_TOKEN = "fuzz-operator-token"
THING_KEY = "fuzz-thing-key"

schema = schemathesis.openapi.from_dict(document(header_required=True),
                                        config=schemathesis.Config.from_dict({
    "request-timeout": TIMEOUT,
    "generation": {"mode": "all", "max-examples": FUZZ_EXAMPLES, "deterministic": True},
    "auth": {"openapi": {"operatorToken": {"api_key": f"Bearer {OPERATOR_TOKEN}"},
                         "thingKey": {"api_key": f"Thing {THING_KEY}"}}},
    "checks": {"enabled": True},
}))  # fmt: skip


@pytest.fixture(scope="module")
def fuzzed_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLabServer]:
    """One lab server (a token file, so the header is required) for every fuzzed operation."""
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "lab").mkdir(mode=0o700)
    (tmp / "lab" / TOKEN_FILE).write_text(OPERATOR_TOKEN + "\n")
    (tmp / "lab" / TOKEN_FILE).chmod(0o600)
    with serving(lab_settings(tmp)) as server:
        yield server


def test_fuzzed_document_is_the_served_one(fuzzed_lab: RunningLabServer) -> None:
    """What the fuzzer reads is exactly what the server serves at /openapi.json."""
    served = requests.get(f"{fuzzed_lab.url}/openapi.json", timeout=TIMEOUT).json()
    assert served == document(header_required=True)
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert operations == {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_operations_conform(case: Any, fuzzed_lab: RunningLabServer) -> None:
    """Every generated request gets a documented answer; valid data accepted, invalid refused."""
    case.call_and_validate(base_url=fuzzed_lab.url)
