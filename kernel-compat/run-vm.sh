#!/usr/bin/env bash
# Boots one cached kernel under qemu (TCG) with a minimal initramfs, runs a guest shell
# script in it, and returns that script's exit code.
#
# Usage: run-vm.sh --kernel K --files LIST --script GUEST.sh --log OUT.log
#                  [--append "EXTRA KERNEL ARGS"] [--timeout SECONDS] [--retries N]
#                  [--mem MIB]
#   K        5.10 | 6.1 | 6.12 | 7.3, fetched by fetch.sh
#   LIST     a file of absolute host paths to put in the guest at the same paths (the
#            test binaries look for ringserve at the absolute path cargo baked in), plus
#            every shared library `ldd` names for them
#   GUEST.sh run by the guest's busybox sh as PID 1's child, with cwd /, PATH set,
#            proc/sys/devtmpfs/tmpfs mounted and lo up
#
# Exit codes: the guest script's own code when it ran to the end; 124 when the boot
# hit --timeout after the script started; 125 for an infrastructure failure (the guest
# never reached the script after --retries boots: qemu or kernel died early); 126 when
# the guest died while the script ran (a kernel oops/panic). The log holds the serial
# console.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${KC_CACHE:-$here/.cache}"

kernel= files= script= log= append= timeout_s=900 retries=2 mem=2048
while (($#)); do
  case "$1" in
    --kernel) kernel=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --script) script=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --retries) retries=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    *) echo "run-vm.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$kernel" && -n "$files" && -n "$script" && -n "$log" ]] || {
  sed -n '5,12p' "$0" >&2
  exit 2
}
kdir="$cache/kernels/$kernel"
[[ -s "$kdir/vmlinuz" ]] || { echo "run-vm.sh: kernel $kernel not fetched (run fetch.sh)" >&2; exit 125; }
[[ -s "$cache/qemu/env" ]] || { echo "run-vm.sh: no qemu (run fetch.sh)" >&2; exit 125; }
# shellcheck source=/dev/null
source "$cache/qemu/env"
busybox=$(command -v busybox || true)
[[ -n "$busybox" ]] && ! ldd "$busybox" >/dev/null 2>&1 ||
  { echo "run-vm.sh: a static busybox is needed (apt-get install busybox-static)" >&2; exit 125; }

# --- The base initramfs: busybox, /init, the listed binaries and their libraries. Built
# once per set of files (keyed by their paths and mtimes), since the test binaries are
# ~100 MB and the cpio takes seconds; each run appends a tiny second archive with its
# script (the kernel unpacks concatenated cpio archives in order).
mkdir -p "$cache/initramfs"
key=$( { cat "$files"; xargs -r stat -c '%n %Y %s' <"$files"; stat -c '%Y' "$0" "$busybox"; } | sha256sum | cut -c1-16)
base="$cache/initramfs/base-$key.cpio"
if [[ ! -s "$base" ]]; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,kc,etc}
  cp "$busybox" "$root/bin/busybox"
  # The kernel opens /dev/console for PID 1 before devtmpfs is mounted; without the
  # node the guest prints nothing. mknod needs root (CI and this machine run as root).
  mknod -m 600 "$root/dev/console" c 5 1
  mknod -m 666 "$root/dev/null" c 1 3
  # nobody/nogroup: what the --user tests drop to (tests/production.rs).
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
  # Binaries at their host paths, libraries at the paths ldd names (dereferenced).
  # Debug info is stripped from the copies: it is most of their size, and the guest
  # keeps the whole initramfs in RAM.
  while read -r f; do
    [[ -n "$f" ]] || continue
    cp -L --parents "$f" "$root/"
    if command -v strip >/dev/null && file -b "$f" 2>/dev/null | grep -q ELF; then
      strip --strip-debug "$root$f" 2>/dev/null || true
    fi
    # A script has no libraries: ldd fails and grep finds nothing, which is fine.
    { ldd "$f" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
      [[ -e "$root$lib" ]] || cp -L --parents "$lib" "$root/"
    done
  done <"$files"
  cat >"$root/init" <<'INIT'
#!/bin/busybox sh
# PID 1 of the kernel-compat guest: set up the bare minimum the test suite needs, run
# /kc/run.sh, print its exit code between markers the host looks for, power off.
/bin/busybox --install -s
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /root
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# tmpfs /tmp: the suite creates sparse multi-GiB files, which cost no memory here.
# The checkout may itself live under /tmp (a CI clone), and its binaries sit at their
# host paths in this image: carry what the image put in /tmp over into the new mount,
# or the mount would hide them.
mkdir -p /newtmp
mount -t tmpfs -o mode=1777,size=90% tmpfs /newtmp
cp -a /tmp/. /newtmp/ 2>/dev/null
mount -o move /newtmp /tmp
ip link set lo up
echo "KC-START $(uname -r)"
sh /kc/run.sh
echo "KC-EXIT rc=$?"
sync
poweroff -f
# Only reached if poweroff failed: PID 1 exiting panics, and panic=-1 plus qemu's
# -no-reboot turns that into qemu exiting.
exit 1
INIT
  chmod +x "$root/init"
  (cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null) >"$base.tmp"
  mv "$base.tmp" "$base"
  rm -rf "$root"
  trap - EXIT
  # Older bases are stale (other binaries); keep only this one.
  find "$cache/initramfs" -name 'base-*.cpio' ! -name "base-$key.cpio" -delete
fi

# --- The per-run archive: just the script.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/kc"
cp "$script" "$work/root/kc/run.sh"
(cd "$work/root" && find . | "$busybox" cpio -o -H newc 2>/dev/null) >"$work/run.cpio"
cat "$base" "$work/run.cpio" >"$work/initrd"

qemu_args=(-accel tcg -cpu "$QEMU_CPU" -smp 2 -m "$mem" -nodefaults -display none
  -serial stdio -monitor none -no-reboot -kernel "$kdir/vmlinuz" -initrd "$work/initrd"
  -append "console=ttyS0 quiet panic=-1 oops=panic $append")
[[ -n "${QEMU_DATA:-}" ]] && qemu_args+=(-L "$QEMU_DATA")
[[ -n "${QEMU_BIOS:-}" ]] && qemu_args+=(-bios "$QEMU_BIOS")

: >"$log"
attempt=0
while :; do
  attempt=$((attempt + 1))
  echo "### boot $attempt: $QEMU_VERSION, kernel $kernel, append: $append" >>"$log"
  qrc=0
  # The serial console uses CRLF; strip the CR so markers and libtest lines parse.
  timeout --kill-after=10 "$timeout_s" "$QEMU" "${qemu_args[@]}" </dev/null 2>&1 |
    tr -d '\r' >>"$log" || qrc=$?
  if grep -q '^KC-START' "$log"; then
    break
  fi
  if ((attempt > retries)); then
    echo "### INFRA: the guest never reached its script in $attempt boots (qemu rc $qrc)" >>"$log"
    exit 125
  fi
  echo "### the guest died before its script started (qemu rc $qrc); retrying" >>"$log"
  : # Keep the failed boot's output in the log: it says why.
done
rc=$(sed -n 's/^KC-EXIT rc=\([0-9]*\)$/\1/p' "$log" | tail -1)
if [[ -n "$rc" ]]; then
  exit "$rc"
fi
if ((qrc == 124 || qrc == 137)); then
  echo "### TIMEOUT: the guest script did not finish in ${timeout_s}s" >>"$log"
  exit 124
fi
echo "### the guest died while the script ran (qemu rc $qrc)" >>"$log"
exit 126
