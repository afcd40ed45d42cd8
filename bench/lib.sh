# shellcheck shell=bash
# shellcheck disable=SC2034  # the globals set here are read by the sourcing scripts
# bench/lib.sh — what bench/run.sh and bench/profile.sh share: tools, builds, test files,
# contenders (start / wait / stop), workloads, wrk, process accounting, cleanup.
# Source it from a script that has `set -euo pipefail`; call bench_init first.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}

# Servers run on one CPU, the load generator on another (override for other machines).
SERVER_CPU=${BENCH_SERVER_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
# Contender i listens on BENCH_PORT_BASE + i (see bench_port).
BENCH_PORT_BASE=${BENCH_PORT_BASE:-18400}

BENCH_TMP=""         # this run's temp dir: test files, nginx prefix, raw samples
BENCH_PIDS=()        # every background process started here; bench_cleanup ends them
SPAWNED_PID=""       # set by bench_spawn
SERVER_PID=""        # set by bench_start_server
STOP_RC=""           # exit status of the process bench_stop_pid last stopped
NGINX_BIN=""         # set by bench_ensure_tools; empty when nginx cannot be had
NGINX_SKIP=""        # why nginx is skipped, when it is
PERF_SKIP=""         # why syscall counting is skipped, when it is
PERF_EVENTS=""       # perf stat -e list used for syscall counting

bench_log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
bench_die() {
    bench_log "ERROR: $*"
    exit 1
}

# Makes the temp dir and installs the cleanup trap. Every exit path ends what we started.
bench_init() {
    BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringserve-bench.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # 10 000 idle connections (plus wrk's) need descriptors; root may raise the hard limit.
    ulimit -Hn 65536 2>/dev/null || true
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

bench_cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${BENCH_PIDS[@]}"; do
        bench_stop_pid "$pid" 3
    done
    if [[ -n $BENCH_TMP && -d $BENCH_TMP ]]; then
        if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
            bench_log "kept $BENCH_TMP (BENCH_KEEP_TMP=1)"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
    exit "$rc"
}

# bench_spawn LOG CMD... — starts CMD in the background, output to LOG; SPAWNED_PID.
bench_spawn() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    SPAWNED_PID=$!
    BENCH_PIDS+=("$SPAWNED_PID")
}

# bench_wait_exit PID SECONDS — waits up to SECONDS for PID to exit; 1 if it did not.
bench_wait_exit() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.05
    done
    ! kill -0 "$1" 2>/dev/null
}

# bench_stop_pid PID [GRACE_SECONDS] — SIGTERM, then SIGKILL after the grace period;
# reaps it and forgets it; STOP_RC is its exit status (143 = died of SIGTERM). Never call
# it in $(...): a subshell can neither reap nor forget.
bench_stop_pid() {
    local pid=$1 grace=${2:-5} rc=0 keep=() p
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! bench_wait_exit "$pid" "$grace"; then
            bench_log "pid $pid ignored SIGTERM for ${grace}s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || rc=$?
    for p in "${BENCH_PIDS[@]}"; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    BENCH_PIDS=("${keep[@]}")
    STOP_RC=$rc
}

# ---------------------------------------------------------------------------- tools

bench_apt_install() {
    # Debian's nginx package starts a system nginx on port 80 from its postinst; a
    # policy-rc.d that says 101 ("not allowed") keeps it from starting anything, and is
    # removed again at once unless one was already there.
    local policy=/usr/sbin/policy-rc.d made=0 ok=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
    fi
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$BENCH_TMP/apt.log" 2>&1 ||
        { apt-get update -q >>"$BENCH_TMP/apt.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$BENCH_TMP/apt.log" 2>&1; }; then
        ok=1
    fi
    ((made)) && rm -f "$policy"
    ((ok)) || tail -n 5 "$BENCH_TMP/apt.log" >&2
    ((ok))
}

