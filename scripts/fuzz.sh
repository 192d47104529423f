#!/usr/bin/env bash
# Builds the fuzz targets (cargo-fuzz, nightly, AddressSanitizer) and runs
# each for SECONDS seconds (default 7: about a minute for all) from a copy
# of its committed seed corpus (fuzz/corpus/<target>). A crash fails.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-7}
shift || true
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: SKIPPED, no nightly toolchain on this machine" >&2
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  cp corpus/"$t"/* "$work/$t/" 2>/dev/null || true
  echo "fuzz: $t for ${secs} s"
  cargo +nightly fuzz run -O "$t" "$work/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -3
done
