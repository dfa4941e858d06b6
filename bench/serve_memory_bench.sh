#!/usr/bin/env bash
# Memory of `kiln serve` under batched bodies: the MLP of bench/serve_bench.sh served with its
# defaults (live monitoring, hashed prediction log) and with both off, each loaded by PHASES
# rounds of wrk -t1 -c4 -dSECONDSs with 64-row JSON bodies; prints each round's req/s and the
# server's RSS after it. RSS that climbs round after round, or sits far above the "off" arm, is
# memory the server holds for nothing (2026-12-07: per-row allocations of the prediction memory
# pinned freed tensor memory, 1.5 GB).
# Then one burst of wrk -t1 -c64 with 1-row bodies and RSS after IDLE_SECONDS without requests:
# the server returns its freed heap to the kernel once idle (--idle-trim-ms; the third arm has
# it off).
# Usage: bench/serve_memory_bench.sh   (BUILD_DIR=build PHASES=6 SECONDS_EACH=4 IDLE_SECONDS=4)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
BUILD_DIR=${BUILD_DIR:-build}
PEERS=$(cd "${PEERS:-../shared/peers}" && pwd)
PHASES=${PHASES:-6}
SECONDS_EACH=${SECONDS_EACH:-4}
IDLE_SECONDS=${IDLE_SECONDS:-4}
kiln="$root/$BUILD_DIR/kiln"
export KILN_HOME=$(mktemp -d /tmp/kiln-serve-memory-XXXXXX)
source bench/lib.sh
trap stop_background_and_clean EXIT
print_machine

"$kiln" train examples/fashion-mnist/mlp.yaml --set epochs=1 --out "$KILN_HOME/run" >/dev/null 2>&1
ln -s "$KILN_HOME/run/bundle" "$KILN_HOME/mlp"
/usr/bin/python3 - "$PEERS/infer_1x784.json" "$KILN_HOME/infer_64x784.json" <<'PY'
import json, sys
row = json.load(open(sys.argv[1]))["inputs"][0]["data"]
json.dump({"inputs": [{"name": "input", "shape": [64, 784], "datatype": "FP32", "data": row * 64}]},
          open(sys.argv[2], "w"))
PY

arm() {  # label, then kiln serve's extra flags
  local label=$1 port pid line rps
  shift
  port=$(free_port)
  "$kiln" serve --model "$KILN_HOME/mlp" --port "$port" --threads 1 "$@" \
    >"$KILN_HOME/serve-$label.out" 2>"$KILN_HOME/serve-$label.err" &
  pid=$!
  pids+=($pid)
  wait_serve_ready "$KILN_HOME/serve-$label.out" "$KILN_HOME/serve-$label.err" $pid
  # `kiln` runs the engine in its place (exec), so $pid is the server's own process.
  line="$label: RSS at start $(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$pid/status) MiB;"
  for _ in $(seq 1 "$PHASES"); do
    rps=$(BODY_FILE="$KILN_HOME/infer_64x784.json" wrk -t1 -c4 -d"${SECONDS_EACH}s" \
      -s "$root/bench/post_body.lua" "http://127.0.0.1:$port/v2/models/mlp/infer" |
      awk '/Requests\/sec/ {printf "%.0f", $2}')
    line="$line | $rps req/s, $(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$pid/status) MiB"
  done
  # A burst of 64 connections with 1-row bodies, then idle (the server gives its freed heap back
  # after --idle-trim-ms, 2 s by default).
  rps=$(BODY_FILE="$PEERS/infer_1x784.json" wrk -t1 -c64 -d"${SECONDS_EACH}s" \
    -s "$root/bench/post_body.lua" "http://127.0.0.1:$port/v2/models/mlp/infer" |
    awk '/Requests\/sec/ {printf "%.0f", $2}')
  line="$line | -c64 1-row: $rps req/s, $(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$pid/status) MiB"
  sleep "$IDLE_SECONDS"
  line="$line | idle ${IDLE_SECONDS} s: $(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$pid/status) MiB"
  echo "$line"
  kill $pid
  wait $pid || true
}

echo; echo "== $PHASES rounds of ${SECONDS_EACH} s, 64-row JSON bodies, wrk -t1 -c4: req/s and RSS after each"
arm defaults
arm off --monitor-window 0 --prediction-log off
arm no-idle-trim --idle-trim-ms 0
