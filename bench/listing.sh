#!/usr/bin/env bash
# bench/listing.sh — how long a directory listing takes: ringserve's `--listing` (uring
# and epoll) against nginx's `autoindex on`, for directories of 10,000 and 20,000
# entries (all listed by both; ringserve's cap, --max-dir-entries, is 50,000). Each
# server on CPU 0, one curl at a time on CPU 1, REPS
# listings each after one warm-up; the median time to the last byte, and the bytes.
#
# Usage: bench/listing.sh [--reps N] [--out FILE]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_reps_out listing "$@"
bench_init
bench_ensure_tools no-wrk
bench_build_release
for n in 10000 20000; do
    mkdir -p "$BENCH_TMP/d$n"
    (cd "$BENCH_TMP/d$n" && seq -f "file-%06g.txt" 1 "$n" | xargs touch)
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# time_listing PORT PATH — RESULT="ms bytes" (medians of REPS curls).
time_listing() {
    local ms=() bytes=0 r out
    curl -s -o /dev/null "http://127.0.0.1:$1$2"
    for ((r = 0; r < REPS; r++)); do
        out=$(taskset -c 1 curl -s -o /dev/null -w '%{time_total} %{size_download}' "http://127.0.0.1:$1$2")
        ms+=("$(awk -v t="${out% *}" 'BEGIN {printf "%.2f", t * 1000}')")
        bytes=${out#* }
    done
    # Entries really listed: the links to the test files.
    local listed
    listed=$(curl -s "http://127.0.0.1:$1$2" | { grep -o 'href="file-' || true; } | wc -l)
    RESULT="$(median "${ms[@]}") $bytes $listed"
}

PORT=$(bench_port uring)
NPORT=$(bench_port nginx)
{
    echo "# Directory listings: ringserve --listing against nginx autoindex"
    echo
    echo "$(bench_provenance)."
    echo "Median of $REPS listings each (after one warm-up), one \`curl\` at a time on CPU 1, the server on"
    echo "CPU 0. Both list every entry (ringserve's \`--max-dir-entries\` is 50,000). Made by \`bench/listing.sh\`."
    echo
    echo "| directory | server | time to last byte | bytes | entries listed |"
    echo "|---|---|---|---|---|"
} >"$OUT"
for n in 10000 20000; do
    for backend in uring epoll; do
        bench_spawn "$BENCH_TMP/serve-$backend.log" taskset -c 0 "$RINGSERVE_BIN" serve "$BENCH_TMP" \
            --listen "127.0.0.1:$PORT" --backend "$backend" --listing
        bench_wait_http "$PORT" "/d$n/" "$SPAWNED_PID" || bench_die "ringserve did not start"
        time_listing "$PORT" "/d$n/"
        read -r ms bytes listed <<<"$RESULT"
        echo "| $n entries | ringserve $backend | $ms ms | $bytes | $listed |" >>"$OUT"
        bench_stop_pid "$SPAWNED_PID" 5
    done
    if [[ -n ${NGINX_BIN:-} ]]; then
        prefix=$BENCH_TMP/nginx-listing
        mkdir -p "$prefix"
        cat >"$prefix/nginx.conf" <<EOF
$([[ $EUID -eq 0 ]] && echo "user root;")
worker_processes 1;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$NPORT;
        root $BENCH_TMP;
        autoindex on;
    }
}
EOF
        bench_spawn "$prefix/out.log" taskset -c 0 "$NGINX_BIN" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" -g 'daemon off;'
        bench_wait_http "$NPORT" "/d$n/" "$SPAWNED_PID" || bench_die "nginx did not start"
        time_listing "$NPORT" "/d$n/"
        read -r ms bytes listed <<<"$RESULT"
        echo "| $n entries | nginx autoindex | $ms ms | $bytes | $listed |" >>"$OUT"
        bench_stop_pid "$SPAWNED_PID" 5
    else
        echo "| $n entries | nginx autoindex | SKIP: ${NGINX_SKIP:-nginx not available} | | |" >>"$OUT"
    fi
done
cat "$OUT"
bench_log "wrote $OUT"
