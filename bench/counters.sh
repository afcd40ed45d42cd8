#!/usr/bin/env bash
# bench/counters.sh — what the counters cost per request: bench/counters.rs (the driver
# and the HTTP/1.1 protocol every backend runs, one keep-alive connection in memory)
# built with counters and with `--features no-counters`, measured three ways:
#
#   - instructions per request under cachegrind: (I(N2) − I(N1)) / (N2 − N1), so start-up
#     and warm-up cancel. A count does not depend on the machine's load (it still moves
#     by about ±0.3 % from run to run: hash seeds, the per-second Date), so the median of
#     three of each resolves a 1 % difference that timed runs on a shared machine cannot;
#   - thread CPU time per request, the two builds alternated REPS times (default 5),
#     medians: the same difference in time, with the noise the timing has;
#   - and the real server: ringserve on io_uring built both ways, pinned as bench/run.sh
#     pins it, under 1 KiB / 256 connections paced by bench/paced.lua (each connection
#     waits 4 ms between requests), REPS alternated pairs of 8 s after a 1 s warm-up.
#     Server user and system CPU per request, medians. Paced, because unpaced a run that
#     happens to go faster batches more completions per loop turn and its CPU per
#     request falls with the batch: the pairs then differ by the load, not the build.
#     /proc's CPU times count in ticks (CLK_TCK): the report says what one tick is per
#     request, the resolution of every difference in those rows.
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

bench_reps_out counters "$@"

bench_init
bench_ensure_tools no-nginx
VALGRIND_SKIP=""
if ! command -v valgrind >/dev/null 2>&1; then
    bench_log "installing valgrind with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; } >/dev/null 2>&1; then
        VALGRIND_SKIP="valgrind could not be installed"
        echo "SKIP instruction counts: $VALGRIND_SKIP" >&2
    fi
fi

ON=$REPO_DIR/target/release/examples/counters
OFF=$REPO_DIR/target/bench-nocounters/release/examples/counters
bench_log "cargo build --release --example counters (with counters, and --features no-counters)"
(cd "$REPO_DIR" && cargo build -q --release --example counters --features test-support)
(cd "$REPO_DIR" && CARGO_TARGET_DIR=target/bench-nocounters cargo build -q --release --example counters --features test-support,no-counters)

