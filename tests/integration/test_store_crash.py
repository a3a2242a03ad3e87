"""SIGKILL a process in the middle of writing generations: the store stays consistent."""

from __future__ import annotations

import json
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge_provision.agent.store import Phase, Store

ITERATIONS = 20
MAX_KILL_DELAY_S = 0.05

WRITER = """
import json, sys, time
from pathlib import Path
from edge_provision.agent.store import GenerationData, Store, StoredChannel, StoredThing

store = Store(Path(sys.argv[1]))
run = int(sys.argv[2])
print("ready", flush=True)
deadline = time.monotonic() + 10
for n in range(1, 10_000):
    if time.monotonic() > deadline:
        break
    tag = f"{run}-{n}"
    data = GenerationData(
        things=(StoredThing("gw-thing", "gw", f"key-{tag}", {"external_id": "x"}),
                StoredThing("sensor", "sensor", f"key2-{tag}")),
        channels=(StoredChannel("c1", "control", {"type": "control"}),),
        gateway_thing_id="gw-thing",
        bootstrap_content=json.dumps({"tag": tag}),
        source="mapping",
        external_id="aa:bb:cc:dd:ee:ff",
        certificates={"gw-thing": ("cert " + tag * 200, "key " + tag * 50)},
        ca_pem="ca " + tag,
    )
    with store.lock():
        print("write", n, flush=True)
        number = store.write_generation(data)
        print("save", n, flush=True)
        state = store.load_state().record("store", "done", {"generation": str(number)})
        store.save_state(state)
        print("switch", n, flush=True)
        store.switch_current(number)
        print("prune", n, flush=True)
        store.prune(keep=3)
"""
PHASES = ("write", "save", "switch", "prune")


def start_writer(state_dir: Path, run: int, marker: bytes) -> subprocess.Popen[bytes]:
    """Start the writer and wait (bounded) until it prints ``marker`` (e.g. ``switch 2``)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(state_dir), str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        line = proc.stdout.readline() if ready else b""
        if line.strip() == marker:
            return proc
        assert line, f"writer ended or stalled before {marker!r}"
    raise AssertionError(f"writer never reached {marker!r}")


def test_sigkill_during_writes_leaves_a_valid_store(tmp_path: Path) -> None:
    """After each SIGKILL: current is valid or absent, state loads cleanly, litter is ignored."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = Store(tmp_path / "state")
    seen_current = 0
    for run in range(ITERATIONS):
        # Wait for a random step of one of the first iterations, then kill 0-50 ms later:
        # the kill lands in every phase whatever the speed of the disk.
        marker = f"{rng.choice(PHASES)} {rng.randrange(1, 3)}".encode()
        proc = start_writer(store.state_dir, run, marker)
        time.sleep(rng.uniform(0, MAX_KILL_DELAY_S))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
        context = f"seed={seed} run={run} killed after {marker.decode()}"

        state = store.load_state()
        assert store.recovered_from is None, context  # atomic writes: never damaged
        current = store.current_generation()
        numbers = store.list_generations()
        if current is None:
            assert not store.current_link.is_symlink(), context
            assert state.phase is Phase.UNPROVISIONED, context
        else:
            seen_current += 1
            assert not current.is_fallback, context
            assert current.number in numbers, context
            tag = json.loads(current.bootstrap_content)["tag"]
            assert current.gateway_thing.key == f"key-{tag}", context
            assert current.read_certificate("gw-thing") == (
                "cert " + tag * 200,
                "key " + tag * 50,
            ), context
            assert state.current_generation == current.number, context
        for n in numbers:
            assert store.verify_generation(n) == (), f"{context} generation={n}"
        litter = sorted(p.name for p in store.generations_dir.glob(".*"))
        assert all(name.startswith((".tmp-", ".trash-")) for name in litter), context
        with store.lock(blocking=False):  # the dead writer's flock went with it
            removed = store.cleanup_temp()
        assert sorted(r for r in removed if r.startswith("generations/")) == [
            f"generations/{name}" for name in litter
        ], context
        assert list(store.generations_dir.glob(".*")) == [], context
        assert list(store.state_dir.glob(".*.tmp")) == [], context
        assert store.list_generations() == numbers, context
    assert seen_current > 0, f"seed={seed}: the writer never got a generation in"
