#!/usr/bin/env bash
# bench/profile.sh — a CPU flamegraph of one server under one bench workload.
#
#   bench/profile.sh WORKLOAD BACKEND [SECONDS]
#     WORKLOAD  1k-1 | 1k-50 | 1k-256 | p16-256 | 100k-50 | 1g-4 | get-1g | get-1g-null | put-1g
#     BACKEND   uring | epoll | nginx | limit   (xfer: uring | epoll | limit | curl | rsync | socat)
#     SECONDS   how long perf records (default 10)
#
# Builds ringserve (and limit) with `--profile profiling` and frame pointers in
# target/bench-profiling, starts the server pinned to CPU 0 exactly as run.sh does, drives
# it with wrk on CPU 1, records `perf record -e cpu-clock -g -p PIDS` for SECONDS, and
# writes bench/results/profiles/WORKLOAD-BACKEND-DATE.svg (inferno flamegraph) with the
# folded stacks (.folded, gitignored: large; feed two to inferno-diff-folded) and wrk's
# report (.wrk.txt) beside it.
#
# xfer workloads: the contender's server and client exactly as run.sh starts them, the
# client in a loop of transfers (each deleted after), and perf records both pinned CPUs
# (`-C SERVER_CPU,LOAD_CPU`): the loopback softirq and the wake-ups of the other side run
# on a CPU outside the process that caused them, and io_uring's io-wq workers start after
# an attach. Beside the SVG: the clients' summary lines (.xfer.txt) and `perf report
# --stdio` flat top lists per CPU (.top.txt).
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
[[ $WL_KIND != idle ]] || bench_die "$WL is not a load workload; profile one of 1k-1 1k-50 1k-256 p16-256 100k-50 1g-4 get-1g get-1g-null put-1g"
bench_runs_in "$WL" "$BACKEND" || bench_die "$BACKEND does not take part in $WL (bench/README.md, Contenders)"

bench_init
if [[ $BACKEND == nginx ]]; then bench_ensure_tools; else bench_ensure_tools no-nginx; fi
if [[ $WL_KIND == xfer ]]; then
    case $BACKEND in curl | rsync | socat) bench_ensure_xfer_tools "$BACKEND" ;; esac
    [[ -z ${XFER_SKIP[$BACKEND]:-} ]] || bench_die "$BACKEND: ${XFER_SKIP[$BACKEND]}"
    bench_xfer_init
fi
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
if [[ $BACKEND == uring || $BACKEND == curl ]] && [[ -n $(bench_contender_skip uring) ]]; then
    bench_die "$(bench_contender_skip uring)"
fi

DATE=$(date +%Y-%m-%dT%H%M)
OUT_DIR=$BENCH_DIR/results/profiles
OUT=$OUT_DIR/$WL-$BACKEND-$DATE
WORK=$BENCH_TMP/profile
mkdir -p "$OUT_DIR" "$WORK"

if [[ $WL_KIND == xfer ]]; then
    bench_start_xfer_server "$BACKEND" "$WORK" || bench_die "$BACKEND did not start"
    bench_xfer_client "$BACKEND"
    bench_log "warming up $BACKEND with one transfer"
    bench_xfer_run "$WORK/warmup.txt" || bench_die "the warm-up transfer failed: $(tail -n 1 "$WORK/warmup.txt")"
    bench_xfer_clean
    # Transfers for SECONDS + 2, so every recorded sample is under load.
    xfer_loop() {
        local end=$((SECONDS + $1 + 2)) i=0
        while ((SECONDS < end)); do
            i=$((i + 1))
            bench_xfer_run "$WORK/client.$i.txt" || true
            cat "$WORK/client.$i.txt" "$WORK/client.$i.txt.time"
            bench_wait_children "$SERVER_PID" 10 || true
            bench_xfer_clean
        done
    }
    bench_log "recording $SECS s of $WL against $BACKEND (CPUs $SERVER_CPU,$LOAD_CPU)"
    bench_spawn "$WORK/xfer.txt" xfer_loop "$SECS"
    LOOP_PID=$SPAWNED_PID
    sleep 1
    perf record -q -e cpu-clock -g -C "$SERVER_CPU,$LOAD_CPU" -o "$WORK/perf.data" \
        -- sleep "$SECS" >"$WORK/perf-record.log" 2>&1 || {
        tail -n 5 "$WORK/perf-record.log" >&2
        bench_die "perf record failed"
    }
    bench_wait_exit "$LOOP_PID" 60 || bench_log "the transfer loop did not finish in time"
    bench_stop_pid "$LOOP_PID" 5
    bench_stop_server
    cp "$WORK/xfer.txt" "$OUT.xfer.txt"
    for cpu in "$SERVER_CPU" "$LOAD_CPU"; do
        echo "=== CPU $cpu ($([[ $cpu == "$SERVER_CPU" ]] && echo server || echo client)): by command, then flat by symbol"
        perf report -i "$WORK/perf.data" --cpu "$cpu" --no-children --sort comm --stdio -g none 2>/dev/null | grep '%' | sed -n '1,8p'
        perf report -i "$WORK/perf.data" --cpu "$cpu" --no-children --sort sym --stdio -g none 2>/dev/null | grep '%' | sed -n '1,30p'
        echo
    done >"$OUT.top.txt"
    bench_log "folding stacks and drawing the flamegraph"
    perf script -i "$WORK/perf.data" 2>"$WORK/perf-script.log" | inferno-collapse-perf >"$OUT.folded"
    inferno-flamegraph --title "$BACKEND · $WL · ${SECS}s cpu-clock on CPUs $SERVER_CPU,$LOAD_CPU · $(uname -r)" \
        --subtitle "$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?') · server on CPU $SERVER_CPU, client on CPU $LOAD_CPU" \
        <"$OUT.folded" >"$OUT.svg"
    bench_log "wrote $OUT.svg, $OUT.top.txt ($(grep -c '^received\|^sent\|^limit:' "$OUT.xfer.txt" || true) transfers)"
    exit 0
fi
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