# bench_ensure_tools [no-nginx] — installs wrk and (unless no-nginx) nginx when missing
# (nginx: skipped with a reason when impossible), and checks perf and its syscall
# tracepoints.
bench_ensure_tools() {
    local want_nginx=1
    [[ ${1:-} == no-nginx ]] && want_nginx=0
    command -v python3 >/dev/null || bench_die "python3 is required (report and chart)"
    command -v taskset >/dev/null || bench_die "taskset (util-linux) is required"
    if ! command -v wrk >/dev/null; then
        bench_log "installing wrk with apt-get"
        bench_apt_install wrk || bench_die "wrk is missing and apt-get install wrk failed"
    fi
    NGINX_BIN=$(command -v nginx || true)
    [[ -z $NGINX_BIN && -x /usr/sbin/nginx ]] && NGINX_BIN=/usr/sbin/nginx
    if [[ -z $NGINX_BIN ]] && ((!want_nginx)); then
        NGINX_SKIP="not installed, and not asked for"
    elif [[ -z $NGINX_BIN ]]; then
        if [[ $EUID -ne 0 ]]; then
            NGINX_SKIP="not installed, and apt-get needs root"
        else
            bench_log "installing nginx with apt-get"
            if bench_apt_install nginx; then
                NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
            else
                NGINX_SKIP="not installed, and 'apt-get install -y nginx' failed: $(tail -n 1 "$BENCH_TMP/apt.log")"
            fi
        fi
    fi
    [[ -n $NGINX_SKIP ]] && ((want_nginx)) && bench_log "SKIP nginx: $NGINX_SKIP"
    local tracepoints=""
    command -v perf >/dev/null && tracepoints=$(perf list tracepoint 2>/dev/null || true)
    if ! command -v perf >/dev/null; then
        PERF_SKIP="perf is not installed (Debian: linux-perf)"
    elif [[ $tracepoints != *raw_syscalls:sys_enter* ]]; then
        PERF_SKIP="perf lists no raw_syscalls:sys_enter tracepoint (tracefs not mounted, or perf_event_paranoid too high)"
    else
        PERF_EVENTS=raw_syscalls:sys_enter
        [[ $tracepoints == *syscalls:sys_enter_io_uring_enter* ]] && PERF_EVENTS+=,syscalls:sys_enter_io_uring_enter
    fi
    [[ -n $PERF_SKIP ]] && bench_log "SKIP syscall counts: $PERF_SKIP"
    return 0
}

# -------------------------------------------------------------------------- builds

# bench_cargo LOG ARGS... — runs cargo in the repo with output to LOG; dies with its tail.
bench_cargo() {
    local log=$1
    shift
    if ! (cd "$REPO_DIR" && cargo "$@") >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        bench_die "cargo $* failed (log above)"
    fi
}

# ringserve, limit and idle in release. Sets RINGSERVE_BIN LIMIT_BIN IDLE_BIN.
bench_build_release() {
    bench_log "cargo build --release (ringserve, examples limit + idle)"
    bench_cargo "$BENCH_TMP/build-release.log" build --release --bin ringserve --example limit --example idle
    RINGSERVE_BIN=$TARGET_DIR/release/ringserve
    LIMIT_BIN=$TARGET_DIR/release/examples/limit
    IDLE_BIN=$TARGET_DIR/release/examples/idle
}

# ringserve with the counters compiled out, in its own target dir. Sets NOCOUNTERS_BIN.
bench_build_nocounters() {
    bench_log "cargo build --release --features no-counters (target/bench-nocounters)"
    CARGO_TARGET_DIR=$REPO_DIR/target/bench-nocounters \
        bench_cargo "$BENCH_TMP/build-nocounters.log" build --release --features no-counters --bin ringserve
    NOCOUNTERS_BIN=$REPO_DIR/target/bench-nocounters/release/ringserve
}

