#!/usr/bin/env bash
# bench/run.sh — ringserve (uring, epoll) against nginx and the limit reference, on one
# machine, in one run, reported as ratios. See bench/README.md.
#
#   bench/run.sh            full run: 3 repetitions, about 12 minutes → bench/results/
#   bench/run.sh --quick    about a minute, 1 repetition → bench/results/quick/ (gitignored)
#
# Exits 0 whenever the harness itself worked, whatever the numbers (CI reports, never
# gates); a contender that cannot run is reported as SKIP with the reason.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/run.sh [--quick] [--reps N] [--workloads W,...] [--contenders C,...] [--out DIR]

  --quick         1 repetition, 2 s runs, 1 000 idle connections; results go to
                  bench/results/quick/ (gitignored). About a minute.
  --reps N        repetitions (default 3; --quick: 1)
  --workloads     subset of: 1k-1,1k-50,1k-256,100k-50,1g-4,idle-10k (default all)
  --contenders    subset of: nginx,uring,epoll,limit,uring-nocounters (default all;
                  uring-nocounters runs 1k-256 only, and by default only in full mode)
  --out DIR       write DATE.{json,md,svg} and latest.* there instead

Environment: BENCH_SERVER_CPU (0), BENCH_LOAD_CPU (1), BENCH_PORT_BASE (18400),
BENCH_KEEP_TMP=1 keeps the temp dir (test files, raw output, nginx prefixes).
EOF
}

QUICK=0
REPS=""
WORKLOADS=("${ALL_WORKLOADS[@]}")
CONTENDERS=()
OUT_DIR=""
while (($#)); do
    case $1 in
    --quick) QUICK=1 ;;
    --reps)
        REPS=${2:?--reps needs a number}
        shift
        ;;
    --workloads)
        IFS=, read -ra WORKLOADS <<<"${2:?--workloads needs a list}"
        shift
        ;;
    --contenders)
        IFS=, read -ra CONTENDERS <<<"${2:?--contenders needs a list}"
        shift
        ;;
    --out)
        OUT_DIR=${2:?--out needs a directory}
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
    shift
done

