#!/usr/bin/env bash
# Downloads and caches what the kernel-compat matrix boots: four Debian cloud kernels
# (pinned by suite, not by version: each suite serves only its current build) and qemu
# 10 from bookworm-backports.
#
# The system's apt sources are never touched: a throw-away apt state under the cache
# dir (its own sources.list, lists and archives; an empty dpkg status) is used for
# `apt-get download`, and packages are unpacked with `dpkg-deb -x`.
# The only system change is `apt-get install` of busybox-static (the initramfs) and
# bookworm's qemu-system-x86 (the shared libraries qemu 10 links against, and the
# fallback qemu), from the system's own sources, and only when missing.
#
# Usage: kernel-compat/fetch.sh [--no-qemu] [KERNEL...]     (KERNEL: 5.10 6.1 6.12 7.3)
# Output: .cache/kernels/<K>/{vmlinuz,config,version}, .cache/qemu/env (QEMU=..., ...)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${KC_CACHE:-$here/.cache}"
apt_dir="$cache/apt"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror="${KC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# Kernel id → the suite whose linux-image-cloud-amd64 pins it.
declare -A SUITE=([5.10]=bullseye [6.1]=bookworm [6.12]=trixie [7.3]=trixie-backports)
ALL_KERNELS=(5.10 6.1 6.12 7.3)

log() { printf 'fetch: %s\n' "$*" >&2; }

want_qemu=1
kernels=()
for a in "$@"; do
  case "$a" in
    --no-qemu) want_qemu=0 ;;
    5.10 | 6.1 | 6.12 | 7.3) kernels+=("$a") ;;
    *) echo "usage: $0 [--no-qemu] [5.10|6.1|6.12|7.3 ...]" >&2; exit 2 ;;
  esac
done
((${#kernels[@]})) || kernels=("${ALL_KERNELS[@]}")

# apt-get/apt-cache with the private state. Dir::State::Status=/dev/null so apt does
# not reason about what the host has installed; we only download.
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o Dir::State::Status=/dev/null
  -o Debug::NoLocking=1
  -o APT::Sandbox::User=root
)
papt() { apt-get -q "${apt_opts[@]}" "$@"; }
pcache() { apt-cache "${apt_opts[@]}" "$@"; }

# Refreshes the private package lists at most once an hour: the suites move (point
# releases, new backports), and the matrix should run what each suite serves now.
update_lists() {
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  local s
  : >"$apt_dir/sources.list.new"
  for s in bullseye bookworm bookworm-backports trixie trixie-backports; do
    echo "deb [signed-by=$keyring] $mirror $s main" >>"$apt_dir/sources.list.new"
  done
  mv "$apt_dir/sources.list.new" "$apt_dir/sources.list"
  if [[ -z "$(find "$apt_dir/lists" -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null)" ]]; then
    log "updating the private apt lists (system sources untouched)"
    papt update >/dev/null
  fi
}

# Field $2 of package $1 as served by suite $3 (apt-cache show PKG/SUITE).
field() { pcache show "$1/$3" 2>/dev/null | awk -v f="$2:" '$1 == f { sub(/^[^:]*: /, ""); print; exit }'; }

# Downloads package $1 at version $2 into $3 (skipped when already there) and unpacks it.
get_deb() {
  local pkg=$1 ver=$2 dest=$3 deb
  mkdir -p "$cache/debs" "$dest"
  deb=$(find "$cache/debs" -maxdepth 1 -name "${pkg}_*.deb" | while read -r f; do
    [[ "$(dpkg-deb -f "$f" Version)" == "$ver" ]] && echo "$f"; done | head -1)
  if [[ -z "$deb" ]]; then
    log "downloading $pkg=$ver"
    (cd "$cache/debs" && papt download "$pkg=$ver" >/dev/null)
    deb=$(find "$cache/debs" -maxdepth 1 -name "${pkg}_*.deb" | while read -r f; do
      [[ "$(dpkg-deb -f "$f" Version)" == "$ver" ]] && echo "$f"; done | head -1)
  fi
  dpkg-deb -x "$deb" "$dest"
}

fetch_kernel() {
  local k=$1 suite=${SUITE[$1]} meta_ver img ver dir tmp extra
  meta_ver=$(field linux-image-cloud-amd64 Version "$suite")
  [[ -n "$meta_ver" ]] || { log "$suite serves no linux-image-cloud-amd64"; return 1; }
  # The metapackage depends on exactly one versioned image package.
  img=$(field linux-image-cloud-amd64 Depends "$suite" | tr ',' '\n' |
    sed -n 's/^ *\(linux-image-[0-9][^ ]*\) .*/\1/p' | head -1)
  ver=$(field "$img" Version "$suite")
  dir="$cache/kernels/$k"
  if [[ -f "$dir/version" ]] && grep -qx "package=$img" "$dir/version" &&
    grep -qx "version=$ver" "$dir/version" && [[ -s "$dir/vmlinuz" ]]; then
    log "$k: cached $img $ver"
    return 0
  fi
  tmp=$(mktemp -d)
  get_deb "$img" "$ver" "$tmp"
  # From 7.x (trixie-backports) the image package is split: the vmlinuz is in
  # linux-binary-*, the config in linux-base-*. Fetch whichever the image depends on.
  for extra in $(field "$img" Depends "$suite" | tr ',|' '\n\n' |
    sed -n 's/^ *\(linux-\(binary\|base\)-[0-9][^ ]*\).*/\1/p' | sort -u); do
    get_deb "$extra" "$ver" "$tmp"
  done
  # Older packages ship /boot/vmlinuz-REL and /boot/config-REL; the split 7.x packages
  # ship /usr/lib/modules/REL/{vmlinuz,config}.
  local vmlinuz config release
  vmlinuz=$(find "$tmp" \( -path '*/boot/vmlinuz-*' -o -path '*/usr/lib/modules/*/vmlinuz' \) | head -1)
  [[ -n "$vmlinuz" ]] || { log "$k: no vmlinuz in $img (or its linux-binary-*)"; return 1; }
  config=$(find "$tmp" \( -path '*/boot/config-*' -o -path '*/usr/lib/modules/*/config' \) | head -1)
  case "$vmlinuz" in
    */boot/vmlinuz-*) release=${vmlinuz##*/vmlinuz-} ;;
    *) release=$(basename "$(dirname "$vmlinuz")") ;;
  esac
  mkdir -p "$dir"
  cp "$vmlinuz" "$dir/vmlinuz"
  if [[ -n "$config" ]]; then cp "$config" "$dir/config"; else : >"$dir/config"; fi
  printf 'suite=%s\npackage=%s\nversion=%s\nrelease=%s\n' "$suite" "$img" "$ver" \
    "$release" >"$dir/version"
  rm -rf "$tmp"
  log "$k: $img $ver"
}

# Installs system packages from the system's own sources, only if missing.
sys_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]} (system sources)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null; } || return 1
}

