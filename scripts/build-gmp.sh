#!/usr/bin/env bash
# Build GMP (the bignum library under cggmp21's Paillier arithmetic) tuned
# for this CPU into target/gmp, where .cargo/config.toml points the
# `gmp-mpfr-sys` crate (feature `use-system-libs`).
#
# Why: the crate's own bundled build is `--enable-fat` (portable), which on
# this machine (AMD EPYC, Zen 3) runs a 6144-bit modular exponentiation in
# 41 ms against 23 ms for a build tuned to the CPU, and CGGMP21 signing is
# almost all such exponentiations.
#
# The source is the GMP release vendored in the locked gmp-mpfr-sys crate,
# so no extra download. Portable binaries (to run on other CPUs):
#   GMP_CONFIGURE_FLAGS=--enable-fat scripts/build-gmp.sh
# Set SIGIL_GMP_SKIP_CHECK=1 to skip GMP's own test suite (`make check`).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="$PWD/target/gmp"
flags="${GMP_CONFIGURE_FLAGS:-}"
stamp="$prefix/.built-with"
if [ -f "$prefix/lib/libgmp.a" ] && [ "$(cat "$stamp" 2>/dev/null)" = "flags=$flags" ]; then
  exit 0
fi
command -v m4 >/dev/null || { echo "m4 is required to build GMP (apt-get install m4)" >&2; exit 1; }
manifest=$(cargo metadata --locked --format-version 1 2>/dev/null \
  | grep -o '"manifest_path":"[^"]*/gmp-mpfr-sys-[^"]*/Cargo.toml"' | head -1 | cut -d'"' -f4)
[ -n "$manifest" ] || { echo "gmp-mpfr-sys not found in cargo metadata" >&2; exit 1; }
src=$(ls -d "$(dirname "$manifest")"/gmp-*-c | head -1)
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
echo "building GMP from $src into $prefix (configure flags: ${flags:-none, tuned for this CPU})"
cp -r "$src/." "$build/"
(
  cd "$build"
  # shellcheck disable=SC2086 # flags are words
  ./configure --prefix="$prefix" --disable-shared --with-pic $flags >configure.log 2>&1 \
    || { tail -30 configure.log; exit 1; }
  grep -m1 "Host type" configure.log || true
  make -j"$(nproc)" >make.log 2>&1 || { tail -30 make.log; exit 1; }
  if [ -z "${SIGIL_GMP_SKIP_CHECK:-}" ]; then
    make -j"$(nproc)" check >check.log 2>&1 || { grep -B5 -A5 FAIL check.log | tail -40; exit 1; }
  fi
  rm -rf "$prefix"
  make install >install.log 2>&1
)
echo "flags=$flags" >"$stamp"
echo "GMP ready: $prefix"
