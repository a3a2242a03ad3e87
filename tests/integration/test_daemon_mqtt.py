"""`edge-provision run` with a real broker: short-lived certificates, control-channel commands.

Everything is real and on 127.0.0.1: the lab server (`edge-provision serve --mqtt`) with
its own mosquitto as a child process, the daemon as a process with its enroll/renew
children, sd_notify on an AF_UNIX socket in tmp_path, and paho clients for the checks.
Every wait is bounded; every process is killed in a ``finally``.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _daemon_util import WAIT_S, Notify, Procs, cli, daemon_env, stop_daemon
from _mqtt_lab import MOSQUITTO, Subscriber, needs_mosquitto, senml

from edge_provision.agent import mqtt
from edge_provision.agent.store import Generation, Store
from edge_provision.crypto import pki
from edge_provision.lab.mosquitto import ADMIN_USER

pytestmark = needs_mosquitto


@dataclass(frozen=True)
class Lab:
    """The running lab server, as its banner describes it."""

    url: str
    token: str
    tcp_url: str
    ssl_url: str | None
    admin_password: str


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Start processes; they are stopped after the test."""
    with Procs(tmp_path, graceful=True) as p:
        yield p


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notify]:
    """The daemon's NOTIFY_SOCKET."""
    with Notify(tmp_path / "notify.sock") as n:
        yield n


