#!/usr/bin/env bash
# bench/run.sh — ringserve (uring, epoll) against nginx and the limit reference over HTTP,
# and its xfer get / put against curl, rsync, socat and a raw-stream limit, on one
# machine, in one run, reported as ratios. See bench/README.md.
#
#   bench/run.sh            full run: 3 repetitions, about 20 minutes → bench/results/
#                           (with bench/site.sh's static-site rows at the end)
#   bench/run.sh --quick    about 3 minutes, 1 repetition (site.sh's once) → bench/results/quick/ (gitignored)
#
# Exits 0 whenever the harness itself worked, whatever the numbers (it reports, never
# gates); a contender that cannot run is reported as SKIP with the reason.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/run.sh [--quick] [--reps N] [--workloads W,...] [--contenders C,...] [--out DIR]
                    [--tag TAG]

  --quick         1 repetition, 2 s runs, 1 000 idle connections, 1 transfer per xfer
                  sample; results go to bench/results/quick/ (gitignored). About 1.5 min.
  --reps N        repetitions (default 3; --quick: 1)
  --workloads     subset of: 1k-1,1k-50,1k-256,100k-50,1g-4,idle-10k,get-1g,get-1g-null,
                  put-1g (default all)
  --contenders    subset of: nginx,uring,epoll,limit,uring-nocounters,curl,rsync,socat
                  (default all; uring-nocounters runs 1k-256 only, and by default only in
                  full mode; curl, rsync and socat run the xfer workloads only)
  --out DIR       write DATE.{json,md,svg} and latest.* there instead
  --tag TAG       name the results DATE-TAG.* and latest-TAG.* (a partial run of its own,
                  e.g. --workloads get-1g,get-1g-null,put-1g --tag xfer). A narrowed
                  run without a tag writes DATE.* only and leaves latest.* alone.

Environment: BENCH_SERVER_CPU (0), BENCH_LOAD_CPU (1), BENCH_PORT_BASE (18400),
BENCH_KEEP_TMP=1 keeps the temp dir (test files, raw output, nginx prefixes),
BENCH_XFER_DIR (/dev/shm) is where the xfer workloads' tmpfs dir goes.
EOF
}

QUICK=0
REPS=""
WORKLOADS=("${ALL_WORKLOADS[@]}")
CONTENDERS=()
OUT_DIR=""
TAG=""
NARROWED=0
while (($#)); do
    case $1 in
    --quick) QUICK=1 ;;
    --reps)
        REPS=${2:?--reps needs a number}
        shift
        ;;
    --workloads)
        IFS=, read -ra WORKLOADS <<<"${2:?--workloads needs a list}"
        NARROWED=1
        shift
        ;;
    --contenders)
        IFS=, read -ra CONTENDERS <<<"${2:?--contenders needs a list}"
        NARROWED=1
        shift
        ;;
    --out)
        OUT_DIR=${2:?--out needs a directory}
        shift
        ;;
    --tag)
        TAG=${2:?--tag needs a name}
        [[ $TAG =~ ^[A-Za-z0-9_.-]+$ ]] || bench_die "--tag wants letters, digits, . _ -, not '$TAG'"
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

