"""The state lock really excludes a second process (flock on state_dir/.lock).

Who holds the lock and who waits for it is read from the kernel (``/proc/locks``), so no
assertion rests on a process having had "enough time" to get somewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_provision.agent.store import Store
from edge_provision.errors import LockBusy

WAIT_S = 30.0

CHILD = """
import sys
from pathlib import Path
from edge_provision.errors import LockBusy
from edge_provision.agent.store import Store
store = Store(Path(sys.argv[1]))
mode = sys.argv[2]
print("waiting", flush=True)
try:
    with store.lock(blocking=mode != "try", holder="edge-provision " + mode):
        released = Path(sys.argv[1], "released")
        print("acquired", "after-release" if released.exists() else "first", flush=True)
        if mode == "hold":
            sys.stdin.readline()  # hold the lock until the test says so
            released.write_text("yes")
except LockBusy as exc:
    print("LockBusy:", exc, flush=True)
    sys.exit(3)
"""


def run_child(state_dir: Path, mode: str) -> subprocess.Popen[str]:
    """A child that tries (``try``), waits for (``block``) or holds (``hold``) the lock."""
    return subprocess.Popen([sys.executable, "-c", CHILD, str(state_dir), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def flocks(path: Path) -> list[tuple[bool, int]]:
    """``(waiting, pid)`` of every flock the kernel lists on ``path`` (/proc/locks)."""
    st = path.stat()
    found = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        waiting = fields[1] == "->"
        if waiting:
            del fields[1]
        if fields[1] != "FLOCK":
            continue
        major, minor, inode = fields[5].split(":")
        if ((int(major, 16), int(minor, 16), int(inode))
                == (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)):  # fmt: skip
            found.append((waiting, int(fields[4])))
    return found


def until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check()`` until true; fail after WAIT_S naming ``what``."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never saw: {what}"
        time.sleep(0.02)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes, killed at the end whatever happened."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT_S)


def held_by_a_child(tmp_path: Path, children: list[subprocess.Popen[str]]
                    ) -> tuple[Store, subprocess.Popen[str]]:  # fmt: skip
    """A store in tmp_path whose lock a child holds (label ``edge-provision hold``)."""
    store = Store(tmp_path / "state")
    with store.lock():  # creates the state dir and the lock file
        pass
    holder = run_child(store.state_dir, "hold")
    children.append(holder)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "waiting\n"
    assert holder.stdout.readline() == "acquired first\n"
    return store, holder


def test_second_process_cannot_take_a_held_lock(tmp_path: Path) -> None:
    """lock(blocking=False) in another process raises LockBusy (naming us) while we hold it."""
    store = Store(tmp_path / "state")
    with store.lock():
        assert flocks(store.lock_path) == [(False, os.getpid())]  # we hold it
        child = run_child(store.state_dir, "try")
        out, err = child.communicate(timeout=WAIT_S)
    assert child.returncode == 3, err
    assert out.splitlines()[1].startswith("LockBusy:")
    assert f"the state lock is held by pid {os.getpid()} (edge-provision, since " in out
    child = run_child(store.state_dir, "try")
    out, err = child.communicate(timeout=WAIT_S)
    assert (child.returncode, out.splitlines()[1]) == (0, "acquired first"), err


def test_a_lock_held_by_a_child_excludes_us_and_a_waiter(
        tmp_path: Path, children: list[subprocess.Popen[str]]) -> None:  # fmt: skip
    """The child holds the lock (seen in /proc/locks); we cannot take it; a blocking waiter
    is queued in the kernel and gets the lock only after the holder released it."""
    store, holder = held_by_a_child(tmp_path, children)
    assert holder.stdin is not None
    assert flocks(store.lock_path) == [(False, holder.pid)]  # the child holds it
    with pytest.raises(LockBusy, match="held by pid") as busy, store.lock(blocking=False):
        pass
    assert busy.value.holder is not None
    assert busy.value.holder.startswith(f"pid {holder.pid} (edge-provision hold, since ")
    assert busy.value.exit_code == 75 and busy.value.reason.value == "busy"
    waiter = run_child(store.state_dir, "block")
    children.append(waiter)
    until(lambda: (True, waiter.pid) in flocks(store.lock_path), "the waiter queued on flock")
    holder.stdin.write("release\n")
    holder.stdin.flush()
    out, err = waiter.communicate(timeout=WAIT_S)
    assert (waiter.returncode, out.splitlines()) == (0, ["waiting", "acquired after-release"]), err
    assert holder.wait(timeout=WAIT_S) == 0
    with store.lock(blocking=False):  # free again
        assert flocks(store.lock_path) == [(False, os.getpid())]


def test_a_waiter_hears_who_holds_the_lock_then_gets_it(
        tmp_path: Path, children: list[subprocess.Popen[str]]) -> None:  # fmt: skip
    """wait_s: the waiter is told once who holds the lock (from the lock file), and takes it
    as soon as the holder lets go; the lock file is empty again after a release."""
    store, holder = held_by_a_child(tmp_path, children)
    assert holder.stdin is not None
    heard: list[str] = []

    def on_wait(who: str) -> None:
        heard.append(who)
        holder.stdin.write("release\n")  # type: ignore[union-attr]
        holder.stdin.flush()  # type: ignore[union-attr]

    with store.lock(wait_s=WAIT_S, holder="edge-provision test", on_wait=on_wait):
        assert (store.state_dir / "released").exists()  # only after the holder let go
        assert '"command": "edge-provision test"' in store.lock_path.read_text()
    assert len(heard) == 1 and heard[0].startswith(f"pid {holder.pid} (edge-provision hold, ")
    assert store.lock_path.read_text() == ""
    assert holder.wait(timeout=WAIT_S) == 0


def test_a_bounded_wait_ends_in_lock_busy(
        tmp_path: Path, children: list[subprocess.Popen[str]]) -> None:  # fmt: skip
    """A lock held longer than wait_s: LockBusy (temporary, exit 75) naming the holder."""
    store, holder = held_by_a_child(tmp_path, children)
    with pytest.raises(LockBusy) as busy, store.lock(wait_s=0.3):
        pass
    assert busy.value.retryable and busy.value.holder is not None
    assert f"held by pid {holder.pid} (edge-provision hold" in str(busy.value)
    assert "waited for 0." in str(busy.value) and "EDGE_PROVISION_LOCK_WAIT" in str(busy.value)
