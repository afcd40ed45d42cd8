# shellcheck shell=bash
# shellcheck disable=SC2034  # the globals set here are read by the sourcing scripts
# bench/lib.sh — what bench/run.sh and bench/profile.sh share: tools, builds, test files,
# contenders (start / wait / stop), workloads, wrk, the xfer clients, process accounting,
# cleanup.
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
XFER_TMP=""          # the xfer workloads' dir on tmpfs: out/ (get's files), root/ (put's root)
XFER_FS=""           # its file system type (tmpfs unless BENCH_XFER_DIR says otherwise)
XFER_CMD=()          # set by bench_xfer_client: one transfer's client command line
declare -A XFER_SKIP=() # curl / rsync / socat: why it cannot be had, when it cannot

bench_log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
bench_die() {
    bench_log "ERROR: $*"
    exit 1
}

# One line for a result file's head: when, which commit (marked when what is built
# differs from it: src/, the manifest and lock file, bench/'s own programs, tracked or
# not), which kernel and CPU, so a number can be traced to what made it.
bench_provenance() {
    local commit dirty=""
    commit=$(git -C "$REPO_DIR" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    [[ -z $(git -C "$REPO_DIR" status --porcelain -- src Cargo.toml Cargo.lock 'bench/*.rs' 2>/dev/null) ]] ||
        dirty=" (with uncommitted changes)"
    echo "$(date -u '+%Y-%m-%d %H:%M UTC') · ringserve \`$commit\`$dirty · kernel $(uname -r) · $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"
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
    # Only empty dirs are left there between samples; never kept (it is memory).
    if [[ -n $XFER_TMP && -d $XFER_TMP ]]; then rm -rf "$XFER_TMP"; fi
    exit "$rc"
}

# bench_reps_out NAME ARGS... — parses `[--reps N] [--out FILE]` for bench/NAME.sh into
# REPS (default 5) and OUT (default bench/results/NAME-DATE.md); anything else is exit 2.
bench_reps_out() {
    local name=$1
    shift
    REPS=5 OUT=""
    while (($#)); do
        case $1 in
        --reps) REPS=${2:?--reps needs a number} && shift ;;
        --out) OUT=${2:?--out needs a file} && shift ;;
        *) echo "usage: bench/$name.sh [--reps N] [--out FILE]" >&2 && exit 2 ;;
        esac
        shift
    done
    [[ -n $OUT ]] || OUT=$REPO_DIR/bench/results/$name-$(date -u +%Y-%m-%dT%H%M).md
}

# Instructions per request of bench/counters.rs under cachegrind: (I(N2) - I(N1)) /
# (N2 - N1) for `BIN N [MODE]`, so start-up and warm-up cancel; into RESULT.
BENCH_IR_N1=2000
BENCH_IR_N2=12000
bench_irefs() {
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" 2>&1 |
        sed -n 's/.*I *refs: *//p' | tr -d ,
}
# bench_ir_per_request BIN [MODE]
bench_ir_per_request() {
    local a b
    a=$(bench_irefs "$1" "$BENCH_IR_N1" ${2:+"$2"})
    b=$(bench_irefs "$1" "$BENCH_IR_N2" ${2:+"$2"})
    [[ -n $a && -n $b ]] || bench_die "cachegrind gave no count for $1 ${2:-}"
    RESULT=$(((b - a) / (BENCH_IR_N2 - BENCH_IR_N1)))
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

# bench_ensure_tools [no-nginx] [no-wrk] — installs wrk (unless no-wrk: a run of xfer
# workloads only) and (unless no-nginx) nginx when missing (nginx: skipped with a reason
# when impossible), and checks perf and its syscall tracepoints.
bench_ensure_tools() {
    local want_nginx=1 want_wrk=1 a
    for a in "$@"; do
        case $a in
        no-nginx) want_nginx=0 ;;
        no-wrk) want_wrk=0 ;;
        esac
    done
    command -v python3 >/dev/null || bench_die "python3 is required (report and chart)"
    command -v taskset >/dev/null || bench_die "taskset (util-linux) is required"
    if ((want_wrk)) && ! command -v wrk >/dev/null; then
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

