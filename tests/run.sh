#!/usr/bin/env bash
# The whole test suite, from a clean clone, on Debian with Python >= 3.9:
#   ./tests/run.sh            (extra arguments go to pytest, e.g. -k layout)
# Creates ./.venv (python3, or $PYTHON), installs edge-provision with its lab and test
# extras, installs Debian's mosquitto when it is missing (needs root or sudo; the MQTT
# tests are skipped with a clear reason otherwise), then runs ruff and mypy once and
# pytest. When the machine also has a Python 3.9 (the oldest we support: $PYTHON39,
# python3.9 on PATH, or pyenv's 3.9.x), it creates ./.venv39 with it and runs pytest a
# second time there. Each pytest run names its interpreter; the script fails if any
# step or either run fails. PYTHON39=none skips the 3.9 run.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null
}
describe() {  # "Python 3.11.7 (/path/to/python)"
    "$1" -c 'import platform, sys; print(f"Python {platform.python_version()} ({sys.executable})")'
}
make_venv() {  # make_venv DIR PYTHON: create DIR with PYTHON unless it exists, then install
    local dir=$1 python=$2
    if [ ! -x "$dir/bin/python" ]; then
        echo "==> creating $dir with $(describe "$python")"
        if ! "$python" -m venv "$dir" 2>/dev/null; then
            rm -rf "$dir"
            echo "==> installing python3-venv"
            apt_install python3-venv || { echo "error: '$python -m venv' failed; install python3-venv" >&2; exit 2; }
            "$python" -m venv "$dir"
        fi
    fi
    echo "==> installing edge-provision[lab,test] into $dir"
    "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$dir/bin/python" -m pip install -q -e '.[lab,test]'
}
find_python39() {  # prints a working Python 3.9 interpreter, or nothing
    local candidates=() candidate
    if [ -n "${PYTHON39:-}" ]; then
        [ "$PYTHON39" = none ] && return 0
        candidates+=("$PYTHON39")
    else
        candidates+=(python3.9)
        if command -v pyenv >/dev/null 2>&1; then
            candidates+=("$(pyenv root)"/versions/3.9*/bin/python3.9)
        fi
    fi
    for candidate in "${candidates[@]}"; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' >/dev/null 2>&1; then
            "$candidate" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    if [ -n "${PYTHON39:-}" ]; then
        echo "error: PYTHON39=$PYTHON39 is not a working Python 3.9" >&2
        exit 2
    fi
}

make_venv .venv "${PYTHON:-python3}"
PY39=$(find_python39)
if [ -n "$PY39" ]; then
    make_venv .venv39 "$PY39"
elif [ "${PYTHON39:-}" = none ]; then
    echo "==> PYTHON39=none: the suite runs on $(describe .venv/bin/python) only"
else
    echo "==> no Python 3.9 here: the suite runs on $(describe .venv/bin/python) only"
fi
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "==> installing mosquitto (Debian package) for the MQTT tests"
    apt_install mosquitto || echo "warning: could not install mosquitto; MQTT tests will be skipped" >&2
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "==> installing systemd (for systemd-analyze, which scores the units' hardening)"
    apt_install systemd || echo "warning: could not install systemd; the unit score test will be skipped" >&2
fi
echo "==> ruff ($(describe .venv/bin/python))"
.venv/bin/ruff check edge_provision tests bench
echo "==> mypy ($(describe .venv/bin/python))"
.venv/bin/mypy

failed=()
for venv in .venv ${PY39:+.venv39}; do
    echo "==> pytest on $(describe "$venv/bin/python")"
    "$venv/bin/python" -m pytest "$@" || failed+=("$(describe "$venv/bin/python")")
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'error: pytest failed on %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "==> all passed on $(describe .venv/bin/python)${PY39:+ and $(describe .venv39/bin/python)}"
