#!/usr/bin/env python3
"""The lab broker while things are added: other clients' round trips, new things' wait.

Starts the real lab server with its mosquitto (``serve --mqtt --mqtt-port 0``), fills
the platform with ``--things`` gateways (``POST /mapping``, ``--workers`` at a time),
then, while ``--clients`` of those things publish on their data channel and time each
message back (QoS 0 round trip through the broker, ``--interval-ms`` apart), adds
``--adds`` new gateways at ``--rate`` per second; for each, a checker connects with the
new thing's id and key from the 201 on until the broker accepts it (every 20 ms).

Reports the things at the end, round-trip p50/p99/max during the additions, time from
the 201 to the first accepted CONNECT (p50/p99/max) and the reloads the broker logged.
Bounded in count and time; 127.0.0.1 only.

    .venv/bin/python bench/lab_broker.py --things 5000 --adds 100 --rate 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _lab import LabServer, mosquitto_path

from edge_provision.agent import mqtt
from edge_provision.errors import MqttError

MAX_WAIT_S = 30.0  # a new thing that cannot connect by then counts as this


def _post(lab: LabServer, external_id: str) -> dict[str, object]:
    body = json.dumps({"external_id": external_id, "external_key": "k-" + external_id}).encode()
    req = urllib.request.Request(lab.url + "/mapping", data=body, method="POST", headers={
        "Authorization": f"Bearer {lab.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _data_channel(body: dict[str, object]) -> str:
    channels = body["channels"]
    assert isinstance(channels, list)
    return str(next(c["id"] for c in channels if c["metadata"].get("type") == "data"))


class _RoundTrips:
    """One thing publishing timestamps on its data channel and reading them back."""

    def __init__(self, port: int, thing: dict[str, str], channel: str, interval_s: float) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.samples: list[float] = []
        self.recording = False
        self._topic = f"channels/{channel}/messages/rt"
        self._interval_s = interval_s
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"rt-{thing['id']}")
        self.client.username_pw_set(thing["id"], thing["key"])
        self.client.on_connect = lambda c, *a: c.subscribe(self._topic, qos=0)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()
        if not self._ready.wait(30):
            raise SystemExit("a round-trip client could not subscribe")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_message(self, _c: object, _u: object, message: object) -> None:
        sent = struct.unpack("!d", message.payload)[0]  # type: ignore[attr-defined]
        if self.recording:
            self.samples.append(time.monotonic() - sent)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.client.publish(self._topic, struct.pack("!d", time.monotonic()), qos=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()


def _time_to_connect(url: str, thing: dict[str, str], answered: float) -> float:
    deadline = answered + MAX_WAIT_S
    while time.monotonic() < deadline:
        try:
            mqtt.verify_credentials(url, thing["id"], thing["key"], None, timeout_s=5)
            return time.monotonic() - answered
        except MqttError:
            time.sleep(0.02)
    return MAX_WAIT_S


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--things", type=int, default=1000, help="gateways before measuring")
    parser.add_argument("--adds", type=int, default=50, help="gateways added while measuring")
    parser.add_argument("--rate", type=float, default=5.0, help="additions per second")
    parser.add_argument("--clients", type=int, default=10, help="round-trip clients")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="between round trips")
    parser.add_argument("--workers", type=int, default=8, help="parallel POSTs while filling")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    env = {"EDGE_PROVISION_LAB_MOSQUITTO_BIN": mosquitto_path("lab_broker.py")}
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        lab = LabServer(Path(tmp) / "lab", ["--mqtt", "--mqtt-port", "0"], env)
        try:
            url = lab.brokers["tcp"]
            port = mqtt.parse_broker_url(url).port
            started = time.monotonic()
            with ThreadPoolExecutor(args.workers) as pool:
                bodies = list(pool.map(lambda n: _post(lab, f"fill-{n:06d}"), range(args.things)))
            fill_s = time.monotonic() - started
            firsts = [(b["things"][0], _data_channel(b)) for b in bodies[:args.clients]]
            for thing, _ in firsts:  # wait until the fill is in the broker
                _time_to_connect(url, thing, time.monotonic())  # type: ignore[arg-type]
            clients = [_RoundTrips(port, t, c, args.interval_ms / 1000)  # type: ignore[arg-type]
                       for t, c in firsts]
            time.sleep(1.0)
            log = Path(tmp) / "lab" / "mosquitto" / "mosquitto.log"
            reloads_before = log.read_text(errors="replace").count("Reloading config.")
            for c in clients:
                c.recording = True
            waits: list[float] = []
            checkers = ThreadPoolExecutor(16)
            futures = []
            for n in range(args.adds):
                due = time.monotonic() + 1 / args.rate
                body = _post(lab, f"add-{n:06d}")
                futures.append(checkers.submit(_time_to_connect, url, body["things"][0],
                                               time.monotonic()))  # type: ignore[index]
                time.sleep(max(0.0, due - time.monotonic()))
            waits = [f.result() for f in futures]
            checkers.shutdown()
            time.sleep(0.5)
            for c in clients:
                c.recording = False
            rtts = [s for c in clients for s in c.samples]
            for c in clients:
                c.close()
            reloads = log.read_text(errors="replace").count("Reloading config.") - reloads_before
            total = lab.get("/things?limit=1")["total"]
        finally:
            lab.stop()
    result = {
        "things": total, "fill_s": round(fill_s, 1), "adds": args.adds, "rate": args.rate,
        "round_trips": len(rtts),
        "rtt_p50_ms": round(statistics.median(rtts) * 1000, 1) if rtts else None,
        "rtt_p99_ms": round(_pct(rtts, 0.99) * 1000, 1), "rtt_max_ms": round(max(rtts) * 1000, 1),
        "connect_p50_ms": round(statistics.median(waits) * 1000),
        "connect_p99_ms": round(_pct(waits, 0.99) * 1000),
        "connect_max_ms": round(max(waits) * 1000), "reloads": reloads,
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>16}: {value}")


if __name__ == "__main__":
    main()
