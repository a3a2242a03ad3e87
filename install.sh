#!/usr/bin/env bash
# edge-provision installer for a gateway, and the README demo.
#
#   sudo ./install.sh [--prefix DIR] [--no-systemd] [--root DIR]   install (idempotent)
#   sudo ./install.sh --uninstall [--prefix DIR] [--root DIR]       remove (keeps config and state)
#   ./install.sh --demo                                              lab server + enrollment on loopback
#
# Install creates a virtual environment under the prefix (default /opt/edge-provision),
# installs this package into it, creates the service user, installs
# /etc/edge-provision/config.toml from configs/ (never overwriting an existing one) and
# systemd/edge-provision.service, and enables the unit. --root installs into another
# root directory (for image builds and tests): no user is created, systemctl is not run.
set -euo pipefail

SRC=$(cd "$(dirname "$0")" && pwd)
PREFIX=/opt/edge-provision
ROOT=
SYSTEMD=1
ACTION=install
SERVICE_USER=edge-provision
PYTHON=${PYTHON:-python3}

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --no-systemd) SYSTEMD=0; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --demo) ACTION=demo; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got '$PREFIX'" ;; esac
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}

ensure_venv() {  # ensure_venv DIR PIP-INSTALL-ARGS...
    local dir=$1; shift
    if [ ! -x "$dir/bin/python" ]; then
        say "creating virtual environment $dir"
        if ! "$PYTHON" -m venv "$dir" 2>/dev/null; then
            rm -rf "$dir"
            say "installing python3-venv"
            { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq python3-venv; } >/dev/null \
                || die "'$PYTHON -m venv' failed; install python3-venv"
            "$PYTHON" -m venv "$dir"
        fi
    fi
    say "installing edge-provision into $dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
}

# --------------------------------------------------------------------------- demo

server_pid=""
demo() {
    local venv="$SRC/.venv" work url="" token ep mqtt_args=() mqtt_url=""
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
        || die "Python >= 3.9 is needed, found $("$PYTHON" --version 2>&1)"
    if [ ! -x "$venv/bin/edge-provision" ] || ! "$venv/bin/python" -c 'import uvicorn' 2>/dev/null; then
        ensure_venv "$venv" -e "$SRC[lab]"
    fi
    ep="$venv/bin/edge-provision"
    work=$(mktemp -d "${TMPDIR:-/tmp}/edge-provision-demo.XXXXXX")
    cleanup() {
        if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
            kill -TERM "$server_pid" 2>/dev/null || true
            wait "$server_pid" 2>/dev/null || true
            say "lab server stopped"
        fi
    }
    trap cleanup EXIT INT TERM

    if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
        mqtt_args=(--mqtt --mqtt-port 0)   # a real broker whose auth follows the lab's things
    else
        say "mosquitto is not installed: the demo runs without a broker (apt-get install mosquitto)"
    fi
    say "starting the lab server on 127.0.0.1 (embedded SQLite + local CA in $work/lab)"
    PATH="$PATH:/usr/sbin" "$ep" serve --port 0 --state-dir "$work/lab" "${mqtt_args[@]}" \
        >"$work/lab.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        url=$(sed -n 's/^listening on \(http[^ ]*\).*/\1/p' "$work/lab.log" | head -n 1)
        [ -n "$url" ] && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/lab.log" >&2; die "the lab server did not start"; }
        sleep 0.1
    done
    [ -n "$url" ] || { cat "$work/lab.log" >&2; die "the lab server did not say where it listens"; }
    grep -v ' INFO \| WARNING ' "$work/lab.log" | sed 's/^/    /'
    token="$work/lab/api-token"
    mqtt_url=$(sed -n 's/^mqtt broker: \(tcp:[^ ]*\).*/\1/p' "$work/lab.log" | head -n 1)

    say "enrolling this machine: edge-provision enroll --provision-url $url"
    EDGE_PROVISION_TOKEN_FILE="$token" EDGE_PROVISION_MQTT_URL="$mqtt_url" \
        "$ep" --state-dir "$work/agent" enroll --provision-url "$url"

    say "edge-provision status"
    "$ep" --state-dir "$work/agent" status

    say "enrolling again is a no-op"
    EDGE_PROVISION_TOKEN_FILE="$token" EDGE_PROVISION_MQTT_URL="$mqtt_url" \
        "$ep" --state-dir "$work/agent" enroll --provision-url "$url"

    say "demo done; files are in $work"
}

# --------------------------------------------------------------------------- install

install_files() {
    local etc="$ROOT/etc/edge-provision" unit_dir="$ROOT/etc/systemd/system" venv="$ROOT$PREFIX"
    ensure_venv "$venv" "$SRC"
    install -d -m 0755 "$venv/share/doc/edge-provision"
    install -m 0644 "$SRC/README.md" "$venv/share/doc/edge-provision/README.md"

    install -d -m 0755 "$etc"
    if [ -e "$etc/config.toml" ]; then
        say "keeping existing $etc/config.toml"
        install -m 0644 "$SRC/configs/config.toml" "$etc/config.toml.dist"
    else
        say "installing $etc/config.toml"
        install -m 0644 "$SRC/configs/config.toml" "$etc/config.toml"
    fi
    install -d -m 0755 "$etc/hooks.d"

    if [ -z "$ROOT" ] && ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        say "creating system user $SERVICE_USER"
        useradd --system --home-dir /var/lib/edge-provision --no-create-home \
            --shell /usr/sbin/nologin "$SERVICE_USER"
    fi

    if [ "$SYSTEMD" = 1 ]; then
        install -d -m 0755 "$unit_dir"
        sed "s|/opt/edge-provision|$PREFIX|g" "$SRC/systemd/edge-provision.service" \
            >"$unit_dir/edge-provision.service.tmp"
        chmod 0644 "$unit_dir/edge-provision.service.tmp"
        mv "$unit_dir/edge-provision.service.tmp" "$unit_dir/edge-provision.service"
        say "installed $unit_dir/edge-provision.service"
        if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
            systemctl daemon-reload
            systemctl enable edge-provision.service
            say "enabled edge-provision.service; set server.url in $etc/config.toml, then: systemctl start edge-provision"
        else
            install -d -m 0755 "$unit_dir/multi-user.target.wants"
            ln -sfn ../edge-provision.service "$unit_dir/multi-user.target.wants/edge-provision.service"
            say "enabled edge-provision.service (offline)"
        fi
    fi
    say "installed: $PREFIX/bin/edge-provision ($("$venv/bin/python" -m edge_provision --version))"
}

uninstall_files() {
    local unit_dir="$ROOT/etc/systemd/system"
    if [ -z "$ROOT" ] && [ -d /run/systemd/system ] && [ -e "$unit_dir/edge-provision.service" ]; then
        systemctl disable --now edge-provision.service || true
    fi
    rm -f "$unit_dir/multi-user.target.wants/edge-provision.service" "$unit_dir/edge-provision.service"
    [ -z "$ROOT" ] && [ -d /run/systemd/system ] && systemctl daemon-reload || true
    if [ -x "$ROOT$PREFIX/bin/python" ]; then
        rm -rf "${ROOT:?}$PREFIX" 2>/dev/null || rm -rf "$ROOT$PREFIX"
        say "removed $PREFIX"
    fi
    say "kept /etc/edge-provision and /var/lib/edge-provision (remove them by hand to forget this gateway)"
}

case "$ACTION" in
    demo) demo ;;
    install) install_files ;;
    uninstall) uninstall_files ;;
esac
