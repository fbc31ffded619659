#!/usr/bin/env bash
# Builds the media core:
#   wasm/build/agora_media.wasm        libopus + wasm/src/*.c, emcc -O3, STANDALONE (no JS glue: core.ts
#                                      provides the few imports), embedded into the compiled executable
#   wasm/build/native/libagora_media.a the same C with gcc -O2, the benchmark baseline
#   wasm/build/native/mixer-native     bench/mixer-native.c linked against it
#
# Idempotent: the pinned libopus source is fetched and verified once into wasm/vendor/, every object is
# rebuilt only when its source (or this script) is newer, and links only happen when an object changed.
# Installs nothing except Debian's emscripten when emcc is missing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
SELF="$HERE/build.sh"

# libopus 1.3.1 as vendored by the npm package @discordjs/opus@0.10.0 (deps/opus). Pinned by the
# sha512 of the registry tarball (the same digest as the registry's "integrity" field).
OPUS_NPM_SPEC="@discordjs/opus@0.10.0"
OPUS_TARBALL_URL="https://registry.npmjs.org/@discordjs/opus/-/opus-0.10.0.tgz"
OPUS_TARBALL_SHA512="1c712748dad23e6144ca7751750049376604e9e8325d2f49527256c8fea37e270ad18faa28c1195f2613826ce98ebc573f57b133f84a68d3fb051054116914e7"
OPUS_VERSION="1.3.1"

VENDOR="$HERE/vendor"
OPUS="$VENDOR/opus-$OPUS_VERSION"
BUILD="$HERE/build"
OUT="$BUILD/agora_media.wasm"
NATIVE="$BUILD/native"
JOBS="$(nproc 2>/dev/null || echo 2)"