if ((QUICK)); then
    REPS=${REPS:-1} DUR=2 DUR_1G=2 SYS_DUR=1 WARMUP=0 IDLE_N=1000
    OUT_DIR=${OUT_DIR:-$BENCH_DIR/results/quick}
    ((${#CONTENDERS[@]})) || CONTENDERS=(nginx uring epoll limit)
else
    REPS=${REPS:-3} DUR=8 DUR_1G=10 SYS_DUR=4 WARMUP=1 IDLE_N=10000
    OUT_DIR=${OUT_DIR:-$BENCH_DIR/results}
    ((${#CONTENDERS[@]})) || CONTENDERS=("${ALL_CONTENDERS[@]}")
fi
[[ $REPS =~ ^[1-9][0-9]*$ ]] || bench_die "--reps wants a positive number, not '$REPS'"
for w in "${WORKLOADS[@]}"; do bench_workload "$w"; done
for c in "${CONTENDERS[@]}"; do bench_port "$c" >/dev/null; done
IDLE_HOLD=600 # the idle client exits by itself after this, if nobody stops it first

bench_init
RUN=$BENCH_TMP/run
RAW=$RUN/raw
mkdir -p "$RAW"
DATE=$(date +%Y-%m-%dT%H%M)

has_contender() {
    local c
    for c in "${CONTENDERS[@]}"; do [[ $c == "$1" ]] && return 0; done
    return 1
}
if has_contender nginx; then bench_ensure_tools; else bench_ensure_tools no-nginx; fi
bench_build_release
if has_contender uring-nocounters; then bench_build_nocounters; fi

# Contenders that cannot run here, with the reason (reported as SKIP).
declare -A SKIP=()
for c in "${CONTENDERS[@]}"; do
    reason=$(bench_contender_skip "$c")
    if [[ -n $reason ]]; then
        SKIP[$c]=$reason
        bench_log "SKIP $c: $reason"
    fi
done

files=()
for w in "${WORKLOADS[@]}"; do
    bench_workload "$w"
    [[ " ${files[*]} " == *" $WL_FILE "* ]] || files+=("$WL_FILE")
done
bench_log "writing test files (${files[*]}) and reading them into the page cache"
bench_make_files "${files[@]}"

# What the report records about this machine and these tools.
{
    echo "date=$DATE"
    echo "mode=$( ((QUICK)) && echo quick || echo full)"
    echo "reps=$REPS"
    echo "duration_s=$DUR"
    echo "duration_1g_s=$DUR_1G"
    echo "syscall_duration_s=$SYS_DUR"
    echo "warmup_s=$WARMUP"
    echo "idle_connections=$IDLE_N"
    echo "server_cpu=$SERVER_CPU"
    echo "load_cpu=$LOAD_CPU"
    echo "workloads=${WORKLOADS[*]}"
    echo "contenders=${CONTENDERS[*]}"
    for c in "${!SKIP[@]}"; do echo "skip.$c=${SKIP[$c]}"; done
    echo "ringserve_commit=$(git -C "$REPO_DIR" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "ringserve_dirty=$(git -C "$REPO_DIR" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)"
    echo "ringserve_bin=$RINGSERVE_BIN"
    echo "wrk_version=$(wrk -v 2>&1 | head -n 1 || true)"
    echo "nginx_bin=$NGINX_BIN"
    [[ -n $NGINX_BIN ]] && echo "nginx_version=$("$NGINX_BIN" -v 2>&1 | head -n 1)"
    echo "perf_version=$(perf --version 2>/dev/null || echo none)"
    echo "perf_events=$PERF_EVENTS"
    echo "perf_skip=$PERF_SKIP"
    echo "clk_tck=$(getconf CLK_TCK)"
} >"$RUN/meta.env"
"$RINGSERVE_BIN" probe --json >"$RUN/probe.json" 2>/dev/null || true
if [[ -n $NGINX_BIN ]]; then
    bench_nginx_conf "$RUN/nginx-example" "$(bench_port nginx)" "$WWW"
    cp "$RUN/nginx-example/nginx.conf" "$RUN/nginx.conf"
fi

# One wrk sample (plus, for 1k-256, a second run of the same load under perf stat).
sample_wrk() {
    local dir=$1 url=$2 pids=$3 secs=$DUR t0 r0 c0 l0
    [[ $WL_FILE == 1g.bin ]] && secs=$DUR_1G
    if ((WARMUP > 0)); then
        bench_wrk "$WL_CONNS" "$WARMUP" "$url" "$dir/warmup.txt" "$WL_TIMEOUT" || true
    fi
    [[ $WL_FILE == 1g.bin ]] && bench_warm_files "$WL_FILE"
    # shellcheck disable=SC2086  # $pids is a list
    t0=$(bench_cpu_ticks $pids) r0=$(bench_rss_kb $pids)
    c0=$(bench_cpu_stat "$SERVER_CPU") l0=$(bench_cpu_stat "$LOAD_CPU")
    if bench_wrk "$WL_CONNS" "$secs" "$url" "$dir/wrk.txt" "$WL_TIMEOUT"; then
        echo status=ok
    else
        echo status=error
        echo "error=wrk failed: $(tail -n 1 "$dir/wrk.txt")"
    fi
    echo "duration_s=$secs"
    echo "server_cpu_stat=$c0 $(bench_cpu_stat "$SERVER_CPU")"
    echo "load_cpu_stat=$l0 $(bench_cpu_stat "$LOAD_CPU")"
    # shellcheck disable=SC2086
    echo "cpu_ticks=$t0 $(bench_cpu_ticks $pids)"
    # shellcheck disable=SC2086
    echo "rss_kb=$r0 $(bench_rss_kb $pids)"
    if [[ $WL_NAME == 1k-256 && -z $PERF_SKIP ]]; then
        bench_perf_start "${pids// /,}" "$dir/perf.csv"
        bench_wrk "$WL_CONNS" "$SYS_DUR" "$url" "$dir/wrk-sys.txt" "$WL_TIMEOUT" || true
        bench_perf_stop
    fi
}

# One idle sample: RSS before, N connections that each did one GET and now sit idle,
# RSS after.
sample_idle() {
    local dir=$1 port=$2 pids=$3 r0 r1 i idle_pid
    # A few connections first, so one-time set-up is not charged per connection.
    taskset -c "$LOAD_CPU" "$IDLE_BIN" "127.0.0.1:$port" "/$WL_FILE" 16 0 >"$dir/idle-warm.txt" 2>&1 || true
    sleep 0.3
    # shellcheck disable=SC2086
    r0=$(bench_rss_kb $pids)
    bench_spawn "$dir/idle.txt" taskset -c "$LOAD_CPU" \
        "$IDLE_BIN" "127.0.0.1:$port" "/$WL_FILE" "$IDLE_N" "$IDLE_HOLD" "$dir/ready"
    idle_pid=$SPAWNED_PID
    for ((i = 0; i < 1200; i++)); do
        if [[ -f $dir/ready ]] || ! kill -0 "$idle_pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    if [[ -f $dir/ready ]]; then
        sleep 1 # let the server finish with the last responses
        # shellcheck disable=SC2086
        r1=$(bench_rss_kb $pids)
        read -r _ ok failed <"$dir/ready"
        echo "rss_kb=$r0 $r1"
        echo "idle_ok=$ok"
        echo "idle_failed=$failed"
        if ((failed == 0)); then echo status=ok; else
            echo status=error
            echo "error=$failed of $IDLE_N idle connections failed: $(grep -m1 idle: "$dir/idle.txt" || true)"
        fi
    else
        echo status=error
        echo "error=the idle client did not get ready: $(tail -n 1 "$dir/idle.txt")"
    fi
    bench_stop_pid "$idle_pid" 5
}

run_sample() {
    local rep=$1 wl=$2 c=$3 dir port pids
    dir=$RAW/r$rep-$wl-$c
    mkdir -p "$dir"
    bench_workload "$wl"
    WL_NAME=$wl
    port=$(bench_port "$c")
    {
        echo "rep=$rep"
        echo "workload=$wl"
        echo "contender=$c"
        if [[ -n ${SKIP[$c]:-} ]]; then
            echo status=skipped
            echo "error=${SKIP[$c]}"
        elif ! bench_start_server "$c" "$WL_FILE" "$dir"; then
            echo status=error
            echo "error=server did not start: $(tail -n 1 "$dir/server.log" 2>/dev/null)"
        else
            pids=$(bench_pid_tree "$SERVER_PID")
            echo "pids=$pids"
            case $WL_KIND in
            wrk) sample_wrk "$dir" "http://127.0.0.1:$port/$WL_FILE" "$pids" ;;
            idle) sample_idle "$dir" "$port" "$pids" ;;
            esac
            bench_stop_server
            echo "server_rc=$STOP_RC"
        fi
    } >"$dir/sample.env"
    bench_log "[$rep/$REPS] $wl $c: $(python3 "$BENCH_DIR/report.py" --summary-line "$dir")"
}

contenders_for() {
    local c
    for c in "${CONTENDERS[@]}"; do
        [[ $c == uring-nocounters && $1 != 1k-256 ]] && continue
        echo "$c"
    done
}

bench_log "mode $(grep -m1 '^mode=' "$RUN/meta.env" | cut -d= -f2): $REPS repetition(s) of ${WORKLOADS[*]}; contenders ${CONTENDERS[*]}"
for ((rep = 1; rep <= REPS; rep++)); do
    for wl in "${WORKLOADS[@]}"; do
        mapfile -t order < <(contenders_for "$wl")
        for c in "${order[@]}"; do
            run_sample "$rep" "$wl" "$c"
        done
    done
done

mkdir -p "$OUT_DIR"
python3 "$BENCH_DIR/report.py" "$RUN" "$OUT_DIR/$DATE"
for ext in json md svg; do cp "$OUT_DIR/$DATE.$ext" "$OUT_DIR/latest.$ext"; done
bench_log "wrote $OUT_DIR/$DATE.{json,md,svg} and latest.*"