# qemu: 10.x from bookworm-backports, unpacked privately. bookworm's own 7.2 crashes
# 6.12 guests under TCG now and then (KERNEL-COMPAT-NOTES.md), so it is only the
# fallback, used with `-cpu max,-cx16` and retries. Writes .cache/qemu/env.
fetch_qemu() {
  local qdir="$cache/qemu" ver tmp
  mkdir -p "$qdir"
  # The system qemu-system-x86 brings the shared libraries qemu 10 needs (and is the
  # fallback). Installing it from the system's sources changes no sources.
  sys_install qemu-system-x86 || log "WARN: could not install qemu-system-x86"
  ver=$(field qemu-system-x86 Version bookworm-backports || true)
  if [[ -n "$ver" ]]; then
    if [[ ! -x "$qdir/10/usr/bin/qemu-system-x86_64" ]] || ! grep -qx "$ver" "$qdir/10/version" 2>/dev/null; then
      rm -rf "$qdir/10"
      tmp="$qdir/10"
      get_deb qemu-system-x86 "$ver" "$tmp"
      # Firmware and option ROMs (qboot.rom, linuxboot_dma.bin) of the same version.
      get_deb qemu-system-data "$(field qemu-system-data Version bookworm-backports)" "$tmp"
      echo "$ver" >"$qdir/10/version"
    fi
    local bin="$qdir/10/usr/bin/qemu-system-x86_64"
    if ldd "$bin" | grep -q 'not found'; then
      log "WARN: qemu $ver lacks libraries: $(ldd "$bin" | awk '/not found/ {print $1}' | xargs)"
    elif "$bin" -L "$qdir/10/usr/share/qemu" -version >/dev/null 2>&1; then
      printf 'QEMU=%q\nQEMU_DATA=%q\nQEMU_VERSION=%q\nQEMU_CPU=max\nQEMU_BIOS=qboot.rom\n' \
        "$bin" "$qdir/10/usr/share/qemu" "$ver" >"$qdir/env"
      log "qemu: $ver (bookworm-backports)"
      return 0
    fi
  fi
  # Fallback: the installed qemu. -cx16 avoids the double faults seen with 7.2.
  if command -v qemu-system-x86_64 >/dev/null; then
    ver=$(dpkg-query -W -f '${Version}' qemu-system-x86 2>/dev/null || qemu-system-x86_64 -version | head -1)
    printf 'QEMU=%q\nQEMU_DATA=\nQEMU_VERSION=%q\nQEMU_CPU=max,-cx16\nQEMU_BIOS=\n' \
      "$(command -v qemu-system-x86_64)" "$ver (installed; fallback)" >"$qdir/env"
    log "qemu: FALLBACK to the installed $ver (bookworm-backports' qemu 10 unavailable)"
    return 0
  fi
  rm -f "$qdir/env"
  log "no qemu can be had"
  return 1
}

mkdir -p "$cache"
command -v apt-get >/dev/null || { log "apt-get missing: cannot fetch"; exit 1; }
update_lists
rc=0
# Each fetch runs in a background subshell and is collected with `wait`: bash ignores
# `set -e` inside anything called as `f || handler`, and a failed step must stop the
# fetch of that one kernel (and only that one), not be carried on past.
for k in "${kernels[@]}"; do
  (fetch_kernel "$k") &
  wait $! || { log "$k: FAILED"; rc=1; }
done
if ((want_qemu)); then
  (fetch_qemu) &
  wait $! || rc=1
fi
# busybox-static builds the initramfs (its cpio and its shell are the guest's userland).
sys_install busybox-static || { log "busybox-static cannot be installed"; rc=1; }
exit $rc