# bench_ensure_xfer_tools TOOL... (of curl rsync socat) — installs the missing ones with
# apt-get (each is the Debian package of that name); XFER_SKIP[TOOL] says why when one
# cannot be had.
bench_ensure_xfer_tools() {
    local t missing=()
    for t in "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
    ((${#missing[@]})) || return 0
    if [[ $EUID -ne 0 ]]; then
        for t in "${missing[@]}"; do XFER_SKIP[$t]="not installed, and apt-get needs root"; done
        return 0
    fi
    bench_log "installing ${missing[*]} with apt-get"
    bench_apt_install "${missing[@]}" && return 0
    # One package that cannot be had must not cost the others.
    for t in "${missing[@]}"; do
        command -v "$t" >/dev/null && continue
        bench_apt_install "$t" ||
            XFER_SKIP[$t]="not installed, and 'apt-get install -y $t' failed: $(tail -n 1 "$BENCH_TMP/apt.log")"
    done
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
    bench_log "cargo build --release (ringserve, examples limit + idle + allocs)"
    bench_cargo "$BENCH_TMP/build-release.log" build --release --bin ringserve --example limit --example idle --example allocs
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

ALL_WORKLOADS=(1k-1 1k-50 1k-256 p16-256 100k-50 1g-4 idle-10k get-1g get-1g-null put-1g)

# bench_workload NAME — sets WL_FILE WL_CONNS WL_KIND (wrk|idle|xfer) WL_TIMEOUT (wrk's),
# and for xfer WL_OP (get|put) and WL_DEST (file: a file on tmpfs; null: /dev/null).
bench_workload() {
    WL_TIMEOUT=10
    WL_KIND=wrk
    WL_OP="" WL_DEST="" WL_SCRIPT=""
    case $1 in
    1k-1) WL_FILE=1k.bin WL_CONNS=1 ;;
    1k-50) WL_FILE=1k.bin WL_CONNS=50 ;;
    1k-256) WL_FILE=1k.bin WL_CONNS=256 ;;
    # 16 requests per write (bench/pipeline.lua): the server, not wrk, is the bottleneck.
    p16-256) WL_FILE=1k.bin WL_CONNS=256 WL_SCRIPT=$BENCH_DIR/pipeline.lua ;;
    100k-50) WL_FILE=100k.bin WL_CONNS=50 ;;
    1g-4) WL_FILE=1g.bin WL_CONNS=4 WL_TIMEOUT=120 ;;
    idle-10k) WL_FILE=1k.bin WL_CONNS=10000 WL_KIND=idle ;;
    get-1g) WL_FILE=1g.bin WL_CONNS=1 WL_KIND=xfer WL_OP=get WL_DEST=file ;;
    get-1g-null) WL_FILE=1g.bin WL_CONNS=1 WL_KIND=xfer WL_OP=get WL_DEST=null ;;
    put-1g) WL_FILE=1g.bin WL_CONNS=1 WL_KIND=xfer WL_OP=put WL_DEST=file ;;
    *) bench_die "unknown workload '$1' (known: ${ALL_WORKLOADS[*]})" ;;
    esac
}

# ----------------------------------------------------------------------- contenders

ALL_CONTENDERS=(nginx uring epoll limit uring-nocounters curl rsync socat)

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

# bench_runs_in WORKLOAD CONTENDER — whether that contender takes part in that workload.
# HTTP (wrk, idle): nginx, uring, epoll, limit, and uring-nocounters on 1k-256 only.
# xfer: uring, epoll, limit, socat, rsync (not into /dev/null: it writes only files) and
# curl (get only: ringserve's HTTP takes no uploads). Sets the WL_* of WORKLOAD.
bench_runs_in() {
    bench_workload "$1"
    case $WL_KIND:$2 in
    xfer:uring | xfer:epoll | xfer:limit | xfer:socat) return 0 ;;
    xfer:rsync) [[ $WL_DEST != null ]] ;;
    xfer:curl) [[ $WL_OP == get ]] ;;
    xfer:*) return 1 ;;
    *:uring-nocounters) [[ $1 == 1k-256 ]] ;;
    *:nginx | *:uring | *:epoll | *:limit) return 0 ;;
    *) return 1 ;;
    esac
}

