#!/usr/bin/env bash
# Installs what agora-node needs on a fresh Debian 12 machine and builds what is missing. Idempotent: a
# second run does nothing but checks. Usage: scripts/setup.sh [--test]   (--test: also the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUN_VERSION=1.4.5
BUN="$ROOT/.tools/node_modules/@oven/bun-linux-x64/bin/bun"
want_test=0; [ "${1:-}" = "--test" ] && want_test=1

log() { printf 'setup: %s\n' "$*" >&2; }

# 1. Bun, from the npm registry (the package ships the binary; no download script runs).
if [ ! -x "$BUN" ] || [ "$("$BUN" --version 2>/dev/null)" != "$BUN_VERSION" ]; then
  command -v npm >/dev/null || { log "npm is missing: apt-get install -y npm"; exit 1; }
  log "installing bun $BUN_VERSION from npm into .tools/"
  mkdir -p .tools
  npm install --prefix .tools --no-save --no-audit --no-fund --loglevel=error "@oven/bun-linux-x64@$BUN_VERSION" >&2
fi

# 2. apt packages: emscripten builds the wasm core; the test suite also needs chromium (dashboard in a real
#    browser), promtool (metrics lint), iproute2 (network namespaces), systemd (unit verification), python3
#    (the receiving side of the systemd notify socket), coturn (a real STUN server; the tests run it
#    STUN-only as a child process), and for the release test qemu-user + libc6-arm64-cross (runs the
#    linux-arm64 binary) and zip/unzip (Windows archive), and
#    stress-ng (to run the suite on a busy machine).
need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
[ -f wasm/build/agora_media.wasm ] && [ -f dist/agora-node ] || have_cmd emcc || need+=(emscripten)
if [ $want_test = 1 ]; then
  have_cmd emcc || need+=(emscripten)
  have_cmd chromium || need+=(chromium)
  have_cmd promtool || need+=(prometheus)
  have_cmd ip || need+=(iproute2)
  have_cmd tc || need+=(iproute2)
  have_cmd systemd-analyze || need+=(systemd)
  have_cmd nft || need+=(nftables)
  have_cmd unshare || need+=(util-linux)
  have_cmd gcc || need+=(gcc)
  [ -x /usr/bin/python3 ] || need+=(python3)   # the systemd notify-socket test listens with it
  have_cmd turnserver || need+=(coturn)
  have_cmd qemu-aarch64 || need+=(qemu-user)
  [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need+=(libc6-arm64-cross)
  have_cmd zip || need+=(zip)
  have_cmd unzip || need+=(unzip)
  have_cmd stress-ng || need+=(stress-ng) # load for the busy-machine check (README, Tests)
fi
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  log "installing apt packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  # prometheus is only wanted for promtool: keep its service from starting on the host.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# 3. npm dependencies, exactly as locked.
if [ ! -d node_modules ] || [ bun.lock -nt node_modules/.setup-stamp ] || [ package.json -nt node_modules/.setup-stamp ] \
  || [ -n "$(find patches -newer node_modules/.setup-stamp 2>/dev/null | head -1)" ]; then
  log "installing npm dependencies (bun install --frozen-lockfile)"
  "$BUN" install --frozen-lockfile >&2
  touch node_modules/.setup-stamp
fi

# 4. The wasm core and the single executable (each step skips itself when up to date).
"$BUN" scripts/build.ts

# 5. For the release test: the Bun runtimes of the other release targets (npm, sha512-checked, kept in
#    .tools/cross/), so the test itself downloads nothing.
if [ $want_test = 1 ]; then
  "$BUN" scripts/release.ts --fetch-only --targets linux-arm64,darwin-arm64,darwin-x64,windows-x64
fi
