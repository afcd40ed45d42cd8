#!/usr/bin/env bash
# bench/site.sh — what static-site serving costs per request on the uring backend:
# a 1 KiB script served plain, the same request answered from its precompressed
# sidecar (`--precompressed br`: one more open, cached), a script with no sidecars
# under `--precompressed br,zstd,gzip` (three misses, remembered by its handle), and
# the plain request with header, Cache-Control and CORS rules on (`--header` x3,
# `--cache-control` x2, `--cors`), each to the same request (a browser's for a script
# of another origin: Accept-Encoding: br, zstd, gzip, and an Origin). 256 connections,
# REPS alternated rounds; server pinned to CPU 0 (one ring), wrk -t1 to CPU 1. Reports
# requests and server CPU per request for each run and their medians, as ratios to
# plain. This machine's timings drift by a fifth between runs, so it also counts
# instructions per request of the driver and protocol for each mode under cachegrind
# (bench/counters.rs MODE, the same requests in memory): a count that does not move
# with the load. Never gates.
#
# Usage: bench/site.sh [--reps N] [--out FILE]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_reps_out site "$@"
bench_init
bench_ensure_tools no-nginx
bench_build_release
SITE=$BENCH_TMP/site
mkdir -p "$SITE/assets"
head -c 1024 /dev/urandom >"$SITE/assets/app.js"
head -c 1024 /dev/urandom >"$SITE/assets/app.js.br"
touch -r "$SITE/assets/app.js" "$SITE/assets/app.js.br"
head -c 1024 /dev/urandom >"$SITE/assets/lib.js"
MODES=(plain sidecar nosidecar rules)

TICK=$(getconf CLK_TCK)
PORT=$(bench_port uring)
RULES=(--header "X-Content-Type-Options: nosniff" --header "Referrer-Policy: same-origin"
    --header "assets/**:X-Robots-Tag: noindex"
    --cache-control "assets/**=public, max-age=31536000, immutable" --cache-control "**/*.html=no-cache"
    --cors "https://app.example")
# run MODE — one 2 s warm-up and one 8 s measured wrk run; RESULT="req cpu_us".
run() {
    # Every mode gets the same request, a browser's for a script of another origin.
    local args=() url=/assets/app.js
    local hdr=(-H "Accept-Encoding: br, zstd, gzip" -H "Origin: https://app.example")
    case $1 in
    sidecar) args=(--precompressed br) ;;
    nosidecar) args=(--precompressed br,zstd,gzip) url=/assets/lib.js ;;
    rules) args=("${RULES[@]}") ;;
    esac
    bench_spawn "$BENCH_TMP/serve-$1.log" taskset -c 0 "$RINGSERVE_BIN" serve "$SITE" \
        --listen "127.0.0.1:$PORT" --backend uring --uring-threads 1 "${args[@]}"
    local pid=$SPAWNED_PID
    bench_wait_http "$PORT" /assets/app.js "$pid" || bench_die "the server did not start ($1)"
    taskset -c 1 wrk -t1 -c256 -d2s "${hdr[@]}" "http://127.0.0.1:$PORT$url" >/dev/null
    local t0 t1
    t0=$(bench_cpu_ticks "$pid")
    taskset -c 1 wrk -t1 -c256 -d8s "${hdr[@]}" "http://127.0.0.1:$PORT$url" >"$BENCH_TMP/wrk.out"
    t1=$(bench_cpu_ticks "$pid")
    bench_stop_pid "$pid" 5
    local req
    req=$(awk '/requests in/ {print $1}' "$BENCH_TMP/wrk.out")
    [[ -n $req ]] || bench_die "wrk printed no result ($1)"
    RESULT="$req $(awk -v t=$((t1 - t0)) -v hz="$TICK" -v n="$req" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')"
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The sidecar really is what the sidecar runs are sent.
bench_spawn "$BENCH_TMP/check.log" "$RINGSERVE_BIN" serve "$SITE" --listen "127.0.0.1:$PORT" --precompressed br
bench_wait_http "$PORT" /assets/app.js "$SPAWNED_PID" || bench_die "the check server did not start"
curl -s -H "Accept-Encoding: br" "http://127.0.0.1:$PORT/assets/app.js" | cmp -s - "$SITE/assets/app.js.br" ||
    bench_die "the sidecar was not served"
