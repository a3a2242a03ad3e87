"""The daemon on a hostile network: a real ``edge-provision run`` behind the fault proxy.

The lab server runs in this process, the daemon and its enroll children are real
processes, and what the daemon says arrives on a real AF_UNIX notify socket.
"""

from __future__ import annotations

import re
from pathlib import Path

from _agent_lab import lab_token
from _daemon_util import Notify, Procs, cli, daemon_env, stop_daemon

from edge_provision.lab.server import RunningLabServer
from edge_provision.testing import Fault, FaultProxy

GARBAGE_S = 10.0
BACKOFF_CAP_S = 1.0  # daemon_env's EDGE_PROVISION_BACKOFF_CAP
RECOVERY_WAIT_S = 30.0  # bound on waiting for "provisioned" once the network is back
_RETRY = re.compile(r"retry (\d+) in ([0-9.]+) s")


def test_captive_portal_for_ten_seconds_then_enrolled_within_the_backoff_cap(
        tmp_path: Path, lab: RunningLabServer) -> None:  # fmt: skip
    """Garbage is transient: the daemon backs off (never past the cap, never 'failed') and
    is provisioned at the first attempt after the network recovers."""
    with (Procs(tmp_path) as procs, Notify(tmp_path / "notify.sock") as notify,
          FaultProxy(lab.url) as proxy):
        proxy.set(Fault.HTML, for_s=GARBAGE_S)
        env = daemon_env(notify, proxy.url, lab_token(tmp_path / "lab"),
                         EDGE_PROVISION_MQTT_VERIFY="never")  # fmt: skip
        daemon = procs.start(cli("--state-dir", str(tmp_path / "state"), "run"), env,
                             "daemon.log")  # fmt: skip
        notify.expect(lambda m: m.startswith("READY=1"))
        first = notify.status("retry 1 in")
        assert first.startswith("STATUS=waiting for network, retry 1 in ") and "BadReply" in first
        done = notify.status("provisioned: generation 1", timeout_s=GARBAGE_S + RECOVERY_WAIT_S)
        statuses = [m for m in notify.messages if m.startswith("STATUS=")]
        assert daemon.poll() is None
        assert stop_daemon(daemon, notify, 10)[0] == 0
        faults = proxy.faults()
    assert done in statuses
    assert not [s for s in statuses if s.startswith("STATUS=failed")]  # never "needs a person"
    retries = [(int(n), float(s)) for m in statuses for n, s in _RETRY.findall(m)]
    assert len(retries) >= 2 and all(delay <= BACKOFF_CAP_S for _, delay in retries)
    # every attempt during the garbage got the portal; the first one after it enrolled
    assert Fault.HTML in faults and faults[-1] is Fault.PASS
    first_pass = faults.index(Fault.PASS)
    assert all(f is Fault.HTML for f in faults[:first_pass])
    assert all(f is Fault.PASS for f in faults[first_pass:])
