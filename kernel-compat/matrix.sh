#!/usr/bin/env bash
# The kernel-compatibility matrix: the whole test suite (lib unit tests + every
# integration test binary) in each cell below, with the probe's JSON, the backend
# `auto` chose and why, pass/fail counts and wall time per cell.
#
# Usage: kernel-compat/matrix.sh [--host-only | --vm-only] [--cells ID,ID,...]
#                                [--auto-only] [--short] [--strict] [--vm-timeout SECONDS]
#                                [--out DIR]
#   --host-only   only the host cells (no qemu needed)
#   --vm-only     only the VM cells
#   --cells       exactly these cells (ids as listed in CELLS below)
#   --auto-only   no cell runs the suite again forced to epoll
#   --short       CI's short form: --auto-only, and the cells where io_uring cannot be
#                 had at all run the tests of the probe's choice, not the whole suite
#                 (host-enosys: the lib unit tests, cli, listen; 6.12-disabled: those
#                 and http). Their whole epoll suite is host-eperm's, on this kernel.
#   --strict      a SKIPPED cell fails the run too
#   --out DIR     write matrix.{md,json} there
# Output: results/matrix.md and results/matrix.json for a run of every cell; a partial
# run (--host-only, --vm-only, --cells) writes results/partial/ instead, so it never
# overwrites the committed full table. Per-cell logs: results/logs/CELL.log.
# Exit: 0 all ran cells passed (SKIPPED cells are listed with their reason); 1 a cell
# failed its tests or an expectation; 3 only infrastructure failures (a guest that never
# started after retries); 2 bad usage.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${KC_CACHE:-$here/.cache}"

# id | where | kernel | setup. `where` is host or vm. Setup:
#   seccomp:ERRNO  the cell runs under ringserve-nouring --errno ERRNO
#   env:K=V        the cell runs with that environment variable
#   append:ARG     extra guest kernel command-line argument
#   memlock:KIB    `ulimit -l KIB` in the guest before anything runs (64 KiB was the
#                  kernel's default before 5.16 and is Docker's; 5.10 charges rings to it)
CELLS=(
  "host|host|-|-"
  "host-eperm|host|-|seccomp:EPERM"
  "host-enosys|host|-|seccomp:ENOSYS"
  "host-nofeat|host|-|env:RINGSERVE_URING_DISABLE=all"
  "5.10|vm|5.10|-"
  "6.1|vm|6.1|-"
  "6.12|vm|6.12|-"
  "7.3|vm|7.3|-"
  "6.12-disabled|vm|6.12|append:sysctl.kernel.io_uring_disabled=2"
  "5.10-memlock|vm|5.10|memlock:64"
)

only_where= only_cells= strict=0 vm_timeout=1500 out= auto_only=0 short=0
while (($#)); do
  case "$1" in
    --host-only) only_where=host; shift ;;
    --vm-only) only_where=vm; shift ;;
    --cells) only_cells=",$2,"; shift 2 ;;
    --strict) strict=1; shift ;;
    --auto-only) auto_only=1; shift ;;
    --short) short=1 auto_only=1; shift ;;
    --vm-timeout) vm_timeout=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    *) echo "matrix.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

selected=()
for c in "${CELLS[@]}"; do
  IFS='|' read -r id where _ _ <<<"$c"
  [[ -n "$only_where" && "$where" != "$only_where" ]] && continue
  [[ -n "$only_cells" && "$only_cells" != *",$id,"* ]] && continue
  selected+=("$c")