# Whether CONTENDER can run here; prints the reason when it cannot.
bench_contender_skip() {
    case $1 in
    nginx) [[ -n $NGINX_SKIP ]] && echo "$NGINX_SKIP" ;;
    rsync | socat) [[ -n ${XFER_SKIP[$1]:-} ]] && echo "${XFER_SKIP[$1]}" ;;
    curl)
        # curl's server is ringserve's HTTP on io_uring.
        if [[ -n ${XFER_SKIP[curl]:-} ]]; then echo "${XFER_SKIP[curl]}"; else bench_contender_skip uring; fi
        ;;
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

# bench_wait_listen PORT PID — up to 10 s for a socket listening on PORT, read from
# /proc/net/tcp{,6} so that no connection is made (a raw-stream server would answer one
# with a whole file); fails early if PID dies.
bench_wait_listen() {
    local port=$1 pid=$2 i hex
    hex=$(printf ':%04X' "$port")
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
            /proc/net/tcp /proc/net/tcp6 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# ---------------------------------------------------------------------------- xfer

# socat's read/write size (-b): coreutils cp's and cat's 128 KiB, not socat's 8 KiB.
SOCAT_BUF=131072

# bench_xfer_init — the xfer workloads' dir on tmpfs (in BENCH_XFER_DIR, default
# /dev/shm): out/ receives get's files, root/ is put's server root; both are emptied
# after every transfer. Sets XFER_TMP and XFER_FS (its file system type).
bench_xfer_init() {
    local parent=${BENCH_XFER_DIR:-/dev/shm}
    XFER_TMP=$(mktemp -d "$parent/ringserve-bench.XXXXXX") ||
        bench_die "cannot make a dir in $parent (set BENCH_XFER_DIR to a tmpfs)"
    mkdir -p "$XFER_TMP/out" "$XFER_TMP/root"
    XFER_FS=$(stat -f -c %T "$XFER_TMP")
    [[ $XFER_FS == tmpfs ]] ||
        bench_log "WARNING: $XFER_TMP is on $XFER_FS, not tmpfs: the xfer workloads measure its writes too"
}

# Empties out/ and root/ (the dirs stay: a server holds root/ open).
bench_xfer_clean() {
    find "$XFER_TMP/out" "$XFER_TMP/root" -mindepth 1 -delete
}

# Where the current xfer workload's file lands; nothing for /dev/null.
bench_xfer_dest() {
    case $WL_OP:$WL_DEST in
    get:file) echo "$XFER_TMP/out/$WL_FILE" ;;
    put:*) echo "$XFER_TMP/root/$WL_FILE" ;;
    esac
}

# bench_rsyncd_conf DIR ROOT READ_ONLY — an rsyncd.conf with one module, `bench`, at ROOT.
bench_rsyncd_conf() {
    local dir=$1 root=$2 ro=$3 ids=""
    # The test files live in a 0700 temp dir: as root, the daemon stays root to read them
    # (it would drop to nobody).
    [[ $EUID -eq 0 ]] && ids=$'    uid = root\n    gid = root'
    mkdir -p "$dir"
    cat >"$dir/rsyncd.conf" <<EOF
# Written by bench/lib.sh (bench_rsyncd_conf). Started as:
#   rsync --daemon --no-detach --config=DIR/rsyncd.conf --address=127.0.0.1 --port=PORT
pid file = $dir/rsyncd.pid
log file = $dir/rsyncd.log
use chroot = no
reverse lookup = no

[bench]
    path = $root
    read only = $ro
    transfer logging = no
$ids
EOF
}

