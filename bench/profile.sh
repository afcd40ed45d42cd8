#!/usr/bin/env bash
# bench/profile.sh — a CPU flamegraph of one server under one bench workload.
#
#   bench/profile.sh WORKLOAD BACKEND [SECONDS]
#     WORKLOAD  1k-1 | 1k-50 | 1k-256 | 100k-50 | 1g-4   (the run.sh workloads)
#     BACKEND   uring | epoll | nginx | limit
#     SECONDS   how long perf records (default 10)
#
# Builds ringserve (and limit) with `--profile profiling` and frame pointers in
# target/bench-profiling, starts the server pinned to CPU 0 exactly as run.sh does, drives
# it with wrk on CPU 1, records `perf record -e cpu-clock -g -p PIDS` for SECONDS, and
# writes bench/results/profiles/WORKLOAD-BACKEND-DATE.svg (inferno flamegraph) with the
# folded stacks (.folded, gitignored: large; feed two to inferno-diff-folded) and wrk's
# report (.wrk.txt) beside it.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '3,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

(($# >= 2 && $# <= 3)) || {
    usage >&2
    exit 2
}
WL=$1 BACKEND=$2 SECS=${3:-10}
[[ $SECS =~ ^[1-9][0-9]*$ ]] || bench_die "SECONDS must be a positive number, not '$SECS'"
bench_workload "$WL"
[[ $WL_KIND == wrk ]] || bench_die "$WL is not a wrk workload; profile one of 1k-1 1k-50 1k-256 100k-50 1g-4"
case $BACKEND in
uring | epoll | nginx | limit) ;;
*) bench_die "BACKEND must be uring, epoll, nginx or limit, not '$BACKEND'" ;;
esac

bench_init
if [[ $BACKEND == nginx ]]; then bench_ensure_tools; else bench_ensure_tools no-nginx; fi
command -v perf >/dev/null || bench_die "perf is required (Debian: apt-get install linux-perf)"
[[ $BACKEND != nginx || -z $NGINX_SKIP ]] || bench_die "nginx: $NGINX_SKIP"

# inferno's collapse + flamegraph tools: PATH, else bench/.tools (installed on first use).
TOOLS=$BENCH_DIR/.tools
if ! command -v inferno-flamegraph >/dev/null && [[ ! -x $TOOLS/bin/inferno-flamegraph ]]; then
    bench_log "installing inferno into bench/.tools (cargo install inferno --root bench/.tools)"
    cargo install inferno --locked --root "$TOOLS" >"$BENCH_TMP/inferno-install.log" 2>&1 || {
        tail -n 20 "$BENCH_TMP/inferno-install.log" >&2
        bench_die "cargo install inferno failed"
    }
fi
PATH=$PATH:$TOOLS/bin

bench_build_profiling
bench_make_files "$WL_FILE"
[[ $BACKEND == uring ]] && [[ -n $(bench_contender_skip uring) ]] && bench_die "$(bench_contender_skip uring)"

DATE=$(date +%Y-%m-%dT%H%M)
OUT_DIR=$BENCH_DIR/results/profiles
OUT=$OUT_DIR/$WL-$BACKEND-$DATE
WORK=$BENCH_TMP/profile
mkdir -p "$OUT_DIR" "$WORK"

bench_start_server "$BACKEND" "$WL_FILE" "$WORK" || bench_die "$BACKEND did not start"
PIDS=$(bench_pid_tree "$SERVER_PID")
URL=http://127.0.0.1:$(bench_port "$BACKEND")/$WL_FILE
bench_log "warming up $BACKEND (pids $PIDS) for 1 s"
bench_wrk "$WL_CONNS" 1 "$URL" "$WORK/warmup.txt" "$WL_TIMEOUT" || true

# wrk runs a little longer than perf on both sides, so every recorded sample is under load.
bench_log "recording $SECS s of $WL against $BACKEND"
bench_spawn "$WORK/wrk-bg.log" bench_wrk "$WL_CONNS" $((SECS + 2)) "$URL" "$WORK/wrk.txt" "$WL_TIMEOUT"
WRK_PID=$SPAWNED_PID
sleep 1
taskset -c "$LOAD_CPU" perf record -q -e cpu-clock -g -p "${PIDS// /,}" -o "$WORK/perf.data" \
    -- sleep "$SECS" >"$WORK/perf-record.log" 2>&1 || {
    tail -n 5 "$WORK/perf-record.log" >&2
    bench_die "perf record failed"
}
bench_wait_exit "$WRK_PID" $((SECS + WL_TIMEOUT + 40)) || bench_log "wrk did not finish in time"
bench_stop_pid "$WRK_PID" 5
bench_stop_server
cp "$WORK/wrk.txt" "$OUT.wrk.txt"

bench_log "folding stacks and drawing the flamegraph"
perf script -i "$WORK/perf.data" 2>"$WORK/perf-script.log" | inferno-collapse-perf >"$OUT.folded"
inferno-flamegraph --title "$BACKEND · $WL · ${SECS}s cpu-clock · $(uname -r)" \
    --subtitle "$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?') · server on CPU $SERVER_CPU, wrk -t1 on CPU $LOAD_CPU" \
    <"$OUT.folded" >"$OUT.svg"
bench_log "wrote $OUT.svg ($(wc -l <"$OUT.folded") distinct stacks; wrk: $(grep -m1 'Requests/sec' "$OUT.wrk.txt" || echo 'no report'))"