def _banner(proc: subprocess.Popen[bytes], log: Path) -> list[str]:
    """The lab's stdout lines up to "press Ctrl-C to stop" (bounded)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + WAIT_S
    buf = b""
    while b"press Ctrl-C to stop" not in buf:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, log.read_text()
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, log.read_text()
            buf += chunk
    return buf.decode().splitlines()


def _start_lab(procs: Procs, tmp_path: Path, *extra: str, **env: str) -> Lab:
    """`edge-provision serve --mqtt --mqtt-port 0 ...` as a process; its banner parsed."""
    full_env = dict(os.environ, EDGE_PROVISION_LAB_MOSQUITTO_BIN=MOSQUITTO or "mosquitto", **env)
    proc = procs.start(cli("--state-dir", str(tmp_path / "lab"), "serve", "--port", "0",
                           "--mqtt", "--mqtt-port", "0", *extra), full_env, "lab.log",
                       stdout=subprocess.PIPE)  # fmt: skip
    lines = _banner(proc, tmp_path / "lab.log")
    url = next(ln.split()[-1] for ln in lines if ln.startswith("listening on "))
    brokers = [ln.split()[-1] for ln in lines if ln.startswith("mqtt broker: ")]
    secret = next(ln.split()[-1] for ln in lines if ln.startswith("mqtt admin: "))
    return Lab(url, (tmp_path / "lab" / "api-token").read_text().strip(),
               next(b for b in brokers if b.startswith("tcp://")),
               next((b for b in brokers if b.startswith("ssl://")), None),
               Path(secret).read_text().strip())


def _run_daemon(procs: Procs, tmp_path: Path, notify: Notify, lab: Lab,
                **extra: str) -> subprocess.Popen[bytes]:  # fmt: skip
    env = daemon_env(notify, lab.url, lab.token,
                     CONFIGURATION_DIRECTORY=str(tmp_path / "etc"),
                     EDGE_PROVISION_MQTT_URL=lab.tcp_url, EDGE_PROVISION_MQTT_VERIFY="always",
                     EDGE_PROVISION_MQTT_TIMEOUT="5", EDGE_PROVISION_MIN_RERUN="0.5")
    env.update(extra)
    return procs.start(cli("--state-dir", str(tmp_path / "gw"), "--log-level", "info", "run"),
                       env, "daemon.log")


def _stop(proc: subprocess.Popen[bytes], notify: Notify) -> int:
    return stop_daemon(proc, notify, 10)[0]


def _current(tmp_path: Path) -> Generation:
    gen = Store(tmp_path / "gw").current_generation()
    assert gen is not None
    return gen


def _cert(gen: Generation) -> pki.CertInfo:
    pem = gen.read_certificate(gen.gateway_thing_id)
    assert pem is not None
    return pki.parse_certificate(pem[0])


def _generation_of(status: str) -> int:
    return int(status.split("generation ", 1)[1].split(",")[0].split(";")[0])


def test_running_daemon_renews_short_certificates_and_mqtt_keeps_working(
    procs: Procs, notify: Notify, tmp_path: Path
) -> None:
    """8 s certificates, mTLS broker: the daemon renews each one before it expires (twice+)."""
    lab = _start_lab(procs, tmp_path, "--mqtt-tls-port", "0", "--mqtt-require-cert",
                     MF_PROVISION_CERTS_HOURS_VALID="8s")  # fmt: skip
    assert lab.ssl_url is not None
    daemon = _run_daemon(procs, tmp_path, notify, lab, EDGE_PROVISION_MQTT_URL=lab.ssl_url,
                         EDGE_PROVISION_MQTT_MTLS="true", EDGE_PROVISION_RENEW_BEFORE="4")
    notify.expect(lambda m: m.startswith("READY=1"))
    at, line = notify.status_timed("provisioned: generation 1")
    previous = _cert(_current(tmp_path))
    # backdated by a tenth of the lifetime (0.8 s), certificate times are whole seconds
    assert (previous.not_after - previous.not_before).total_seconds() == pytest.approx(8.8, abs=1)
    seen = {1: previous.serial}
    while len(seen) < 3:
        at, line = notify.status_timed("provisioned: generation ", timeout_s=15)
        number = _generation_of(line)
        if number in seen:
            continue
        # the switch happened before this STATUS line, which came before the old expiry
        assert at < previous.not_after.timestamp(), (line, previous)
        gen = _current(tmp_path)
        assert gen.number >= number and gen.source == "renewal"
        cert = _cert(gen)
        assert cert.serial not in seen.values()
        issued = cert.not_after.timestamp() - 8  # the lab backdates not_before by 0.8 s
        # the new credentials work on the mTLS listener, right after the switch
        report = mqtt.verify_credentials(
            lab.ssl_url, gen.gateway_thing.id, gen.gateway_thing.key,
            mqtt.control_channel_id(gen), ca_path=gen.ca_path,
            cert_path=gen.cert_path(gen.gateway_thing_id),
            key_path=gen.key_path(gen.gateway_thing_id), mtls=True, timeout_s=5,
        )  # fmt: skip
        assert report.published_on is not None
        assert issued <= time.time() < cert.not_after.timestamp()
        seen[number] = cert.serial
        previous = cert
    assert daemon.poll() is None
    assert _stop(daemon, notify) == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "child started command=renew" in log and "Traceback" not in log


def _control_setup(procs: Procs, tmp_path: Path, notify: Notify
                   ) -> tuple[Lab, subprocess.Popen[bytes], Subscriber, str]:  # fmt: skip
    lab = _start_lab(procs, tmp_path)
    daemon = _run_daemon(procs, tmp_path, notify, lab, EDGE_PROVISION_CONTROL_LISTENER="true")
    notify.status("provisioned: generation 1")
    gen = _current(tmp_path)
    control = mqtt.control_channel_id(gen)
    assert control is not None
    port = mqtt.parse_broker_url(lab.tcp_url).port
    admin = Subscriber(port, ADMIN_USER, lab.admin_password, f"channels/{control}/messages/res")
    log = tmp_path / "daemon.log"
    deadline = time.monotonic() + WAIT_S
    while "control listener running generation=1" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return lab, daemon, admin, control


def _close(admin: Subscriber) -> None:
    """Disconnect; drop the callback that ties the paho client to ``admin`` (a gc cycle)."""
    admin.close()
    admin.client.on_message = None


def _replies(admin: Subscriber, request_id: str, count: int,
             timeout_s: float = WAIT_S) -> list[dict[str, object]]:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        found = [rec for _, body in admin.received() for rec in senml(body)
                 if rec.get("bn") == request_id]  # fmt: skip
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"replies to {request_id}: {found}"
        time.sleep(0.05)


def test_renew_command_on_the_control_channel_renews(procs: Procs, notify: Notify,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """`renew` on channels/<control>/messages/req: renew --force now, replies accepted + done."""
    _, daemon, admin, control = _control_setup(procs, tmp_path, notify)
    try:
        before = _cert(_current(tmp_path)).serial
        admin.publish(f"channels/{control}/messages/req", b'[{"bn":"req-7:","n":"renew"}]')
        notify.status("renewing: generation 1", 10)
        accepted, done = _replies(admin, "req-7", 2)
        assert accepted["n"] == "renew" and accepted["vs"] == "accepted: renewing: generation 1"
        assert str(done["vs"]).startswith("done: provisioned: generation 2, next renewal ")
        gen = _current(tmp_path)
        assert gen.number == 2 and gen.source == "renewal"
        assert _cert(gen).serial != before
        # the listener was restarted with the new generation and still answers
        log = tmp_path / "daemon.log"
        deadline = time.monotonic() + WAIT_S
        while "control listener running generation=2" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        admin.publish(f"channels/{control}/messages/req", b'[{"bn":"req-8:","n":"status"}]')
        (status,) = _replies(admin, "req-8", 1)
        assert str(status["vs"]).startswith("provisioned: generation 2, next renewal ")
    finally:
        _close(admin)
    assert _stop(daemon, notify) == 0
    assert "child started command=renew args=--force" in (tmp_path / "daemon.log").read_text()


def test_commands_while_busy_and_reprovision(procs: Procs, notify: Notify,
                                             tmp_path: Path) -> None:  # fmt: skip
    """A second command while a child runs gets "busy"; `reprovision` runs enroll --force."""
    _, daemon, admin, control = _control_setup(procs, tmp_path, notify)
    topic = f"channels/{control}/messages/req"
    try:
        admin.publish(topic, b'[{"bn":"a:","n":"reprovision"},{"n":"ignored"}]')
        admin.publish(topic, b'[{"bn":"b:","n":"renew"}]')
        admin.publish(topic, b'[{"bn":"c:","n":"exec","vs":"ls"}]')  # the Mainflux Agent's
        accepted, done = _replies(admin, "a", 2)
        (busy,) = _replies(admin, "b", 1)
        assert accepted["vs"] == "accepted: reprovisioning: generation 1"
        assert str(done["vs"]).startswith("done: provisioned: generation 2")
        assert str(busy["vs"]).startswith("busy: enroll is running")
        assert _replies(admin, "c", 0) == []
        assert _current(tmp_path).number == 2
    finally:
        _close(admin)
    assert _stop(daemon, notify) == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "child started command=enroll args=--force" in log


def test_listener_on_without_a_broker_retries_and_never_blocks(
    procs: Procs, notify: Notify, tmp_path: Path
) -> None:
    """The broker URL points at a closed port: the listener retries with backoff; SIGUSR1 works."""
    lab = _start_lab(procs, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    daemon = _run_daemon(procs, tmp_path, notify, lab, EDGE_PROVISION_CONTROL_LISTENER="true",
                         EDGE_PROVISION_MQTT_VERIFY="never", EDGE_PROVISION_MQTT_URL=dead)
    notify.status("provisioned: generation 1")
    log = tmp_path / "daemon.log"
    deadline = time.monotonic() + WAIT_S
    while log.read_text().count("control listener not connected") < 2:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    daemon.send_signal(signal.SIGUSR1)
    notify.status("renewing: generation 1", 5)
    notify.status("provisioned: generation 1")
    assert daemon.poll() is None
    assert _stop(daemon, notify) == 0  # STOPPING=1 and the exit each within a bounded wait
    assert "retry_in_s=" in log.read_text() and "Traceback" not in log.read_text()


def test_listener_off_never_imports_mqtt(tmp_path: Path) -> None:
    """With mqtt.control_listener off, a started daemon has not imported agent.mqtt."""
    code = (
        "import sys, signal, threading, os\n"
        "from edge_provision.settings import load_agent_settings\n"
        "from edge_provision.agent.daemon.supervisor import Daemon\n"
        f"s = load_agent_settings(env={{'EDGE_PROVISION_STATE_DIR': {str(tmp_path)!r}}})\n"
        "threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
        "Daemon(s, argv_prefix=[sys.executable, '-c', 'raise SystemExit(75)'], env={}).run()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'paho'"
        " or m in ('edge_provision.agent.mqtt', 'edge_provision.agent.daemon.control', 'ssl')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]", out.stderr