# bench_start_xfer_server CONTENDER LOGDIR — the server side of the current xfer workload
# (WL_OP), pinned to SERVER_CPU, and waits until it listens: get serves $WWW, put
# receives into $XFER_TMP/root. Sets SERVER_PID; returns 1 when it does not come up.
bench_start_xfer_server() {
    local contender=$1 logdir=$2 port cmd up=() sock root=$WWW ok=0
    port=$(bench_port "$contender")
    if bench_port_open "$port"; then
        echo "port $port is already in use by another process; set BENCH_PORT_BASE to a free range" |
            tee "$logdir/server.log" >&2
        return 1
    fi
    if [[ $WL_OP == put ]]; then root=$XFER_TMP/root up=(--allow-upload); fi
    sock="TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork"
    case $contender:$WL_OP in
    uring:*) cmd=("$RINGSERVE_BIN" serve "$root" --protocol xfer --listen "127.0.0.1:$port" --backend uring --uring-threads 1 "${up[@]}") ;;
    epoll:*) cmd=("$RINGSERVE_BIN" serve "$root" --protocol xfer --listen "127.0.0.1:$port" --backend epoll "${up[@]}") ;;
    curl:get) cmd=("$RINGSERVE_BIN" serve "$WWW" --listen "127.0.0.1:$port" --backend uring --uring-threads 1) ;;
    rsync:*)
        bench_rsyncd_conf "$logdir/rsyncd" "$root" "$([[ $WL_OP == put ]] && echo no || echo yes)"
        cmd=(rsync --daemon --no-detach "--config=$logdir/rsyncd/rsyncd.conf" --address=127.0.0.1 "--port=$port")
        ;;
    # The listening address first, so each forked child opens the file anew; -U: the
    # data flows from the second address to the first.
    socat:get) cmd=(socat -U -b "$SOCAT_BUF" "$sock" "OPEN:$WWW/$WL_FILE,rdonly") ;;
    socat:put) cmd=(socat -u -b "$SOCAT_BUF" "$sock" "CREATE:$root/$WL_FILE") ;;
    limit:get) cmd=("$LIMIT_BIN" --send "127.0.0.1:$port" "$WWW/$WL_FILE") ;;
    # The size reserved first (fallocate), as ringserve reserves an upload's.
    limit:put) cmd=("$LIMIT_BIN" --recv "127.0.0.1:$port" "$root/$WL_FILE" "$(bench_file_size "$WL_FILE")") ;;
    *) bench_die "contender $contender has no xfer $WL_OP server" ;;
    esac
    printf '%q ' "${cmd[@]}" >"$logdir/cmd.txt"
    bench_spawn "$logdir/server.log" taskset -c "$SERVER_CPU" "${cmd[@]}"
    SERVER_PID=$SPAWNED_PID
    if [[ $contender == curl ]]; then
        bench_wait_http "$port" "/$WL_FILE" "$SERVER_PID" && ok=1
    else
        bench_wait_listen "$port" "$SERVER_PID" && ok=1
    fi
    if ((!ok)); then
        bench_log "$contender did not listen on port $port; its log:"
        tail -n 5 "$logdir/server.log" >&2 || true
        bench_stop_server
        return 1
    fi
}