log() { echo "wasm/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

sha512_of() { sha512sum "$1" | cut -d' ' -f1; }

fetch_opus() {
  if [[ -f "$OPUS/.verified" && "$(cat "$OPUS/.verified")" == "$OPUS_TARBALL_SHA512" ]]; then return; fi
  mkdir -p "$VENDOR"
  local tgz="$VENDOR/discordjs-opus-0.10.0.tgz"
  if [[ ! -f "$tgz" || "$(sha512_of "$tgz")" != "$OPUS_TARBALL_SHA512" ]]; then
    rm -f "$tgz"
    local tmp
    tmp="$(mktemp -d)"
    log "fetching $OPUS_NPM_SPEC (libopus $OPUS_VERSION source)"
    if command -v npm >/dev/null 2>&1; then
      (cd "$tmp" && npm pack "$OPUS_NPM_SPEC" --silent >/dev/null 2>&1) || true
    fi
    if ! ls "$tmp"/*.tgz >/dev/null 2>&1; then
      command -v curl >/dev/null 2>&1 || die "neither npm nor curl can fetch $OPUS_TARBALL_URL"
      curl -fsSL "$OPUS_TARBALL_URL" -o "$tmp/opus.tgz" || die "download of $OPUS_TARBALL_URL failed"
    fi
    mv "$tmp"/*.tgz "$tgz"
    rm -rf "$tmp"
  fi
  local got
  got="$(sha512_of "$tgz")"
  if [[ "$got" != "$OPUS_TARBALL_SHA512" ]]; then
    rm -f "$tgz"
    die "sha512 mismatch for $OPUS_NPM_SPEC: expected $OPUS_TARBALL_SHA512, got $got (tarball removed)"
  fi
  local tmp
  tmp="$(mktemp -d)"
  tar -xzf "$tgz" -C "$tmp" package/deps/opus
  grep -q "PACKAGE_VERSION=\"$OPUS_VERSION\"" "$tmp/package/deps/opus/package_version" \
    || die "the tarball does not carry libopus $OPUS_VERSION"
  rm -rf "$OPUS"
  mv "$tmp/package/deps/opus" "$OPUS"
  rm -rf "$tmp"
  echo "$OPUS_TARBALL_SHA512" >"$OPUS/.verified"
  log "libopus $OPUS_VERSION verified and unpacked into ${OPUS#"$ROOT"/}"
}

ensure_emcc() {
  if command -v emcc >/dev/null 2>&1; then return; fi
  log "emcc not found: installing Debian's emscripten"
  [[ "$(id -u)" == 0 ]] || die "emcc is missing and installing it needs root (apt-get install emscripten)"
  apt-get update && apt-get install -y emscripten
  command -v emcc >/dev/null 2>&1 || die "emscripten installed but emcc is still not on PATH"
}

# The .c files of one variable in libopus's *_sources.mk (automake lists, one file per line).
mk_sources() {
  awk -v v="$2" '$1 == v && $2 == "=" { on = 1 } on { for (i = 1; i <= NF; i++) if ($i ~ /\.c$/) print $i; if ($NF != "\\") on = 0 }' "$OPUS/$1"
}

opus_sources() {
  mk_sources celt_sources.mk CELT_SOURCES
  mk_sources silk_sources.mk SILK_SOURCES
  mk_sources silk_sources.mk SILK_SOURCES_FLOAT
  # Multistream/projection (surround) are not used: only the single-stream API.
  mk_sources opus_sources.mk OPUS_SOURCES | grep -Ev 'multistream|projection|mapping_matrix'
  mk_sources opus_sources.mk OPUS_SOURCES_FLOAT
}

# Float build (the default libopus configuration), no CPU-specific intrinsics, so wasm and native
# compile exactly the same C. VAR_ARRAYS: C99 VLAs for scratch, as ./configure picks on modern compilers.
# PACKAGE_VERSION: what ./configure defines; opus_get_version_string() (`agora-node version`) reports it.
OPUS_DEFS=(-DOPUS_BUILD -DVAR_ARRAYS -DHAVE_LRINT -DHAVE_LRINTF -DNDEBUG "-DPACKAGE_VERSION=\"$OPUS_VERSION\"")
OPUS_INCS=(-I"$OPUS/include" -I"$OPUS/celt" -I"$OPUS/silk" -I"$OPUS/silk/float" -I"$OPUS/src")
CORE_SOURCES=(room.c jitter.c limiter.c codec.c)

# compile <compiler> <objdir> <flags...> : builds every stale object, prints the object list.
compile_all() {
  local cc="$1" objdir="$2"
  shift 2
  local flags=("$@")
  mkdir -p "$objdir"
  local jobs=() objs=() src obj
  while read -r src; do
    obj="$objdir/opus_$(echo "$src" | tr '/' '_' | sed 's/\.c$/.o/')"
    objs+=("$obj")
    if [[ ! -f "$obj" || "$OPUS/$src" -nt "$obj" || "$SELF" -nt "$obj" ]]; then jobs+=("$OPUS/$src|$obj"); fi
  done < <(opus_sources)
  for src in "${CORE_SOURCES[@]}"; do
    obj="$objdir/core_${src%.c}.o"
    objs+=("$obj")
    local stale=0
    [[ ! -f "$obj" || "$HERE/src/$src" -nt "$obj" || "$SELF" -nt "$obj" ]] && stale=1
    for h in "$HERE"/src/*.h; do [[ "$h" -nt "$obj" ]] && stale=1; done
    [[ $stale == 1 ]] && jobs+=("$HERE/src/$src|$obj")
  done
  if ((${#jobs[@]} > 0)); then
    log "compiling ${#jobs[@]} file(s) with $cc"
    printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} bash -c '
      set -e; job="{}"; src="${job%%|*}"; obj="${job##*|}"
      "$0" "$@" -c "$src" -o "$obj.tmp" && mv "$obj.tmp" "$obj"' "$cc" "${flags[@]}"
  fi
  printf '%s\n' "${objs[@]}"
}

newer_than() { # newer_than <target> <files...>: true when any file is newer than target (or no target)
  local t="$1"
  shift
  [[ -f "$t" ]] || return 0
  for f in "$@"; do [[ "$f" -nt "$t" ]] && return 0; done
  return 1
}

build_wasm() {
  ensure_emcc
  # -msimd128: lets clang auto-vectorise opus's float loops; -mnontrapping-fptoint: float→int casts
  # are single instructions instead of range-checked sequences; -mbulk-memory: memcpy/memset become
  # memory.copy/fill; -flto: cross-file inlining. Together ≈ 4 % faster encodes than -O3 alone.
  local flags=(-O3 -flto -msimd128 -mnontrapping-fptoint -mbulk-memory -fno-math-errno "${OPUS_DEFS[@]}" "${OPUS_INCS[@]}" -I"$HERE/src")
  mapfile -t objs < <(compile_all emcc "$BUILD/obj-wasm" "${flags[@]}")
  if newer_than "$OUT" "${objs[@]}" "$SELF"; then
    log "linking ${OUT#"$ROOT"/}"
    # STANDALONE_WASM + --no-entry: a reactor module with no JS glue. Imports are only what libc
    # needs (WASI proc_exit/fd_* stubs, memory-growth notification); core.ts supplies them.
    emcc "${objs[@]}" -O3 -flto -msimd128 -mnontrapping-fptoint -mbulk-memory -o "$OUT.tmp.wasm" --no-entry \
      -sSTANDALONE_WASM=1 -sALLOW_MEMORY_GROWTH=1 -sINITIAL_MEMORY=16MB -sMAXIMUM_MEMORY=2GB \
      -sTOTAL_STACK=1MB -sFILESYSTEM=0 -sERROR_ON_UNDEFINED_SYMBOLS=1
    mv "$OUT.tmp.wasm" "$OUT"
    log "wrote ${OUT#"$ROOT"/} ($(stat -c %s "$OUT") bytes)"
  fi
}

build_native() {
  command -v gcc >/dev/null 2>&1 || die "gcc is needed for the native benchmark baseline"
  # -Wno-stringop-overread: gcc 12 false positive on libopus's NSQ wrappers (known upstream).
  local flags=(-O2 -fno-math-errno -Wno-stringop-overread "${OPUS_DEFS[@]}" "${OPUS_INCS[@]}" -I"$HERE/src")
  mapfile -t objs < <(compile_all gcc "$NATIVE/obj" "${flags[@]}")
  local lib="$NATIVE/libagora_media.a"
  if newer_than "$lib" "${objs[@]}" "$SELF"; then
    rm -f "$lib"
    ar rcs "$lib" "${objs[@]}"
    log "wrote ${lib#"$ROOT"/}"
  fi
  local bench_src="$ROOT/bench/mixer-native.c" bench_bin="$NATIVE/mixer-native"
  if [[ -f "$bench_src" ]] && newer_than "$bench_bin" "$bench_src" "$lib" "$HERE/src/agora_media.h"; then
    gcc -O2 -I"$HERE/src" -I"$OPUS/include" "$bench_src" "$lib" -lm -o "$bench_bin"
    log "wrote ${bench_bin#"$ROOT"/}"
  fi
}

mkdir -p "$BUILD" "$NATIVE"
fetch_opus
case "${1:-all}" in
  wasm) build_wasm ;;
  native) build_native ;;
  all) build_wasm; build_native ;;
  *) die "usage: wasm/build.sh [all|wasm|native]" ;;
esac
