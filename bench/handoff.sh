#!/usr/bin/env bash
# bench/handoff.sh — zero-downtime hand-off under wrk, release build: two wrk loads
# (keep-alive, and a new connection per request with `Connection: close`) run for
# DURATION seconds while the server is taken over three times (--takeover through
# its --control-socket), alternating backends: uring → epoll → uring → epoll where
# io_uring runs. Reports each hand-off's time (the successor's "took over … in X ms"),
# how long each old server took to drain and exit (and its exit code), and wrk's
# requests, socket errors and non-2xx responses. Nothing here gates: it is the
# measurement the hand-off test (tests/handoff.rs) asserts on, at wrk's rates.
#
# Usage: bench/handoff.sh [DURATION]   (default 12; loopback only; stops by itself)
# Output: bench/results/handoff-<time>.md (and the same on stdout).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

duration=${1:-12}
bench_init
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || true; }
command -v wrk >/dev/null || { echo "SKIP bench/handoff.sh: wrk cannot be installed"; exit 0; }
(cd "$REPO_DIR" && cargo build --release -q --bin ringserve)
bin="$TARGET_DIR/release/ringserve"
root="$BENCH_TMP/root"
mkdir -p "$root"
head -c 4096 /dev/urandom >"$root/4k.bin"
head -c $((256 << 10)) /dev/urandom >"$root/256k.bin"
ctl="$BENCH_TMP/ctl.sock"
port=$((BENCH_PORT_BASE + 90))
order=(uring epoll uring epoll)
"$bin" probe --json | grep -q '"backend":"uring"' || order=(epoll epoll epoll epoll)

start() { # BACKEND LOG [extra args...]
  local b=$1 log=$2
  shift 2
  taskset -c "$SERVER_CPU" "$bin" serve "$root" --backend "$b" --listen "127.0.0.1:$port" \
    --control-socket "$ctl" --shutdown-timeout 8s "$@" 2>"$log" &
  SPAWNED_PID=$!
  BENCH_PIDS+=("$SPAWNED_PID")
}
waitfor() { # LOG TEXT
  for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  bench_die "no '$2' in $1: $(cat "$1")"
}

start "${order[0]}" "$BENCH_TMP/s0.log"
old=$SPAWNED_PID
waitfor "$BENCH_TMP/s0.log" "ringserve: serving"
taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${duration}s" "http://127.0.0.1:$port/4k.bin" >"$BENCH_TMP/wrk-ka.txt" 2>&1 &
ka=$!
taskset -c "$LOAD_CPU" wrk -t1 -c8 -d"${duration}s" -H "Connection: close" "http://127.0.0.1:$port/256k.bin" >"$BENCH_TMP/wrk-close.txt" 2>&1 &
cl=$!
rows=()
step=$((duration / 4))
for i in 1 2 3; do
  sleep "$step"
  log="$BENCH_TMP/s$i.log"
  t0=$(date +%s%N)
  start "${order[$i]}" "$log" --takeover "$ctl"
  new=$SPAWNED_PID
  waitfor "$log" "took over from pid"
  took=$(grep -o 'in [0-9.]* ms' "$log" | head -1)
  set +e
  wait "$old"
  rc=$?
  set -e
  t1=$(date +%s%N)
  rows+=("| $i | ${order[$((i - 1))]} → ${order[$i]} | ${took#in } | $(((t1 - t0) / 1000000)) ms | $rc |")
  old=$new
done
wait "$ka" "$cl"
kill -TERM "$old" 2>/dev/null || true
wait "$old" 2>/dev/null || true

summary() { # FILE
  local reqs errs non2xx
  reqs=$(awk '/requests in/ {print $1}' "$1")
  errs=$(grep -o 'Socket errors:.*' "$1" || echo "Socket errors: none")
  non2xx=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$1" || echo "Non-2xx or 3xx responses: 0")
  echo "$reqs requests; $errs; $non2xx"
}
out="$REPO_DIR/bench/results/handoff-$(date -u +%Y-%m-%dT%H%M).md"
{
  echo "# Hand-off under load ($(date -u +%Y-%m-%d), $(uname -r), ${duration}s, release build)"
  echo
  echo "Server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU. Keep-alive: \`wrk -t1 -c32\` on a 4 KiB file;"
  echo "connection per request: \`wrk -t1 -c8 -H 'Connection: close'\` on a 256 KiB file."
  echo
  echo "| hand-off | backends | successor's hand-off | takeover start → old exited | old exit code |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "- keep-alive: $(summary "$BENCH_TMP/wrk-ka.txt")"
  echo "- connection per request: $(summary "$BENCH_TMP/wrk-close.txt")"
} | tee "$out"
