#!/usr/bin/env bash
# bench/bigfile.sh — 1 GiB bodies to 4 keep-alive connections into bench/bigget.rs,
# the zero-copy receiver (socket→pipe→/dev/null), so the server and not the client is
# the bottleneck (wrk is 100 % busy at these sizes, whoever serves). Contenders: nginx
# (sendfile, tcp_nopush), ringserve uring and epoll, and the limit reference (sendfile
# under TCP_CORK), alternated REPS times; the server on CPU 0, bigget on CPU 1.
# Reports the median GB/s and server CPU per GB (ms of utime+stime per 10^9 bytes), and
# each as a ratio to nginx and to the limit, in one run. Reports, never gates.
#
# Usage: bench/bigfile.sh [SECS] [REPS]   (default 10 s, 3 repetitions; loopback only)
# Output: bench/results/bigfile-<time>.md (and stdout).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

secs=${1:-10}
reps=${2:-3}
bench_init
bench_ensure_tools no-wrk
bench_build_release
bench_cargo "$BENCH_TMP/build-bigget.log" build --release --example bigget
BIGGET_BIN=$TARGET_DIR/release/examples/bigget
bench_make_files 1g.bin
hz=$(getconf CLK_TCK)
contenders=(nginx uring epoll limit)
[[ -n $NGINX_BIN ]] || contenders=(uring epoll limit)
declare -A gbps cpu
for ((r = 1; r <= reps; r++)); do
  for c in "${contenders[@]}"; do
    dir="$BENCH_TMP/$c-$r"
    mkdir -p "$dir"
    if ! bench_start_server "$c" 1g.bin "$dir"; then
      bench_log "$c did not start; skipped"
      continue
    fi
    port=$(bench_port "$c")
    # Warm: one body each way through the path.
    taskset -c "$LOAD_CPU" "$BIGGET_BIN" "127.0.0.1:$port" /1g.bin 1 1 >/dev/null
    pids=$(bench_pid_tree "$SERVER_PID")
    # shellcheck disable=SC2086 # a list of pids
    t0=$(bench_cpu_ticks $pids)
    out=$(taskset -c "$LOAD_CPU" "$BIGGET_BIN" "127.0.0.1:$port" /1g.bin 4 "$secs")
    # shellcheck disable=SC2086
    t1=$(bench_cpu_ticks $pids)
    bench_stop_server
    bytes=$(sed -E 's/.* ([0-9]+) bytes.*/\1/' <<<"$out")
    g=$(sed -E 's/.*: ([0-9.]+) GB\/s/\1/' <<<"$out")
    ms_per_gb=$(python3 -c "print(round(($t1-$t0)*1000/$hz/($bytes/1e9), 1))")
    bench_log "$c rep $r: $out; server CPU $(((t1 - t0) * 1000 / hz)) ms = $ms_per_gb ms/GB"
    gbps[$c]+="$g "
    cpu[$c]+="$ms_per_gb "
  done
done

med() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
out="$REPO_DIR/bench/results/bigfile-$(date -u +%Y-%m-%dT%H%M).md"
{
  echo "# 1 GiB × 4 connections into a zero-copy receiver ($(date -u +%Y-%m-%d), $(uname -r))"
  echo
  echo "\`bench/bigfile.sh $secs $reps\`: medians of $reps alternated runs of $secs s; server on CPU $SERVER_CPU, \`bigget\` on CPU $LOAD_CPU."
  echo "$(bench_provenance)."
  echo
  echo "| contender | GB/s | × nginx | × limit | server CPU per GB | × nginx | × limit | runs (GB/s) |"
  echo "|---|---|---|---|---|---|---|---|"
  gn=$(med "${gbps[nginx]:-}") cn=$(med "${cpu[nginx]:-}")
  gl=$(med "${gbps[limit]:-}") cl=$(med "${cpu[limit]:-}")
  for c in "${contenders[@]}"; do
    g=$(med "${gbps[$c]:-}") m=$(med "${cpu[$c]:-}")
    ratio() { python3 -c "print('%.2f' % ($1/$2) if '$2' not in ('', '0') else '-')" 2>/dev/null || echo -; }
    echo "| $c | $g | $(ratio "$g" "${gn:-0}") | $(ratio "$g" "${gl:-0}") | $m ms | $(ratio "$m" "${cn:-0}") | $(ratio "$m" "${cl:-0}") | ${gbps[$c]:-} |"
  done
} | tee "$out"