done
((${#selected[@]})) || { echo "matrix.sh: no cell selected" >&2; exit 2; }
if [[ -z "$out" ]]; then
  if ((${#selected[@]} == ${#CELLS[@]})); then out="$here/results"; else out="$here/results/partial"; fi
fi
out=$(mkdir -p "$out" && cd "$out" && pwd)
logs="$here/results/logs"
mkdir -p "$out" "$logs"
command -v python3 >/dev/null || { echo "matrix.sh: python3 is needed for the report" >&2; exit 2; }

log() { printf '\n=== kernel-compat: %s\n' "$*"; }

# --- Build: the ringserve binaries and every test binary, as `cargo test` would run them.
log "building (cargo build --bins; cargo test --no-run)"
(cd "$repo" && nice cargo build --bins -q)
tests_json=$(cd "$repo" && nice cargo test --no-run -q --message-format=json)
# Test executables in a stable order: lib and bin unit tests, then each tests/*.rs.
mapfile -t test_bins < <(python3 -c '
import json, sys
rows = []
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = m["target"]["kind"][0]
        rows.append(({"lib": 0, "bin": 1}.get(kind, 2), m["target"]["name"], m["executable"]))
for r in sorted(rows):
    print(r[2])
' <<<"$tests_json")
target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ringserve="$target_dir/debug/ringserve"
nouring="$target_dir/debug/ringserve-nouring"
[[ -x "$ringserve" && -x "$nouring" ]] || { echo "matrix.sh: binaries missing after build" >&2; exit 1; }
((${#test_bins[@]})) || { echo "matrix.sh: no test binaries found" >&2; exit 1; }

# --- VM prerequisites, fetched once, only if a VM cell is selected. A cell whose
# prerequisite cannot be had is SKIPPED with the reason, never passed.
vm_skip=
if printf '%s\n' "${selected[@]}" | grep -q '|vm|'; then
  kernels=$(printf '%s\n' "${selected[@]}" | awk -F'|' '$2 == "vm" {print $3}' | sort -u | xargs)
  log "fetching kernels ($kernels) and qemu"
  # shellcheck disable=SC2086 # the kernel ids are single words
  if ! nice "$here/fetch.sh" $kernels; then
    echo "WARN: fetch.sh failed for part of it; cells without their kernel or qemu will SKIP"
  fi
  [[ -s "$cache/qemu/env" ]] || vm_skip="no qemu could be had (fetch.sh: neither bookworm-backports' qemu 10 nor an installed qemu-system-x86)"
  command -v busybox >/dev/null || vm_skip="busybox-static could not be installed (it builds the guest's initramfs)"
  ((EUID == 0)) || vm_skip="building the initramfs needs root (mknod /dev/console)"
  files_list="$cache/guest-files"
  mkdir -p "$cache"
  { printf '%s\n' "$ringserve" "$nouring" "$here/suite.sh" "${test_bins[@]}"
    # curl is what a few http tests use; setpriv and systemd-socket-activate the
    # hand-off, error-log and socket-activation ones; without one they print SKIP, as
    # on the host.
    command -v curl setpriv systemd-socket-activate || true; } >"$files_list"
fi

total_start=$(date +%s)
rm -f "$logs"/*.meta
for c in "${selected[@]}"; do
  IFS='|' read -r id where kernel setup <<<"$c"
  cell_log="$logs/$id.log"
  meta="$logs/$id.meta"
  # The suite runs as `auto` and again forced to epoll where uring starts, except:
  # in cells whose setup changes only io_uring (features off, a low RLIMIT_MEMLOCK),
  # where the epoll run would be the host's or the same kernel's plain cell again; and
  # on 6.1 and 6.12, between the oldest and newest kernels that do run it: the epoll
  # backend uses only system calls settled long before 5.10 (epoll, accept4, poll,
  # sendmsg, sendfile, splice). Left out to keep CI inside its time.
  case "$id" in
    host-nofeat | 5.10-memlock | 6.1 | 6.12) modes="auto" ;;
    *) modes="auto epoll" ;;
  esac
  modes_why=cell
  ((auto_only)) && [[ "$modes" != auto ]] && { modes="auto"; modes_why=auto-only; }
  # The test binaries the cell runs (by target name; `ringserve` is the lib's and the
  # bin's unit tests): all of them, except on 5.10-memlock. Its setup changes only how
  # ring memory is charged, and on Debian's 5.10 it changes nothing
  # (kernel-compat/README.md), so it runs what builds rings and starts servers on them:
  # the lib unit tests (the ring's own), tests/uring.rs, the listener and CLI tests.
  # The rest of the suite on 5.10 is the 5.10 cell's. Under --short, the cells where
  # io_uring cannot be had at all run what tests the probe's choice and its reasons
  # (the unit tests, the CLI's banner, probe and forced-backend tests, the listeners),
  # and 6.12-disabled the HTTP tests too, epoll's main job on a guest's kernel; the
  # whole suite on epoll with io_uring refused is host-eperm's.
  keep= bins_why=
  case "$id" in
    5.10-memlock) keep="ringserve uring listen cli" bins_why=memlock ;;
    host-enosys | 6.12-disabled)
      if ((short)); then
        keep="ringserve listen cli" bins_why=short
        if [[ "$id" == 6.12-disabled ]]; then keep+=" http"; fi
      fi ;;
  esac
  cell_bins=("${test_bins[@]}")
  if [[ -n "$keep" ]]; then
    cell_bins=()
    for b in "${test_bins[@]}"; do
      n=${b##*/}
      [[ " $keep " == *" ${n%-*} "* ]] && cell_bins+=("$b")
    done
  fi
  bins_note=all
  ((${#cell_bins[@]} == ${#test_bins[@]})) || bins_note=$(for b in "${cell_bins[@]}"; do n=${b##*/}; echo "${n%-*}"; done | sort -u | xargs)
  printf 'id=%s\nwhere=%s\nkernel_id=%s\nsetup=%s\nmodes=%s\nmodes_why=%s\nbins=%s\nbins_why=%s\n' \
    "$id" "$where" "$kernel" "$setup" "$modes" "$modes_why" "$bins_note" "$bins_why" >"$meta"
  log "cell $id ($where${kernel:+ $kernel}, $setup)"
  start=$(date +%s)
  rc=0
  if [[ "$where" == host ]]; then
    cmd=(sh "$here/suite.sh" "$ringserve" "${cell_bins[@]}")
    envs=(KC_ROOT="$repo" KC_MODES="$modes")
    case "$setup" in
      seccomp:*) cmd=("$nouring" --errno "${setup#seccomp:}" -- "${cmd[@]}") ;;
      env:*) envs+=("${setup#env:}") ;;
    esac
    env "${envs[@]}" nice "${cmd[@]}" >"$cell_log" 2>&1 || rc=$?
    echo "uname=$(uname -r)" >>"$meta"
  else
    kdir="$cache/kernels/$kernel"
    skip=$vm_skip
    [[ -n "$skip" || -s "$kdir/vmlinuz" ]] || skip="kernel $kernel could not be fetched (see fetch.sh output above)"
    if [[ -n "$skip" ]]; then
      echo "SKIPPED: $skip"
      echo "skipped=$skip" >>"$meta"
      continue
    fi
    sed 's/^/kpkg_/' "$kdir/version" >>"$meta"
    # shellcheck source=/dev/null
    echo "qemu=$(source "$cache/qemu/env" && echo "$QEMU_VERSION")" >>"$meta"
    guest="$cache/guest-$id.sh"
    {
      echo "export KC_ROOT='$repo' KC_TEST_TIMEOUT=$vm_timeout KC_MODES='$modes'"
      # A bare kernel gives PID 1 RLIMIT_NOFILE 1024/4096 and RLIMIT_MEMLOCK 64 KiB
      # (8 MiB from 5.16). Give the guest what a systemd host has (NOFILE hard 524288,
      # MEMLOCK 8 MiB, as on this host), so a cell differs from the host only in its
      # kernel and its stated setup. With hard NOFILE 4096, `serve` warns that
      # --max-connections exceeds it before its banner, and the harness, which reads
      # the banner from the first stderr line, fails.
      echo "ulimit -H -n 524288 && ulimit -S -n 1024 || exit 70"
      if [[ "$setup" == memlock:* ]]; then
        echo "ulimit -l ${setup#memlock:} || exit 70"
      else
        echo "ulimit -l 8192 || exit 70"
      fi
      # Root's CAP_IPC_LOCK exempts it from 5.10's charge of ring memory to
      # RLIMIT_MEMLOCK; the memlock cell drops it so the limit really applies.
      wrap=
      [[ "$setup" == memlock:* ]] && wrap="'$nouring' --errno none --drop-ipc-lock -- "
      echo "${wrap}sh '$here/suite.sh' '$ringserve' $(printf "'%s' " "${cell_bins[@]}")"
    } >"$guest"
    append=
    [[ "$setup" == append:* ]] && append=${setup#append:}
    # Guest RAM. /tmp is tmpfs (the guest has no disk), and 5.10's tmpfs allocates
    # pages for the holes of a sparse file that is read by splice/sendfile (6.1+ do
    # not). The suite serves a sparse file of over 4 GiB whole, so 5.10 guests need
    # the RAM to hold it: with 2 GiB the transfer stops at 1.8 GiB with ENOSPC and
    # every later test fails to write its files. Other guests get 4 GiB: with 2 GiB,
    # 2000 concurrent spliced downloads (tests/uring.rs) met the guest's TCP memory
    # limits and connections were reset. qemu only touches what the guest uses.
    mem=4096
    [[ "$kernel" == 5.10 ]] && mem=8192
    nice "$here/run-vm.sh" --kernel "$kernel" --files "$files_list" --script "$guest" \
      --log "$cell_log" --append "$append" --timeout "$vm_timeout" --mem "$mem" || rc=$?
    echo "guest_mem_mib=$mem" >>"$meta"
  fi
  secs=$(($(date +%s) - start))
  printf 'rc=%s\nwall_secs=%s\n' "$rc" "$secs" >>"$meta"
  { grep -h '^test result:' "$cell_log" 2>/dev/null || true; } | awk '{p += $4; f += $6} END {printf "  tests: %d passed, %d failed\n", p, f}'
  echo "  exit $rc, ${secs}s; log: ${cell_log#"$repo"/}"
done
total=$(($(date +%s) - total_start))

log "report (${total}s in all)"
python3 "$here/report.py" --logs "$logs" --out "$out" --total-secs "$total" --strict "$strict" \
  --cells "$(printf '%s\n' "${selected[@]}" | cut -d'|' -f1 | xargs)"
