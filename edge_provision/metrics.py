"""Prometheus text exposition (pure rendering) and an atomic textfile writer.

The agent writes its metrics after every enroll/renew to ``agent.metrics_textfile`` for
node_exporter's textfile collector; the lab server renders its counters at ``/metrics``.
Only the standard library is used, so the lean daemon may import this module.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_provision import fileio

__all__ = [
    "CounterSet",
    "Metric",
    "agent_metrics",
    "lab_metrics",
    "render",
    "write_textfile",
]


@dataclass(frozen=True)
class Metric:
    """One metric family: name, help, type and ``(labels, value)`` samples."""

    name: str
    help: str
    kind: str  # "counter" | "gauge"
    samples: Sequence[tuple[Mapping[str, str], float]] = field(default_factory=tuple)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    """The text exposition format (version 0.0.4) of ``metrics``."""
    lines: list[str] = []
    for metric in metrics:
        help_text = metric.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {metric.name} {help_text}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value in metric.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
                lines.append(f"{metric.name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{metric.name} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` atomically (node_exporter must never read half a file); 0644."""
    fileio.atomic_write(path, text, mode=fileio.PUBLIC_MODE)


def agent_metrics(
    *,
    cert_expiry: Mapping[str, float],
    last_renewal_ts: float | None,
    renewals_total: int,
    failures_by_class: Mapping[str, int],
    generation: int | None,
) -> list[Metric]:
    """The gateway's metric families (expiry per thing id as Unix seconds)."""
    return [
        Metric("edge_provision_certificate_expiry_timestamp_seconds",
               "When the thing's current client certificate expires (Unix time).", "gauge",
               [({"thing_id": t}, v) for t, v in sorted(cert_expiry.items())]),
        Metric("edge_provision_last_renewal_timestamp_seconds",
               "When the certificates were last renewed (Unix time).", "gauge",
               [({}, last_renewal_ts)] if last_renewal_ts is not None else []),
        Metric("edge_provision_renewals_total", "Successful certificate renewals.", "counter",
               [({}, float(renewals_total))]),
        Metric("edge_provision_failures_total", "Failed enroll/renew runs by error class.",
               "counter", [({"class": k}, float(v)) for k, v in sorted(failures_by_class.items())]),
        Metric("edge_provision_current_generation", "Number of the current generation.",
               "gauge", [({}, float(generation))] if generation is not None else []),
    ]  # fmt: skip


_LAB_COUNTERS = (
    ("mappings_total", "POST /mapping requests that created a gateway's entities."),
    ("bootstrap_fetches_total", "Device bootstrap requests answered with a configuration."),
    ("certificates_issued_total", "Client certificates issued (CSR and server-generated)."),
)


def lab_metrics(counters: CounterSet) -> list[Metric]:
    """The lab server's ``/metrics`` families from its :class:`CounterSet`.

    Counter names used by the app: ``mappings_total``, ``bootstrap_fetches_total``,
    ``certificates_issued_total`` and ``http_requests_total`` (label ``status``).
    """
    families = [
        Metric(f"edge_provision_lab_{name}", text, "counter",
               counters.samples(name) or [({}, 0.0)])
        for name, text in _LAB_COUNTERS
    ]  # fmt: skip
    families.append(Metric("edge_provision_lab_http_requests_total",
                           "HTTP requests answered, by status code.", "counter",
                           counters.samples("http_requests_total")))  # fmt: skip
    return families


class CounterSet:
    """Thread-safe named counters with optional labels (for the lab server)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, name: str, by: float = 1.0, **labels: str) -> None:
        """Add ``by`` to counter ``name`` with ``labels``."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + by

    def value(self, name: str, **labels: str) -> float:
        """The current value (0 if never counted)."""
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def samples(self, name: str) -> list[tuple[Mapping[str, str], float]]:
        """Every ``(labels, value)`` of counter ``name``."""
        with self._lock:
            return [(dict(lbl), v) for (n, lbl), v in sorted(self._values.items()) if n == name]
