# Shared helpers for cross/build, cross/ci, cross/size and cross/deploy (sourced, not run).
# Everything here is idempotent: a second call checks and returns in well under a second.

CROSS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$CROSS_DIR/.." && pwd)"
SMOLRTC_CACHE="${SMOLRTC_CACHE:-$HOME/.cache/smolrtc}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SMOLRTC_CACHE/target}"
DEB_CACHE="$SMOLRTC_CACHE/debs"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root for: $*"; fi
}

# board_get <board> <key>: the value of `key = value` in boards/<board>.toml (quotes removed).
board_get() {
  local file="$REPO_DIR/boards/$1.toml"
  [ -f "$file" ] || die "no board profile $file (have: $(board_list | tr '\n' ' '))"
  sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$file" | head -n1 \
    | sed 's/[[:space:]]*#.*$//; s/^"\(.*\)"$/\1/'
}

board_list() { for f in "$REPO_DIR"/boards/*.toml; do basename "$f" .toml; done; }

# apt_need <pkg>...: installs the packages not yet installed (one apt-get update at most).
APT_UPDATED=0
apt_update_once() {
  [ "$APT_UPDATED" -eq 1 ] && return 0
  log "apt-get update"
  as_root apt-get update -qq
  APT_UPDATED=1
}
apt_need() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_update_once
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# The cross toolchain for one Rust target triple: gcc cross compiler + libc, rustup target.
need_target() {
  local triple="$1"
  case "$triple" in
    aarch64-unknown-linux-musl|aarch64-unknown-linux-gnu)
      apt_need gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
    armv7-unknown-linux-gnueabihf)
      apt_need gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
    *) die "unsupported target $triple" ;;
  esac
  if ! rustup target list --installed | grep -qx "$triple"; then
    log "rustup target add $triple"
    rustup target add "$triple" >&2
  fi
}

need_qemu_user() { apt_need qemu-user-static; }
need_qemu_system() { apt_need qemu-system-arm cpio iproute2 util-linux; }

# Debian's arm64 kernel and static busybox, downloaded once (cached .debs) and unpacked into
# $SMOLRTC_CACHE/arm64-root. Prints that directory.
need_arm64_guest_files() {
  local root="$SMOLRTC_CACHE/arm64-root"
  mkdir -p "$DEB_CACHE"
  if ! ls "$DEB_CACHE"/linux-image-*-arm64_*_arm64.deb >/dev/null 2>&1 \
      || ! ls "$DEB_CACHE"/busybox-static_*_arm64.deb >/dev/null 2>&1; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
      log "dpkg --add-architecture arm64"
      as_root dpkg --add-architecture arm64
      APT_UPDATED=0
    fi
    apt_update_once
    # The versioned kernel package the metapackage points at (e.g. linux-image-6.1.0-41-arm64).
    local kpkg
    kpkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null \
      | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*-arm64\).*/\1/p' | head -n1)
    [ -n "$kpkg" ] || die "cannot resolve Debian's arm64 kernel package"
    log "apt-get download $kpkg:arm64 busybox-static:arm64 (into $DEB_CACHE)"
    (cd "$DEB_CACHE" && apt-get download -q "$kpkg:arm64" busybox-static:arm64 >/dev/null)
  fi
  local stamp="$root/.unpacked"
  local debs
  debs=$(ls "$DEB_CACHE"/linux-image-*-arm64_*_arm64.deb "$DEB_CACHE"/busybox-static_*_arm64.deb | sort)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$debs" ]; then
    rm -rf "$root"; mkdir -p "$root"
    local d; for d in $debs; do dpkg -x "$d" "$root"; done
    echo "$debs" >"$stamp"
  fi
  echo "$root"
}

# Checks cross/smolrtc.service with `systemd-analyze verify` (against a stand-in binary, as
# the real one lives on the board).
verify_unit() {
  local tmp; tmp=$(mktemp -d)
  sed "s|/usr/local/bin/smolrtc|$tmp/smolrtc|" "$CROSS_DIR/smolrtc.service" >"$tmp/smolrtc.service"
  printf '#!/bin/sh\n' >"$tmp/smolrtc"; chmod +x "$tmp/smolrtc"
  local out; out=$(systemd-analyze verify "$tmp/smolrtc.service" 2>&1 || echo "exit status $?")
  rm -rf "$tmp"
  if [ -n "$out" ]; then log "systemd-analyze verify smolrtc.service:"; echo "$out" >&2; return 1; fi
  log "smolrtc.service: systemd-analyze verify ok"
}

# check_size <label> <bytes> <budget>: fails when a binary grew past its size budget
# (boards/<board>.toml `size_budget`; raised only in a commit that says why).
check_size() {
  local label="$1" size="$2" budget="$3"
  if [ "$size" -gt "$budget" ]; then
    log "error: $label is $size bytes, over its size budget of $budget bytes by $((size - budget)) (size_budget in boards/*.toml: make it smaller, or raise the budget in a commit that says why; docs/FOOTPRINT.md)"
    return 1
  fi
  log "$label: $size bytes, size budget $budget bytes ($((budget - size)) to spare)"
}