# bench_xfer_client CONTENDER — sets XFER_CMD: one transfer of the current xfer workload
# from or to that contender's server, with the same destination for every contender.
bench_xfer_client() {
    local contender=$1 port dest src=$WWW/$WL_FILE
    port=$(bench_port "$contender")
    dest=$(bench_xfer_dest)
    [[ $WL_DEST == null ]] && dest=/dev/null
    case $contender:$WL_OP in
    uring:get | epoll:get) XFER_CMD=("$RINGSERVE_BIN" get "127.0.0.1:$port" "$WL_FILE" -o "$dest") ;;
    uring:put | epoll:put) XFER_CMD=("$RINGSERVE_BIN" put "127.0.0.1:$port" "$src" "$WL_FILE") ;;
    curl:get) XFER_CMD=(curl -sS --fail -o "$dest" -w 'curl: %{size_download} bytes\n' "http://127.0.0.1:$port/$WL_FILE") ;;
    rsync:get) XFER_CMD=(rsync --whole-file "rsync://127.0.0.1:$port/bench/$WL_FILE" "$dest") ;;
    rsync:put) XFER_CMD=(rsync --whole-file "$src" "rsync://127.0.0.1:$port/bench/$WL_FILE") ;;
    socat:get) XFER_CMD=(socat -u -b "$SOCAT_BUF" "TCP:127.0.0.1:$port" "CREATE:$dest") ;;
    # Both ways, so that after its shutdown socat waits (-t) for the server's close:
    # only then is every byte in the server's file.
    socat:put) XFER_CMD=(socat -t 60 -b "$SOCAT_BUF" "OPEN:$src,rdonly!!OPEN:/dev/null,wronly" "TCP:127.0.0.1:$port") ;;
    limit:get) XFER_CMD=("$LIMIT_BIN" --fetch "127.0.0.1:$port" "$dest") ;;
    limit:put) XFER_CMD=("$LIMIT_BIN" --push "127.0.0.1:$port" "$src") ;;
    *) bench_die "contender $contender has no xfer $WL_OP client" ;;
    esac
}

# bench_xfer_run OUT — one transfer: XFER_CMD pinned to LOAD_CPU, its output in OUT, and
# "WALL USER SYS" seconds in OUT.time from bash's `time` (the rusage of the client and of
# every child it waited for: rsync's receiver too). `timeout` is a backstop.
bench_xfer_run() {
    local out=$1 rc=0 TIMEFORMAT='%3R %3U %3S'
    {
        time timeout --kill-after=5 300 taskset -c "$LOAD_CPU" "${XFER_CMD[@]}" >"$out" 2>&1 || rc=$?
    } 2>"$out.time"
    ((rc == 0)) || bench_log "${XFER_CMD[0]##*/} exited $rc ($out)"
    return "$rc"
}

# bench_xfer_bytes DEST CLIENT_OUT — the bytes that arrived: DEST's size; with no DEST
# (/dev/null), the count the client printed (ringserve, curl, limit), or nothing (socat
# prints none).
bench_xfer_bytes() {
    if [[ -n $1 ]]; then
        stat -c %s "$1" 2>/dev/null || echo 0
    else
        sed -En 's/^(received|curl:|limit: fetched) ([0-9]+) bytes.*/\2/p' "$2" | tail -n 1
    fi
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
    local u s
    read -r u s <<<"$(bench_cpu_ticks_split "$@")"
    echo $((u + s))
}

# bench_cpu_ticks_split PID... — "UTIME STIME" (clock ticks) summed over the processes.
bench_cpu_ticks_split() {
    local u=0 s=0 p st f
    for p in "$@"; do
        st=$(<"/proc/$p/stat") || continue
        st=${st##*) }
        read -ra f <<<"$st"
        u=$((u + f[11]))
        s=$((s + f[12]))
    done
    echo "$u $s"
}

# bench_cpu_ticks_all PID... — as bench_cpu_ticks, plus what each has reaped of its
# children (cutime + cstime): rsync's and socat's per-connection processes.
bench_cpu_ticks_all() {
    local sum=0 p s f
    for p in "$@"; do
        s=$(<"/proc/$p/stat") || continue
        s=${s##*) }
        read -ra f <<<"$s"
        sum=$((sum + f[11] + f[12] + f[13] + f[14]))
    done
    echo "$sum"
}

# bench_wait_children PID SECONDS — up to SECONDS until PID has no children left (its
# per-connection processes have exited and been reaped); 1 if it still has.
bench_wait_children() {
    local i
    for ((i = 0; i < $2 * 50; i++)); do
        [[ -z $(ps -o pid= --ppid "$1" 2>/dev/null) ]] && return 0
        sleep 0.02
    done
    return 1
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
            taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --timeout "${to}s" --latency \
            ${WL_SCRIPT:+-s "$WL_SCRIPT"} "$url" \
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