# XFER_RUNS: measured transfers per xfer sample (after one warm-up when WARMUP > 0).
if ((QUICK)); then
    REPS=${REPS:-1} DUR=2 DUR_1G=2 SYS_DUR=1 WARMUP=0 IDLE_N=1000 XFER_RUNS=1
    OUT_DIR=${OUT_DIR:-$BENCH_DIR/results/quick}
    ((${#CONTENDERS[@]})) || CONTENDERS=(nginx uring epoll limit curl rsync socat)
else
    REPS=${REPS:-3} DUR=8 DUR_1G=10 SYS_DUR=4 WARMUP=1 IDLE_N=10000 XFER_RUNS=5
    OUT_DIR=${OUT_DIR:-$BENCH_DIR/results}
    ((${#CONTENDERS[@]})) || CONTENDERS=("${ALL_CONTENDERS[@]}")
fi
[[ $REPS =~ ^[1-9][0-9]*$ ]] || bench_die "--reps wants a positive number, not '$REPS'"
for w in "${WORKLOADS[@]}"; do bench_workload "$w"; done
for c in "${CONTENDERS[@]}"; do bench_port "$c" >/dev/null; done
# Only the contenders that take part in one of the workloads (no nginx in an xfer run).
kept=()
for c in "${CONTENDERS[@]}"; do
    for w in "${WORKLOADS[@]}"; do
        if bench_runs_in "$w" "$c"; then
            kept+=("$c")
            break
        fi
    done
done
((${#kept[@]})) || bench_die "none of the contenders ${CONTENDERS[*]} runs in ${WORKLOADS[*]}"
CONTENDERS=("${kept[@]}")
NEED_WRK=0 NEED_XFER=0
for w in "${WORKLOADS[@]}"; do
    bench_workload "$w"
    case $WL_KIND in
    wrk) NEED_WRK=1 ;;
    xfer) NEED_XFER=1 ;;
    esac
done
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
tool_opts=()
has_contender nginx || tool_opts+=(no-nginx)
((NEED_WRK)) || tool_opts+=(no-wrk)
bench_ensure_tools "${tool_opts[@]}"
if ((NEED_XFER)); then
    xfer_tools=()
    for c in curl rsync socat; do
        if has_contender "$c"; then xfer_tools+=("$c"); fi
    done
    bench_ensure_xfer_tools "${xfer_tools[@]}"
    bench_xfer_init
fi
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
    echo "xfer_runs=$XFER_RUNS"
    echo "xfer_file_bytes=$(bench_file_size 1g.bin)"
    echo "xfer_dir=$XFER_TMP"
    echo "xfer_dir_fs=$XFER_FS"
    echo "socat_buffer=$SOCAT_BUF"
    echo "tag=$TAG"
    echo "server_cpu=$SERVER_CPU"
    echo "load_cpu=$LOAD_CPU"
    echo "workloads=${WORKLOADS[*]}"
    echo "contenders=${CONTENDERS[*]}"
    for c in "${!SKIP[@]}"; do echo "skip.$c=${SKIP[$c]}"; done
    echo "ringserve_commit=$(git -C "$REPO_DIR" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "ringserve_dirty=$(git -C "$REPO_DIR" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)"
    echo "ringserve_bin=$RINGSERVE_BIN"
    if ((NEED_WRK)); then echo "wrk_version=$(wrk -v 2>&1 | head -n 1 || true)"; fi
    if has_contender curl && command -v curl >/dev/null; then echo "curl_version=$(curl --version | head -n 1)"; fi
    if has_contender rsync && command -v rsync >/dev/null; then echo "rsync_version=$(rsync --version | head -n 1)"; fi
    if has_contender socat && command -v socat >/dev/null; then echo "socat_version=$(socat -V | grep -m1 'socat version' || true)"; fi
    echo "nginx_bin=$NGINX_BIN"
    if [[ -n $NGINX_BIN ]] && has_contender nginx; then echo "nginx_version=$("$NGINX_BIN" -v 2>&1 | head -n 1)"; fi
    echo "perf_version=$(perf --version 2>/dev/null || echo none)"
    echo "perf_events=$PERF_EVENTS"
    echo "perf_skip=$PERF_SKIP"
    echo "clk_tck=$(getconf CLK_TCK)"
} >"$RUN/meta.env"
# Heap allocations per 1 KiB keep-alive response, and per response pipelined ×16
# (bench/allocs.rs: the server in process under a counting allocator; a count, not a
# timing, so once per run is enough).
for b in uring epoll; do
    out=$("$TARGET_DIR/release/examples/allocs" "$b" 20000 2>"$RUN/allocs-$b.err" || true)
    line=$(grep 'keep-alive response' <<<"$out" || true)
    if [[ $line =~ :\ ([0-9.]+)\ allocations ]]; then
        echo "allocs.$b=${BASH_REMATCH[1]}" >>"$RUN/meta.env"
        bench_log "$line"
    else
        bench_log "allocs $b: no count ($(tail -n 1 "$RUN/allocs-$b.err"))"
    fi
    line=$(grep 'pipelined' <<<"$out" || true)
    if [[ $line =~ :\ ([0-9.]+)\ allocations ]]; then
        echo "allocs_p16.$b=${BASH_REMATCH[1]}" >>"$RUN/meta.env"
        bench_log "$line"
    fi
done
"$RINGSERVE_BIN" probe --json >"$RUN/probe.json" 2>/dev/null || true
if [[ -n $NGINX_BIN ]] && has_contender nginx; then
    bench_nginx_conf "$RUN/nginx-example" "$(bench_port nginx)" "$WWW"
    cp "$RUN/nginx-example/nginx.conf" "$RUN/nginx.conf"
fi
if has_contender rsync && ((NEED_XFER)); then
    bench_rsyncd_conf "$RUN/rsyncd-example" "$WWW" yes
    cp "$RUN/rsyncd-example/rsyncd.conf" "$RUN/rsyncd.conf"
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

# One xfer sample: on a fresh server, one warm-up transfer (full mode), then XFER_RUNS
# measured ones. Each is timed on its own — the client with bash's time, the server's
# CPU from /proc once its per-connection children are reaped — checked (the bytes that
# arrived) and deleted, so every transfer writes a new file on tmpfs.
sample_xfer() {
    local dir=$1 contender=$2 pid=$3 i dest size t0 c0 l0 bytes rc failed=""
    dest=$(bench_xfer_dest)
    size=$(bench_file_size "$WL_FILE")
    bench_xfer_client "$contender"
    printf '%q ' "${XFER_CMD[@]}" >"$dir/client-cmd.txt"
    bench_warm_files "$WL_FILE"
    if ((WARMUP > 0)); then
        bench_xfer_run "$dir/warmup.txt" || true
        bench_wait_children "$pid" 10 || true
        bench_xfer_clean
    fi
    echo "runs=$XFER_RUNS"
    echo "file_bytes=$size"
    for ((i = 1; i <= XFER_RUNS; i++)); do
        t0=$(bench_cpu_ticks_all "$pid") c0=$(bench_cpu_stat "$SERVER_CPU") l0=$(bench_cpu_stat "$LOAD_CPU")
        rc=0
        bench_xfer_run "$dir/client.$i.txt" || rc=$?
        bench_wait_children "$pid" 10 || echo "run.$i.note=the server's per-connection process was still there 10 s after the client"
        echo "run.$i.cpu_ticks=$t0 $(bench_cpu_ticks_all "$pid")"
        echo "run.$i.server_cpu_stat=$c0 $(bench_cpu_stat "$SERVER_CPU")"
        echo "run.$i.load_cpu_stat=$l0 $(bench_cpu_stat "$LOAD_CPU")"
        echo "run.$i.time=$(<"$dir/client.$i.txt.time")"
        bytes=$(bench_xfer_bytes "$dest" "$dir/client.$i.txt")
        if [[ -z $bytes && $rc == 0 ]]; then
            bytes=$size
            echo "run.$i.checked=exit status only (the client prints no byte count)"
        fi
        echo "run.$i.bytes=${bytes:-0}"
        if ((rc != 0)); then
            failed="transfer $i: the client exited $rc: $(tail -n 1 "$dir/client.$i.txt")"
        elif [[ $bytes != "$size" ]]; then
            failed="transfer $i: ${bytes:-0} of $size bytes arrived"
        fi
        echo "run.$i.status=$([[ -z $failed ]] && echo ok || echo error)"
        bench_xfer_clean
        [[ -z $failed ]] || break
    done
    if [[ -z $failed ]]; then echo status=ok; else
        echo status=error
        echo "error=$failed"
    fi
}

start_server() {
    if [[ $WL_KIND == xfer ]]; then
        bench_start_xfer_server "$1" "$2"
    else
        bench_start_server "$1" "$WL_FILE" "$2"
    fi
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
        elif ! start_server "$c" "$dir"; then
            echo status=error
            echo "error=server did not start: $(tail -n 1 "$dir/server.log" 2>/dev/null)"
        else
            pids=$(bench_pid_tree "$SERVER_PID")
            echo "pids=$pids"
            case $WL_KIND in
            wrk) sample_wrk "$dir" "http://127.0.0.1:$port/$WL_FILE" "$pids" ;;
            idle) sample_idle "$dir" "$port" "$pids" ;;
            xfer) sample_xfer "$dir" "$c" "$SERVER_PID" ;;
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
        if bench_runs_in "$1" "$c"; then echo "$c"; fi
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
NAME=$DATE${TAG:+-$TAG}
python3 "$BENCH_DIR/report.py" "$RUN" "$OUT_DIR/$NAME"
# Static-site serving (bench/site.sh, about 3 minutes at 3 repetitions): that a
# precompressed sidecar, a file with none, and header and CORS rules cost no more per
# request than a plain file, measured in the same run. Un-narrowed runs only (a quick
# one runs it once, as its smoke test).
if ((!NARROWED)); then
    if "$BENCH_DIR/site.sh" --reps "$REPS" --out "$OUT_DIR/$NAME-site.md"; then
        {
            echo
            echo "## Static-site serving (\`bench/site.sh\`, uring, 1 KiB at 256 connections)"
            echo
            sed -n '/^| median/,$p' "$OUT_DIR/$NAME-site.md"
            echo
            echo "Every run: \`$NAME-site.md\`."
        } >>"$OUT_DIR/$NAME.md"
    else
        echo "WARN: bench/site.sh failed (output above); the static-site rows are left out" >&2
    fi
fi
if ((NARROWED && !QUICK)) && [[ -z $TAG ]]; then
    bench_log "wrote $OUT_DIR/$NAME.{json,md,svg}; a narrowed run leaves latest.* alone (--tag names one of its own)"
else
    for ext in json md svg; do cp "$OUT_DIR/$NAME.$ext" "$OUT_DIR/latest${TAG:+-$TAG}.$ext"; done
    bench_log "wrote $OUT_DIR/$NAME.{json,md,svg} and latest${TAG:+-$TAG}.*"
fi
