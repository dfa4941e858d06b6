#!/usr/bin/env bash
# Registry benchmark: push of a ~5 MB bundle and NAME@ALIAS resolve latency (in-process, through
# the ModelStore API), then the same through the `kiln` binary (process start included), beside
# the do-it-yourself peer (cp -r + sha256sum into a versioned directory). Prints the machine
# first. BUILD_DIR overrides the build directory; extra arguments go to registry_bench.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja >/dev/null
ninja -C "$BUILD_DIR" registry_bench kiln
source bench/lib.sh
print_machine
tmp=$(mktemp -d /tmp/kiln-registry-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "command: $BUILD_DIR/bench/registry_bench --root $tmp/api $*"
"$BUILD_DIR/bench/registry_bench" --root "$tmp/api" "$@"

# The CLI: one process per command (LibTorch load included). The bundle: pulled from the API run.
export KILN_HOME="$tmp/api"
"$BUILD_DIR/kiln" registry pull bench@1 --out "$tmp/bundle" >/dev/null
export KILN_HOME="$tmp/cli"
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
echo
echo "kiln registry push (whole process, 5 runs, ms):"
for i in 1 2 3 4 5; do
  t=$(date +%s%N); "$BUILD_DIR/kiln" registry push "$tmp/bundle" --name cli >/dev/null; printf ' %s' "$(ms "$t")"
done
echo
"$BUILD_DIR/kiln" registry alias set cli production 1 >/dev/null
echo "kiln registry show cli@production (whole process, 5 runs, ms):"
for i in 1 2 3 4 5; do
  t=$(date +%s%N); "$BUILD_DIR/kiln" registry show cli@production >/dev/null; printf ' %s' "$(ms "$t")"
done
echo
echo "kiln --version (process start alone, 5 runs, ms):"
for i in 1 2 3 4 5; do
  t=$(date +%s%N); "$BUILD_DIR/kiln" --version >/dev/null; printf ' %s' "$(ms "$t")"
done
echo
# Peer: what a user without a registry does: copy into a versioned directory, hash, fsync.
echo "peer: cp -r + sha256sum + sync into versions/N (5 runs, ms):"
for i in 1 2 3 4 5; do
  t=$(date +%s%N)
  mkdir -p "$tmp/peer/v$i" && cp -r "$tmp/bundle/." "$tmp/peer/v$i/" && \
    (cd "$tmp/peer/v$i" && sha256sum -- * > SHA256SUMS) && sync -f "$tmp/peer/v$i/SHA256SUMS"
  printf ' %s' "$(ms "$t")"
done
echo
