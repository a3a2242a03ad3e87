#!/usr/bin/env bash
# The whole test suite, from a clean clone, on Debian with Python >= 3.9:
#   ./tests/run.sh            (extra arguments go to pytest, e.g. -k layout)
# Creates ./.venv, installs edge-provision with its lab and test extras, installs
# Debian's mosquitto when it is missing (needs root or sudo; the MQTT tests are
# skipped with a clear reason otherwise), then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null
}

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PYTHON --version 2>&1)"
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        echo "==> installing python3-venv"
        apt_install python3-venv || { echo "error: '$PYTHON -m venv' failed; install python3-venv" >&2; exit 2; }
        "$PYTHON" -m venv .venv
    fi
fi
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "==> installing mosquitto (Debian package) for the MQTT tests"
    apt_install mosquitto || echo "warning: could not install mosquitto; MQTT tests will be skipped" >&2
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "==> installing systemd (for systemd-analyze, which scores the units' hardening)"
    apt_install systemd || echo "warning: could not install systemd; the unit score test will be skipped" >&2
fi
echo "==> installing edge-provision[lab,test] into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[lab,test]'
echo "==> ruff"
.venv/bin/ruff check edge_provision tests bench
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