N1=$BENCH_IR_N1
N2=$BENCH_IR_N2
# Each measurement runs in this shell (never in $(...), where set -e, the cleanup trap
# and the list of started servers do not reach) and leaves its result in RESULT.
per_req() { bench_ir_per_request "$1"; }
# alternated N ON_ARRAY OFF_ARRAY FN ON_ARG OFF_ARG — N pairs of `FN ARG REP`, on first,
# each RESULT appended to its array.
alternated() {
    local n=$1 fn=$4 a=$5 b=$6 r
    local -n on_=$2 off_=$3
    for ((r = 1; r <= n; r++)); do
        "$fn" "$a" "$r"
        on_+=("$RESULT")
        "$fn" "$b" "$r"
        off_+=("$RESULT")
    done
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
IR_ON=()
IR_OFF=()
if [[ -z $VALGRIND_SKIP ]]; then
    bench_log "cachegrind: instructions per request, 3 of each build alternated"
    alternated 3 IR_ON IR_OFF per_req "$ON" "$OFF"
fi

bench_log "thread CPU time per request, $REPS alternated runs of each"
harness_run() {
    RESULT=$("$1" 200000 | sed -n 's/.*: \([0-9]*\) ns.*/\1/p')
    [[ -n $RESULT ]] || bench_die "$1 printed no time"
}
T_ON=()
T_OFF=()
alternated "$REPS" T_ON T_OFF harness_run "$ON" "$OFF"
M_ON=$(median "${T_ON[@]}")
M_OFF=$(median "${T_OFF[@]}")

# The real server, paced (see the top). Per run: "req/s user_ns sys_ns" per request.
bench_build_release
bench_build_nocounters
bench_make_files 1k.bin
CLK_TCK=$(getconf CLK_TCK)
WL_SCRIPT=$BENCH_DIR/paced.lua
serve_run() {
    local c=$1 dir=$BENCH_TMP/$1-$2 port u0 s0 u1 s1 reqs
    mkdir -p "$dir"
    bench_start_server "$c" 1k.bin "$dir" || bench_die "$c did not start (log: $dir/server.log)"
    port=$(bench_port "$c")
    bench_wrk 256 1 "http://127.0.0.1:$port/1k.bin" "$dir/warm.txt" 10 || true
    read -r u0 s0 <<<"$(bench_cpu_ticks_split $(bench_pid_tree "$SERVER_PID"))"
    bench_wrk 256 8 "http://127.0.0.1:$port/1k.bin" "$dir/wrk.txt" 10 || bench_die "wrk failed ($dir/wrk.txt)"
    read -r u1 s1 <<<"$(bench_cpu_ticks_split $(bench_pid_tree "$SERVER_PID"))"
    bench_stop_server
    reqs=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
    ((${reqs:-0} > 0)) || bench_die "no requests in $dir/wrk.txt"
    RESULT="$((reqs / 8)) $(((u1 - u0) * 1000000000 / CLK_TCK / reqs)) $(((s1 - s0) * 1000000000 / CLK_TCK / reqs))"
    TICK_NS=$((1000000000 / CLK_TCK / reqs))
}
bench_log "the server, paced 1 KiB / 256 connections: $REPS alternated pairs of 8 s"
S_ON=()
S_OFF=()
alternated "$REPS" S_ON S_OFF serve_run uring uring-nocounters
# column K (1 req/s, 2 user, 3 sys, 4 user + sys) of runs, median
col_median() {
    local k=$1
    shift
    median $(printf '%s\n' "$@" | awk -v k="$k" '{print (k == 4) ? $2 + $3 : $k}')
}
for k in 1 2 3 4; do
    SM_ON[k]=$(col_median "$k" "${S_ON[@]}")
    SM_OFF[k]=$(col_median "$k" "${S_OFF[@]}")
done
# The median of the pairs' own differences (user, and user + sys): drift between pairs
# cancels within each.
pair_diffs() {
    local k=$1 i
    for ((i = 0; i < REPS; i++)); do
        printf '%s %s\n' "${S_ON[i]}" "${S_OFF[i]}"
    done | awk -v k="$k" '{print (k == 4) ? ($2 + $3) - ($5 + $6) : $k - $(k + 3)}'
}
PD_USER=$(median $(pair_diffs 2))
PD_ALL=$(median $(pair_diffs 4))

{
    echo "# The counters' cost per request — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "$(bench_provenance) · bench/counters.sh"
    echo
    echo "One keep-alive HTTP/1.1 connection in memory (bench/counters.rs), a 1 KiB file"
    echo "fetched over and over: the driver and the protocol, no socket."
    echo
    echo "| | counters on | counters off | on − off |"
    echo "|---|---|---|---|"
    if [[ -z $VALGRIND_SKIP ]]; then
        I_ON=$(median "${IR_ON[@]}")
        I_OFF=$(median "${IR_OFF[@]}")
        echo "| instructions per request (cachegrind, $N1 → $N2 requests, median of 3) | $I_ON | $I_OFF | $((I_ON - I_OFF)) ($(python3 -c "print(f'{($I_ON-$I_OFF)/$I_OFF*100:.2f}')") %) |"
    else
        echo "| instructions per request (cachegrind) | SKIP: $VALGRIND_SKIP | | |"
    fi
    echo "| thread CPU per request, median of $REPS alternated | $M_ON ns | $M_OFF ns | $((M_ON - M_OFF)) ns |"
    echo
    echo "Instruction counts (on / off): $(for ((i = 0; i < ${#IR_ON[@]}; i++)); do printf '%s/%s ' "${IR_ON[i]}" "${IR_OFF[i]}"; done)"
    echo
    echo "Runs (ns per request, on / off, in the order run): $(for ((i = 0; i < REPS; i++)); do printf '%s/%s ' "${T_ON[i]}" "${T_OFF[i]}"; done)"
    echo
    echo "## The server: io_uring, 1 KiB / 256 connections paced by bench/paced.lua"
    echo
    echo "Server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU; $REPS alternated pairs of 8 s, medians."
    echo "CPU times are /proc ticks of $((1000 / CLK_TCK)) ms: one tick is about $TICK_NS ns per request here,"
    echo "and each figure is the difference of two tick readings."
    echo
    echo "| | counters on | counters off | on − off |"
    echo "|---|---|---|---|"
    echo "| req/s (the pacing sets it) | ${SM_ON[1]} | ${SM_OFF[1]} | |"
    for k in 2 3 4; do
        name=([2]="server user CPU per request" [3]="server system CPU per request" [4]="server CPU per request")
        echo "| ${name[k]} | ${SM_ON[k]} ns | ${SM_OFF[k]} ns | $((SM_ON[k] - SM_OFF[k])) ns ($(python3 -c "print(f'{(${SM_ON[k]}-${SM_OFF[k]})/${SM_OFF[4]}*100:+.2f}')") % of off's CPU per request) |"
    done
    echo "| the pairs' own differences, median: user; user + system | | | $PD_USER ns ($(python3 -c "print(f'{$PD_USER/${SM_OFF[4]}*100:+.2f}')") %); $PD_ALL ns ($(python3 -c "print(f'{$PD_ALL/${SM_OFF[4]}*100:+.2f}')") %) |"
    echo
    echo "Runs (req/s, user ns, system ns per request; on / off, in the order run):"
    echo
    for ((i = 0; i < REPS; i++)); do echo "- ${S_ON[i]} / ${S_OFF[i]}"; done
    echo
    echo "The counters work in user space only, so the user row is where they show; the"
    echo "system row moves with the host and the batching, and is there to show that."
    echo
    echo "The instruction count does not move with the machine's load, but it is not the"
    echo "whole cost: a counter that misses the cache costs more than its instructions,"
    echo "which only the server rows show. Its percentage is of the harness's own total, which leaves out the kernel's TCP"
    echo "path and adds work no server does (it copies each request into a VecDeque, reads"
    echo "the file with pread, scans each response). Against a real server, set on − off"
    echo "beside bench/run.sh's server CPU per request (1k-256) of the same machine."
} | tee "$OUT"
bench_log "wrote $OUT"
