#!/bin/sh
# One matrix cell, run *inside* its environment: on the host (possibly under
# ringserve-nouring) or as the guest's script under busybox sh, so it is plain POSIX sh
# and uses only busybox tools.
#
# Usage: suite.sh RINGSERVE_BIN TEST_BIN...
# Env:   KC_ROOT (cwd for the tests, as cargo gives them: the package root),
#        KC_TEST_TIMEOUT (seconds per test binary, default 900),
#        KC_MODES (`auto` for auto only; default `auto epoll`)
#
# Prints, between markers that matrix.sh parses:
#   KC-PROBE-BEGIN / the probe's JSON / KC-PROBE-END
#   KC-URING rc=N, plus KC-URING-ERR: lines (what `serve --backend uring` said)
#   KC-SUITE-BEGIN MODE NAME ... libtest output ... KC-SUITE-END MODE NAME rc=N secs=S
# MODE is `auto` (the suite narrowed to the backend auto chose here) and, where the
# uring backend starts, `epoll` (the suite forced to epoll).
set -u

ringserve=$1
shift
cd "${KC_ROOT:-/}" || exit 1
limit=${KC_TEST_TIMEOUT:-900}
scratch=${TMPDIR:-/tmp}/kc-suite.$$
mkdir -p "$scratch"

echo "KC-PROBE-BEGIN"
"$ringserve" probe --json
echo "KC-PROBE-END"

# Does the uring backend start here? `serve --backend uring` exits 2 at once with its
# reason when it cannot; when it can, it serves until a TERM four seconds later and
# exits 0. (Not `timeout`: GNU's reports 124 whenever it had to send the signal,
# busybox's reports the child's status.) A server that ignores the TERM is killed at
# 15 s and shows as 137.
"$ringserve" serve "$scratch" --listen 127.0.0.1:0 --backend uring \
  >/dev/null 2>"$scratch/uring.err" &
pid=$!
i=0
while [ $i -lt 4 ] && kill -0 "$pid" 2>/dev/null; do sleep 1; i=$((i + 1)); done
kill -TERM "$pid" 2>/dev/null
( sleep 15; kill -KILL "$pid" 2>/dev/null ) &
watchdog=$!
wait "$pid"
uring_rc=$?
kill "$watchdog" 2>/dev/null
echo "KC-URING rc=$uring_rc"
sed 's/^/KC-URING-ERR: /' "$scratch/uring.err"

# The backend auto picks, from the probe (serde_json prints `"backend":"epoll"`).
auto=$("$ringserve" probe --json | sed -n 's/.*"backend":"\([a-z]*\)".*/\1/p')
[ -n "$auto" ] || auto=epoll

modes="auto"
# KC_MODES=auto: the cell's setup changes only io_uring, so no epoll run (matrix.sh).
[ "$uring_rc" -eq 0 ] && [ "${KC_MODES:-auto epoll}" != auto ] && modes="auto epoll"
status=0
for mode in $modes; do
  if [ "$mode" = auto ]; then backend=$auto; else backend=epoll; fi
  for bin in "$@"; do
    name=${bin##*/}
    echo "KC-SUITE-BEGIN $mode $name backends=$backend"
    start=$(date +%s)
    # RINGSERVE_TEST_SKIP_HUGE: the multi-GiB xfer round trip (tests/xfer.rs) writes a
    # 4 GiB copy; the plain `cargo test` before the matrix runs it on the host kernel,
    # and the cells skip it (visibly) to keep the matrix inside CI's time.
    RINGSERVE_TEST_SKIP_HUGE=1 RINGSERVE_TEST_BACKENDS=$backend timeout -s KILL "$limit" "$bin" 2>&1
    rc=$?
    echo "KC-SUITE-END $mode $name rc=$rc secs=$(($(date +%s) - start))"
    [ "$rc" -eq 0 ] || status=1
  done
done
rm -rf "$scratch"
exit $status