# ringserve and limit with line tables and frame pointers (own target dir, so the
# RUSTFLAGS change does not rebuild the release tree). Sets RINGSERVE_BIN LIMIT_BIN.
bench_build_profiling() {
    bench_log "cargo build --profile profiling with frame pointers (target/bench-profiling)"
    CARGO_TARGET_DIR=$REPO_DIR/target/bench-profiling RUSTFLAGS="-C force-frame-pointers=yes" \
        bench_cargo "$BENCH_TMP/build-profiling.log" build --profile profiling --bin ringserve --example limit
    RINGSERVE_BIN=$REPO_DIR/target/bench-profiling/profiling/ringserve
    LIMIT_BIN=$REPO_DIR/target/bench-profiling/profiling/examples/limit
}

# ---------------------------------------------------------------------- test files

# bench_make_files NAME... (1k.bin 100k.bin 1g.bin) in $BENCH_TMP/www, from random data
# (the 1 GiB file repeats one random MiB: real blocks, not sparse), then read once so
# they are in the page cache. Sets WWW.
bench_make_files() {
    local name size chunk
    WWW=$BENCH_TMP/www
    mkdir -p "$WWW"
    for name in "$@"; do
        size=$(bench_file_size "$name")
        [[ -f $WWW/$name && $(stat -c %s "$WWW/$name") == "$size" ]] && continue
        if ((size <= 1048576)); then
            head -c "$size" /dev/urandom >"$WWW/$name"
        else
            chunk=$BENCH_TMP/chunk.bin
            head -c 1048576 /dev/urandom >"$chunk"
            for ((i = 0; i < size / 1048576; i++)); do cat "$chunk"; done >"$WWW/$name"
            rm -f "$chunk"
        fi
        [[ $(stat -c %s "$WWW/$name") == "$size" ]] || bench_die "could not write $WWW/$name"
    done
    bench_warm_files "$@"
}

bench_warm_files() {
    local name
    for name in "$@"; do cat "$WWW/$name" >/dev/null; done
}

bench_file_size() {
    case $1 in
    1k.bin) echo 1024 ;;
    100k.bin) echo 102400 ;;
    1g.bin) echo 1073741824 ;;
    *) bench_die "unknown test file $1" ;;
    esac
}

# ------------------------------------------------------------------------ workloads

ALL_WORKLOADS=(1k-1 1k-50 1k-256 100k-50 1g-4 idle-10k)

# bench_workload NAME — sets WL_FILE WL_CONNS WL_KIND (wrk|idle) WL_TIMEOUT (wrk's).
bench_workload() {
    WL_TIMEOUT=10
    WL_KIND=wrk
    case $1 in
    1k-1) WL_FILE=1k.bin WL_CONNS=1 ;;
    1k-50) WL_FILE=1k.bin WL_CONNS=50 ;;
    1k-256) WL_FILE=1k.bin WL_CONNS=256 ;;
    100k-50) WL_FILE=100k.bin WL_CONNS=50 ;;
    1g-4) WL_FILE=1g.bin WL_CONNS=4 WL_TIMEOUT=120 ;;
    idle-10k) WL_FILE=1k.bin WL_CONNS=10000 WL_KIND=idle ;;
    *) bench_die "unknown workload '$1' (known: ${ALL_WORKLOADS[*]})" ;;
    esac
}

# ----------------------------------------------------------------------- contenders

ALL_CONTENDERS=(nginx uring epoll limit uring-nocounters)

bench_port() {
    local i
    for i in "${!ALL_CONTENDERS[@]}"; do
        [[ ${ALL_CONTENDERS[$i]} == "$1" ]] && echo $((BENCH_PORT_BASE + 1 + i)) && return
    done
    bench_die "unknown contender '$1' (known: ${ALL_CONTENDERS[*]})"
}

