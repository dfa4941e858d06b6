#!/usr/bin/env bash
# Start-up cost of the CLI (issue 14): wall time of whole `kiln` processes for the verbs that need
# no tensor (answered by the torch-free front binary), beside the same commands run directly by
# kiln-engine (LibTorch loaded: what every verb cost before the split), and `kiln serve` ready
# time (process start to /v2/health/ready answering 200). Median of RUNS (default 11) runs.
# Usage: bench/cli_start.sh   (BUILD_DIR overrides the build directory)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
RUNS=${RUNS:-11}
cmake -S . -B "$BUILD_DIR" -G Ninja >/dev/null
ninja -C "$BUILD_DIR" kiln >/dev/null
source bench/lib.sh
print_machine
tmp=$(mktemp -d /tmp/kiln-cli-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
export KILN_HOME="$tmp/home"
front="$BUILD_DIR/kiln"
engine="$BUILD_DIR/kiln-engine"
csv=../shared/datasets/breast_cancer.csv

# Something for the verbs to read: a registered model with an alias, a finished study.
"$front" train --data "$csv" --target diagnosis --out "$tmp/run" >/dev/null
"$front" registry push "$tmp/run" --name bc >/dev/null
"$front" registry alias set bc production 1 >/dev/null
printf 'params:\n  x: {type: float, low: -5, high: 5}\n' >"$tmp/space.yaml"
"$front" tune --objective-cmd "awk 'BEGIN { print ({x} - 2)^2 }'" --space "$tmp/space.yaml" \
  --trials 10 --direction minimize --study quad >/dev/null

median_ms() {  # median wall time of RUNS runs of "$@", in ms (output discarded)
  local times=()
  for _ in $(seq "$RUNS"); do
    local t=$(date +%s%N)
    "$@" >/dev/null 2>&1
    times+=($(( ($(date +%s%N) - t) / 100000 )))  # tenths of a ms
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.1f", m/10}'
}

printf '\n%-48s %10s %12s %7s\n' "command (median of $RUNS, ms)" "kiln" "kiln-engine" "ratio"
row() {
  local f e
  f=$(median_ms "$front" "$@")
  e=$(median_ms "$engine" "$@")
  printf '%-48s %10s %12s %7s\n' "$*" "$f" "$e" "$(awk -v f="$f" -v e="$e" 'BEGIN {printf "%.0fx", e/f}')"
}
row --version
row --help
row registry list
row registry show bc@production
row registry diff bc@1 bc@production
row registry verify
row tune show quad
row data profile "$csv" --target diagnosis
printf '%-48s %10s\n' "train --help (handed to kiln-engine)" "$(median_ms "$front" train --help)"

# kiln serve: process start to the first 200 from /v2/health/ready.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ready=()
for _ in 1 2 3 4 5; do
  t=$(date +%s%N)
  "$front" serve --model bc@production --port "$port" >"$tmp/serve.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1; do sleep 0.005; done
  ready+=($(( ($(date +%s%N) - t) / 1000000 )))
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
done
echo
echo "kiln serve --model bc@production: ready after (ms, 5 runs): ${ready[*]}"
