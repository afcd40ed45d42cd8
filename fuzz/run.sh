#!/usr/bin/env bash
# fuzz/run.sh [SECONDS]: CI's fuzzing pass (fuzz/README.md). Makes sure cargo-fuzz is
# there, builds every target, runs each for SECONDS (default 40) on a scratch copy of
# its committed seeds (fuzz/corpus/<target>/), one job, and exits non-zero on any
# crash, failed assertion (an escape included), leak or hang. Where nightly or
# cargo-fuzz cannot be had it prints `SKIP fuzz: <reason>` and exits 0.
#
# CI clones afresh each run, so what is worth keeping lives in a cache outside the
# clone, $RINGSERVE_FUZZ_TOOLS, else ${XDG_CACHE_HOME:-~/.cache}/ringserve-fuzz-tools:
# cargo-fuzz (pinned, --locked; one on PATH is used as is), and the instrumented build
# (target/), so a machine that ran CI before rebuilds only what changed. Cold it costs
# about 75 s to install and 100-225 s to build on 2 CPUs (fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")"

SECS=${1:-40}
CARGO_FUZZ_VERSION=0.13.2
TARGETS=(http path frame)
TOOLS=${RINGSERVE_FUZZ_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/ringserve-fuzz-tools}

log() { printf '[fuzz %4ds] %s\n' "$SECONDS" "$*"; }
skip() {
    echo "SKIP fuzz: $*"
    exit 0
}

[[ $SECS =~ ^[0-9]+$ ]] && ((SECS > 0)) || { echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2; }

cargo +nightly --version >/dev/null 2>&1 ||
    skip "no nightly toolchain (cargo-fuzz needs one: rustup toolchain install nightly)"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ringserve-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    export PATH="$TOOLS/bin:$PATH"
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
    if ! cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS" \
        >"$scratch/install.log" 2>&1; then
        tail -n 20 "$scratch/install.log"
        skip "cargo install cargo-fuzz failed (output above)"
    fi
    log "installed $(cargo-fuzz --version)"
fi

log "building ${TARGETS[*]} ($(cargo +nightly --version))"
build=(--target-dir "$TOOLS/target")
cargo +nightly fuzz build "${build[@]}"

failed=()
rates=()
for t in "${TARGETS[@]}"; do
    # A scratch copy: whatever the run finds interesting never lands in the tree.
    mkdir -p "$scratch/corpus/$t" "$scratch/tmp/$t"
    cp -R "corpus/$t/." "$scratch/corpus/$t/"
    mkdir -p "artifacts/$t"
    log "running $t for ${SECS}s on $(find "corpus/$t" -type f | wc -l) seeds"
    # TMPDIR: the http target builds its served tree there, removed with the scratch.
    if TMPDIR="$scratch/tmp/$t" cargo +nightly fuzz run "${build[@]}" "$t" "$scratch/corpus/$t" -- \
        -max_total_time="$SECS" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$PWD/artifacts/$t/" >"$scratch/$t.log" 2>&1; then
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$scratch/$t.log")
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log")
        rates+=("$t: ${runs:-?} runs, ${rate:-?} exec/s")
        log "$t: ok (${runs:-?} runs, ${rate:-?} exec/s)"
    else
        failed+=("$t")
        tail -n 60 "$scratch/$t.log"
        for a in "artifacts/$t"/*; do
            [[ -f $a ]] || continue
            echo "input fuzz/$a (base64): $(base64 -w0 "$a")"
        done
        log "$t: FAILED (crash, assertion, leak or hang: output above; reproduce with" \
            "cd fuzz && cargo +nightly fuzz run $t artifacts/$t/<file>)"
    fi
done

printf '%s\n' "${rates[@]}"
if ((${#failed[@]})); then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "all ${#TARGETS[@]} targets ran ${SECS}s each without a failure"