# bench_nginx_conf PREFIX PORT ROOT — nginx's best static-file config for this job.
bench_nginx_conf() {
    local prefix=$1 port=$2 root=$3 user=""
    # The test files live in a 0700 temp dir: as root, the worker runs as root to read them.
    [[ $EUID -eq 0 ]] && user="user root;"
    mkdir -p "$prefix/tmp"
    cat >"$prefix/nginx.conf" <<EOF
# Written by bench/lib.sh (bench_nginx_conf). Started as:
#   nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log -g 'daemon off;'
$user
worker_processes 1;
worker_rlimit_nofile 65536;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;

events {
    worker_connections 20000;
    use epoll;
}

http {
    types { application/octet-stream bin; }
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    open_file_cache max=1024 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_min_uses 1;
    open_file_cache_errors on;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;

    server {
        listen 127.0.0.1:$port backlog=4096;
        root $root;
        location / { }
    }
}
EOF
}

# Whether CONTENDER can run here; prints the reason when it cannot.
bench_contender_skip() {
    case $1 in
    nginx) [[ -n $NGINX_SKIP ]] && echo "$NGINX_SKIP" ;;
    uring | uring-nocounters)
        "$RINGSERVE_BIN" probe --json 2>/dev/null | python3 -c '
import json, sys
p = json.load(sys.stdin)
u = p.get("io_uring", {})
if not u.get("available"):
    print("io_uring unavailable: %s" % (u.get("error") or p.get("reason") or "unknown"))
' || echo "ringserve probe --json failed"
        ;;
    esac
    return 0
}

# bench_start_server CONTENDER FILE LOGDIR — starts it pinned to SERVER_CPU and waits
# until it answers GET /FILE with 200. Sets SERVER_PID. Returns 1 (log tail on stderr)
# when it does not come up.
bench_start_server() {
    local contender=$1 file=$2 logdir=$3 port prefix cmd
    port=$(bench_port "$contender")
    if bench_port_open "$port"; then
        echo "port $port is already in use by another process; set BENCH_PORT_BASE to a free range" |
            tee "$logdir/server.log" >&2
        return 1
    fi
    prefix=$logdir/nginx
    case $contender in
    nginx)
        mkdir -p "$prefix"
        bench_nginx_conf "$prefix" "$port" "$WWW"
        cmd=("$NGINX_BIN" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" -g 'daemon off;')
        ;;
    uring) cmd=("$RINGSERVE_BIN" serve "$WWW" --listen "127.0.0.1:$port" --backend uring --uring-threads 1) ;;
    uring-nocounters) cmd=("$NOCOUNTERS_BIN" serve "$WWW" --listen "127.0.0.1:$port" --backend uring --uring-threads 1) ;;
    epoll) cmd=("$RINGSERVE_BIN" serve "$WWW" --listen "127.0.0.1:$port" --backend epoll) ;;
    limit) cmd=("$LIMIT_BIN" "127.0.0.1:$port" "$WWW/$file") ;;
    *) bench_die "unknown contender $contender" ;;
    esac
    printf '%q ' "${cmd[@]}" >"$logdir/cmd.txt"
    bench_spawn "$logdir/server.log" taskset -c "$SERVER_CPU" "${cmd[@]}"
    SERVER_PID=$SPAWNED_PID
    if ! bench_wait_http "$port" "/$file" "$SERVER_PID"; then
        bench_log "$contender did not answer on port $port; its log:"
        tail -n 5 "$logdir/server.log" >&2 || true
        bench_stop_server
        return 1
    fi
}

# Stops SERVER_PID (SIGTERM; nginx's master stops its worker); STOP_RC is its status.
bench_stop_server() {
    STOP_RC=""
    [[ -n $SERVER_PID ]] || return 0
    bench_stop_pid "$SERVER_PID" 10
    SERVER_PID=""
}

bench_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# bench_http_status PORT PATH — the status code of one GET (Connection: close).
bench_http_status() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" &&
            printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3 &&
            IFS=' ' read -r -t 2 _ code _ <&3 &&
            echo "$code"
    ) 2>/dev/null || true
}

