#!/usr/bin/env bash
# bench/counters.sh — what the counters cost per request: bench/counters.rs (the driver
# and the HTTP/1.1 protocol every backend runs, one keep-alive connection in memory)
# built with counters and with `--features no-counters`, measured two ways:
#
#   - instructions per request under cachegrind: (I(N2) − I(N1)) / (N2 − N1), so start-up
#     and warm-up cancel. A count does not depend on the machine's load, so it resolves
#     a 1 % difference that timed runs on a shared 2-CPU machine cannot;
#   - thread CPU time per request, the two builds alternated REPS times (default 5),
#     medians: the same difference in time, with the noise the timing has.
#
# What neither sees: a backend's own per-turn counters (CQEs, SQEs, enters), a few
# plain stores per loop turn. The kernel's side of a clock read is not in the
# instruction count either (under valgrind clock_gettime is a real syscall); the
# counters make one clock read per response (the service-time histogram).
#
#   bench/counters.sh [--reps N] [--out FILE]   (default: bench/results/counters-DATE.md)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPS=5
OUT=""
while (($#)); do
    case $1 in
    --reps)
        REPS=${2:?--reps needs a number}
        shift
        ;;
    --out)
        OUT=${2:?--out needs a file}
        shift
        ;;
    *)
        echo "usage: bench/counters.sh [--reps N] [--out FILE]" >&2
        exit 2
        ;;
    esac
    shift
done
[[ -n $OUT ]] || OUT=$REPO_DIR/bench/results/counters-$(date -u +%Y-%m-%dT%H%M).md

if ! command -v valgrind >/dev/null 2>&1; then
    bench_log "installing valgrind with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; } >/dev/null 2>&1; then
        echo "SKIP: valgrind could not be installed; no instruction counts" >&2
        exit 0
    fi
fi

ON=$REPO_DIR/target/release/examples/counters
OFF=$REPO_DIR/target/bench-nocounters/release/examples/counters
bench_log "cargo build --release --example counters (with counters, and --features no-counters)"
(cd "$REPO_DIR" && cargo build -q --release --example counters --features test-support)
(cd "$REPO_DIR" && CARGO_TARGET_DIR=target/bench-nocounters cargo build -q --release --example counters --features test-support,no-counters)

N1=2000
N2=12000
# Instructions of a whole run of `bin n` (warm-up included), from cachegrind's summary.
irefs() {
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$1" "$2" 2>&1 |
        sed -n 's/.*I *refs: *//p' | tr -d ,
}
per_req() {
    local a b
    a=$(irefs "$1" $N1)
    b=$(irefs "$1" $N2)
    echo $(((b - a) / (N2 - N1)))
}
bench_log "cachegrind: instructions per request"
I_ON=$(per_req "$ON")
I_OFF=$(per_req "$OFF")

bench_log "thread CPU time per request, $REPS alternated runs of each"
T_ON=()
T_OFF=()
for ((r = 1; r <= REPS; r++)); do
    T_ON+=("$("$ON" 200000 | sed -n 's/.*: \([0-9]*\) ns.*/\1/p')")
    T_OFF+=("$("$OFF" 200000 | sed -n 's/.*: \([0-9]*\) ns.*/\1/p')")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
M_ON=$(median "${T_ON[@]}")
M_OFF=$(median "${T_OFF[@]}")

{
    echo "# The counters' cost per request — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "ringserve \`$(git -C "$REPO_DIR" rev-parse --short=12 HEAD)\`$(git -C "$REPO_DIR" diff --quiet HEAD -- src || echo ' (with uncommitted changes)') · $(uname -r) · $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') · bench/counters.sh"
    echo
    echo "One keep-alive HTTP/1.1 connection in memory (bench/counters.rs), a 1 KiB file"
    echo "fetched over and over: the driver and the protocol, no socket."
    echo
    echo "| | counters on | counters off | on − off |"
    echo "|---|---|---|---|"
    echo "| instructions per request (cachegrind, $N1 → $N2 requests) | $I_ON | $I_OFF | $((I_ON - I_OFF)) ($(python3 -c "print(f'{($I_ON-$I_OFF)/$I_OFF*100:.2f}')") %) |"
    echo "| thread CPU per request, median of $REPS alternated | $M_ON ns | $M_OFF ns | $((M_ON - M_OFF)) ns |"
    echo
    echo "Runs (ns per request, on / off, in the order run): $(for ((i = 0; i < REPS; i++)); do printf '%s/%s ' "${T_ON[i]}" "${T_OFF[i]}"; done)"
    echo
    echo "The instruction count is the measure: it does not move with the machine's load."
    echo "Its percentage is of the harness's own total, which leaves out the kernel's TCP"
    echo "path and adds work no server does (it copies each request into a VecDeque, reads"
    echo "the file with pread, scans each response). Against a real server, set on − off"
    echo "beside bench/run.sh's server CPU per request (1k-256) of the same machine."
} | tee "$OUT"
bench_log "wrote $OUT"
