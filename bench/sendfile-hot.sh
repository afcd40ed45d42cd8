#!/usr/bin/env bash
# bench/sendfile-hot.sh — the uring backend's two ways to send a large cached body,
# side by side: sendfile on the ring thread (cachestat(2) says the range is cached) and
# splice through an io-wq worker (RINGSERVE_URING_DISABLE=cachestat). 100 KiB bodies
# at 50 connections, REPS alternated pairs; server pinned to CPU 0, wrk -t1 to CPU 1.
# Reports requests, p99 and server CPU per request (user + system, every thread of the
# process, io-wq workers included) for each run and their medians. Never gates.
#
# Usage: bench/sendfile-hot.sh [--reps N] [--out FILE]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_reps_out sendfile-hot "$@"

bench_init
bench_ensure_tools no-nginx
bench_build_release
bench_make_files 100k.bin
"$RINGSERVE_BIN" probe | grep -q 'used cachestat' ||
    bench_die "cachestat(2) is not usable here (before 6.5, or filtered): nothing to compare"

TICK=$(getconf CLK_TCK)
PORT=$(bench_port uring)
# run MODE — one 2 s warm-up and one 8 s measured wrk run; RESULT="req p99_ms cpu_us".
run() {
    local envs=()
    [[ $1 == splice ]] && envs=(RINGSERVE_URING_DISABLE=cachestat)
    bench_spawn "$BENCH_TMP/serve-$1.log" env "${envs[@]}" taskset -c 0 "$RINGSERVE_BIN" serve "$WWW" \
        --listen "127.0.0.1:$PORT" --backend uring --uring-threads 1
    local pid=$SPAWNED_PID
    bench_wait_http "$PORT" /100k.bin "$pid" || bench_die "the server did not start ($1)"
    taskset -c 1 wrk -t1 -c50 -d2s "http://127.0.0.1:$PORT/100k.bin" >/dev/null
    local t0 t1
    t0=$(bench_cpu_ticks "$pid")
    taskset -c 1 wrk -t1 -c50 -d8s --latency "http://127.0.0.1:$PORT/100k.bin" >"$BENCH_TMP/wrk.out"
    t1=$(bench_cpu_ticks "$pid")
    bench_stop_pid "$pid" 5
    local req p99
    req=$(awk '/requests in/ {print $1}' "$BENCH_TMP/wrk.out")
    p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else if (v ~ /s$/) v = v * 1000; print v}' "$BENCH_TMP/wrk.out")
    [[ -n $req && -n $p99 ]] || bench_die "wrk printed no result ($1)"
    RESULT="$req $p99 $(awk -v t=$((t1 - t0)) -v hz="$TICK" -v n="$req" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')"
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A COL
{
    echo "# Large cached bodies on io_uring: sendfile on the ring thread vs splice"
    echo
    echo "$(bench_provenance)."
    echo "100 KiB at 50 connections, $REPS alternated pairs of 8 s runs (after 2 s of warm-up each);"
    echo "server on CPU 0 (\`--uring-threads 1\`), \`wrk -t1 --latency\` on CPU 1. Made by \`bench/sendfile-hot.sh\`."
    echo
    echo "| run | way | requests | p99 (ms) | server CPU per request (µs) |"
    echo "|---|---|---|---|---|"
} >"$OUT"
for ((r = 1; r <= REPS; r++)); do
    for mode in splice sendfile; do
        bench_log "run $r of $REPS: $mode"
        run "$mode"
        read -r req p99 cpu <<<"$RESULT"
        COL[$mode-req]+="$req " COL[$mode-p99]+="$p99 " COL[$mode-cpu]+="$cpu "
        echo "| $r | $mode | $req | $p99 | $cpu |" >>"$OUT"
    done
done
{
    echo
    echo "| median | requests | p99 (ms) | server CPU per request (µs) |"
    echo "|---|---|---|---|"
    for mode in splice sendfile; do
        # shellcheck disable=SC2086 # the columns are space-separated numbers
        echo "| $mode | $(median ${COL[$mode-req]}) | $(median ${COL[$mode-p99]}) | $(median ${COL[$mode-cpu]}) |"
    done
} >>"$OUT"
cat "$OUT"
bench_log "wrote $OUT"
