#!/usr/bin/env bash
# Fuzzes the webhook verifiers, the input limits and the native decoder with cargo-fuzz
# (libFuzzer), each target for a fixed time, starting from seeds made from the signature
# fixtures. Builds in the dev profile (debug assertions on, no release build).
#
# Needs a nightly Rust toolchain (libFuzzer's instrumentation is nightly-only): installs it with
# rustup when missing, and cargo-fuzz into .tools/ (ignored by git).
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]   (default: 60 s, every target)
# A target that finds a crash leaves the input in fuzz/artifacts/<target>/ and the run fails;
# turn each such input into a regression unit test before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
export PATH="$tools/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

secs=${1:-60}
shift || true

if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal || {
        log "no nightly toolchain can be had here: the fuzz targets cannot run (they still build with nightly elsewhere)"
        exit 2
    }
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    log "installing cargo-fuzz into .tools/"
    cargo install --locked --root "$tools" cargo-fuzz
fi

python3 scripts/fuzz_seeds.py >&2

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

log "building ${#targets[@]} fuzz targets (dev profile)"
cargo +nightly fuzz build --dev

# The code under test is safe Rust: ASan's stack-use-after-return check finds nothing there and
# costs more time than the code itself.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_stack_use_after_return=0}"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/artifacts/$t"
    log "fuzzing $t for ${secs}s"
    start=$(date +%s)
    if cargo +nightly fuzz run --dev "$t" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        >"fuzz/artifacts/$t/fuzz.log" 2>&1; then
        log "$t: clean for $(($(date +%s) - start))s ($(grep -Eo '#[0-9]+' "fuzz/artifacts/$t/fuzz.log" | tail -n1 | tr -d '#') runs)"
    else
        log "$t: FAILED, see fuzz/artifacts/$t/fuzz.log"
        tail -n 30 "fuzz/artifacts/$t/fuzz.log" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    log "crashes in: ${failed[*]}"
    exit 1
fi
log "all ${#targets[@]} targets clean for ${secs}s each"