# bench_wait_http PORT PATH PID — up to 10 s for a 200 on PATH; fails early if PID dies.
bench_wait_http() {
    local port=$1 path=$2 pid=$3 i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        [[ $(bench_http_status "$port" "$path") == 200 ]] && return 0
        sleep 0.05
    done
    return 1
}

# ------------------------------------------------------------- process accounting

# bench_pid_tree PID — PID and all its descendants (nginx: master + worker), one line.
bench_pid_tree() {
    local todo=("$1") tree=() p c
    while ((${#todo[@]})); do
        p=${todo[0]}
        todo=("${todo[@]:1}")
        tree+=("$p")
        for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do todo+=("$c"); done
    done
    echo "${tree[*]}"
}

# bench_cpu_ticks PID... — utime + stime (clock ticks) summed over the processes; each
# process's /proc/PID/stat counts all its threads, exited ones included.
bench_cpu_ticks() {
    local sum=0 p s f
    for p in "$@"; do
        s=$(<"/proc/$p/stat") || continue
        s=${s##*) }
        read -ra f <<<"$s"
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}

# bench_cpu_stat CPU — "BUSY TOTAL" clock ticks of that CPU from /proc/stat. BUSY is
# user + nice + system + steal: task time (which irq/softirq time is not part of, with IRQ
# time accounting) plus what the hypervisor took. Less the server's (or wrk's) own
# utime + stime over the same interval, it tells how much of the pinned CPU went elsewhere.
bench_cpu_stat() {
    local name user nice sys idle iowait irq softirq steal _rest
    while read -r name user nice sys idle iowait irq softirq steal _rest; do
        if [[ $name == "cpu$1" ]]; then
            echo "$((user + nice + sys + steal)) $((user + nice + sys + idle + iowait + irq + softirq + steal))"
            return
        fi
    done </proc/stat
    echo "0 0"
}

# bench_rss_kb PID... — VmRSS summed over the processes.
bench_rss_kb() {
    local sum=0 p k v _u
    for p in "$@"; do
        while read -r k v _u; do
            [[ $k == VmRSS: ]] && sum=$((sum + v))
        done <"/proc/$p/status"
    done
    echo "$sum"
}

# ---------------------------------------------------------------------------- load

# bench_wrk CONNS SECONDS URL OUT TIMEOUT — one wrk run pinned to LOAD_CPU; output in OUT,
# wrk's own user and system CPU seconds in OUT.time (a saturated wrk caps every server).
# wrk stops by itself; `timeout` is a backstop for a server that wedges it.
bench_wrk() {
    local conns=$1 secs=$2 url=$3 out=$4 to=$5 rc=0 TIMEFORMAT='%3U %3S'
    {
        time timeout --signal=INT --kill-after=5 $((secs + to + 30)) \
            taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --timeout "${to}s" --latency "$url" \
            >"$out" 2>&1 || rc=$?
    } 2>"$out.time"
    ((rc == 0)) || bench_log "wrk exited $rc ($out)"
    return "$rc"
}

# bench_perf_start PIDS_CSV OUT — perf stat counting syscalls of those processes (all
# their threads, and threads they start later) until bench_perf_stop. Sets PERF_PID.
bench_perf_start() {
    bench_spawn "$2.log" taskset -c "$LOAD_CPU" perf stat -x, -o "$2" -e "$PERF_EVENTS" -p "$1"
    PERF_PID=$SPAWNED_PID
    # perf stat -p has no ready signal; it attaches in well under this.
    sleep 0.5
}

# SIGINT makes perf stat print its counts and exit (it installs its own handler, so the
# SIG_IGN a non-interactive shell gives background jobs does not apply).
bench_perf_stop() {
    kill -INT "$PERF_PID" 2>/dev/null || true
    bench_wait_exit "$PERF_PID" 5 || bench_log "perf stat did not stop on SIGINT"
    bench_stop_pid "$PERF_PID" 2
}