bench_stop_pid "$SPAWNED_PID" 5

declare -A COL
{
    echo "# Static-site serving on io_uring: plain, precompressed sidecar, no sidecar, header rules"
    echo
    echo "$(bench_provenance)."
    echo "A 1 KiB script at 256 connections, $REPS alternated rounds of 8 s runs (after 2 s of"
    echo "warm-up each); server on CPU 0 (\`--uring-threads 1\`), \`wrk -t1\` on CPU 1. Made by \`bench/site.sh\`."
    echo "Every request carries \`Accept-Encoding: br, zstd, gzip\` and an \`Origin\`, as a browser's for a script"
    echo "of another origin. sidecar: \`--precompressed br\` (app.js.br sent). nosidecar: \`lib.js\`, which"
    echo "has none, under \`--precompressed br,zstd,gzip\`. rules: three \`--header\`,"
    echo "two \`--cache-control\` and a \`--cors\` origin (the requests' \`Origin\`)."
    echo
    echo "| run | way | requests | server CPU per request (µs) |"
    echo "|---|---|---|---|"
} >"$OUT"
for ((r = 1; r <= REPS; r++)); do
    for mode in "${MODES[@]}"; do
        bench_log "run $r of $REPS: $mode"
        run "$mode"
        read -r req cpu <<<"$RESULT"
        COL[$mode-req]+="$req " COL[$mode-cpu]+="$cpu "
        # Each mode against the plain run of its own round: the machine's drift
        # between rounds cancels out.
        [[ $mode == plain ]] && plain_cpu=$cpu
        COL[$mode-ratio]+="$(awk -v a="$cpu" -v b="$plain_cpu" 'BEGIN {printf "%.4f", a / b}') "
        echo "| $r | $mode | $req | $cpu |" >>"$OUT"
    done
done
{
    echo
    echo "| median | requests | server CPU per request (µs) | CPU per request vs plain | median of each round's ratio to its plain run |"
    echo "|---|---|---|---|---|"
    # shellcheck disable=SC2086 # the columns are space-separated numbers
    base=$(median ${COL[plain-cpu]})
    for mode in "${MODES[@]}"; do
        # shellcheck disable=SC2086
        m=$(median ${COL[$mode-cpu]})
        # shellcheck disable=SC2086
        # shellcheck disable=SC2086
        paired=$(median ${COL[$mode-ratio]})
        echo "| $mode | $(median ${COL[$mode-req]}) | $m | $(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.3f×", a / b}') | $(awk -v a="$paired" 'BEGIN {printf "%.3f×", a}') |"
    done
} >>"$OUT"

# Instructions per request, the same four modes in memory (see the top).
if command -v valgrind >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; } >/dev/null 2>&1; then
    bench_log "cachegrind: instructions per request of each mode"
    (cd "$REPO_DIR" && cargo build -q --release --example counters --features test-support)
    {
        echo
        echo "Instructions per request of the driver and the protocol, the same requests in memory"
        echo "(\`bench/counters.rs MODE\` under cachegrind, $BENCH_IR_N1 → $BENCH_IR_N2 requests; no kernel, no socket):"
        echo
        echo "| mode | instructions per request | vs plain |"
        echo "|---|---|---|"
    } >>"$OUT"
    for mode in "${MODES[@]}"; do
        bench_ir_per_request "$TARGET_DIR/release/examples/counters" "$mode"
        [[ $mode == plain ]] && IR_PLAIN=$RESULT
        echo "| $mode | $RESULT | $(awk -v a="$RESULT" -v b="$IR_PLAIN" 'BEGIN {printf "%+d (%+.1f %%)", a - b, (a - b) * 100 / b}') |" >>"$OUT"
    done
else
    echo "SKIP instruction counts: valgrind could not be installed" | tee -a "$OUT" >&2
fi
cat "$OUT"
bench_log "wrote $OUT"
