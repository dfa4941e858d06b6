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
  --trials 10 --direction minimize --study quad >/dev/null 2>&1

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

# kiln serve: process start to its "ready on" line (the listening socket is open and the model
# loaded), as bench/serve_bench.sh measures it, through the front (hand-off included) and started
# as kiln-engine directly; then the first 200 from /v2/health/ready (curl's own start included).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
serve_ready() {  # $1: binary; prints ms to "ready on" and ms to the first HTTP 200
  local t=$(date +%s%N) log="$tmp/serve.$RANDOM.log"
  "$1" serve --model bc@production --port "$port" >"$log" 2>&1 &
  local pid=$!
  until grep -q "ready on" "$log" 2>/dev/null; do sleep 0.002; done
  local line=$(( ($(date +%s%N) - t) / 1000000 ))
  until curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1; do sleep 0.002; done
  printf '%s/%s ' "$line" "$(( ($(date +%s%N) - t) / 1000000 ))"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}
echo
printf 'kiln serve --model bc@production, ms to "ready on" / to the first 200 (5 runs):\n'
printf '  kiln:        '; for _ in 1 2 3 4 5; do serve_ready "$front"; done; echo
printf '  kiln-engine: '; for _ in 1 2 3 4 5; do serve_ready "$engine"; done; echo
