"""A real full disk for the agent: a small tmpfs, filled up, in a private mount namespace.

Why this and not ``RLIMIT_FSIZE``: a file-size limit gives ``EFBIG`` (and ``SIGXFSZ``) on
one file that grows too large, while a full disk gives ``ENOSPC`` on any write, also a new
small file, and still lets files be removed: only a filesystem with no space left shows
what a gateway with a full disk does. ``unshare --user --map-root-user --mount`` gives an
unprivileged user a mount namespace of its own in which mounting a tmpfs is allowed; the
mount disappears with the namespace, so nothing is left mounted on the machine. Where user
namespaces are disabled the tests that need it are skipped (:func:`full_disk_available`).

:func:`run_on_full_disk` copies a prepared state directory onto a 1 MiB tmpfs, fills the
tmpfs with a filler file until ``ENOSPC``, runs the given agent commands there one after
the other, and copies the state directory back out (modes and the ``current`` link kept)
for the test to inspect.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 120

_DRIVER = r'''
import json, os, shutil, subprocess, sys
spec = json.loads(sys.argv[1])
mnt = spec["mount"]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", mnt], check=True)
state = os.path.join(mnt, "state")
shutil.copytree(spec["seed"], state, symlinks=True)
try:  # fill the disk: every byte the agent writes from now on fails with ENOSPC
    with open(os.path.join(mnt, "filler"), "wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()
except OSError as exc:
    assert exc.errno == 28, exc
results = []
for argv in spec["commands"]:
    argv = [a.replace("{state}", state) for a in argv]
    done = subprocess.run(argv, env=spec["env"], capture_output=True, text=True,
                          timeout=spec["timeout"], stdin=subprocess.DEVNULL)
    results.append({"argv": argv, "returncode": done.returncode, "stdout": done.stdout,
                    "stderr": done.stderr})
free = os.statvfs(mnt)
results.append({"free_bytes": free.f_bavail * free.f_frsize})
shutil.copytree(state, spec["out"], symlinks=True)
print(json.dumps(results))
'''


@dataclass(frozen=True)
class Ran:
    """One command run on the full disk."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


@functools.lru_cache(maxsize=1)
def full_disk_available() -> bool:
    """True when this machine lets us mount a tmpfs in a private user + mount namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "true"],
                           capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def run_on_full_disk(seed: Path, out: Path, commands: list[list[str]],
                     env: dict[str, str], work: Path) -> tuple[list[Ran], int]:
    """Run ``commands`` (``{state}`` stands for the state directory) against a copy of
    ``seed`` on a full 1 MiB tmpfs; the state afterwards is copied to ``out``.

    Returns what each command did and the free bytes left on the tmpfs at the end.
    """
    mount = work / "mnt"
    mount.mkdir()
    spec = {"mount": str(mount), "seed": str(seed), "out": str(out), "commands": commands,
            "env": env, "timeout": TIMEOUT_S}
    unshare = shutil.which("unshare")
    assert unshare is not None
    done = subprocess.run([unshare, "--user", "--map-root-user", "--mount", sys.executable,
                           "-c", _DRIVER, json.dumps(spec)], capture_output=True, text=True,
                          timeout=TIMEOUT_S * (len(commands) + 1), check=False)
    assert done.returncode == 0, done.stderr
    *runs, tail = json.loads(done.stdout)
    return [Ran(**r) for r in runs], int(tail["free_bytes"])
