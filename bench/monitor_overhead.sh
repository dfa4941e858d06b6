#!/usr/bin/env bash
# Cost of live monitoring in `kiln serve` (issue 16 target: <= 5% of serving throughput at
# saturation). One Fashion-MNIST MLP bundle (with its reference profile), served on one core
# (`taskset -c 1`, --threads 1) with --monitor-window 1000 (on) and 0 (off), saturated by
# `kiln loadtest` closed loop (16 connections, the peers' 1x784 JSON body) on the other core.
# Off and on alternate ROUNDS times (default 3) so load drift hits both alike; the medians and
# their ratio are printed. Usage: bench/monitor_overhead.sh   (BUILD_DIR, ROUNDS, SECONDS_EACH)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-10}
cmake -S . -B "$BUILD_DIR" -G Ninja >/dev/null
ninja -C "$BUILD_DIR" kiln >/dev/null
source bench/lib.sh
print_machine
tmp=$(mktemp -d /tmp/kiln-monitor-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
export KILN_HOME="$tmp/home"
kiln="$BUILD_DIR/kiln"
# A small model trains in seconds; what is measured is serving, not accuracy.
"$kiln" train examples/fashion-mnist/mlp.yaml --set data.limit=3000 --set epochs=1 \
  --out "$tmp/run" >/dev/null 2>&1
body=../shared/peers/infer_1x784.json

run_one() {  # $1 = monitor window; prints achieved req/s
  taskset -c 1 "$kiln" serve --model "$tmp/run/bundle" --port 0 --threads 1 \
    --monitor-window "$1" >"$tmp/serve.out" 2>"$tmp/serve.log" &
  local pid=$!
  for _ in $(seq 1 100); do grep -q "ready on" "$tmp/serve.out" 2>/dev/null && break; sleep 0.1; done
  local url
  url=$(grep -o 'http://[0-9.:]*' "$tmp/serve.out")
  taskset -c 0 "$kiln" loadtest "$url/v2/models/bundle/infer" --body "$body" --connections 16 \
    --duration "$SECONDS_EACH" --json >"$tmp/lt.json"
  kill -TERM "$pid"
  wait "$pid" || true
  /usr/bin/python3 - "$tmp/lt.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(round(r["achieved_rate_per_s"]), r["latency"]["p50_us"], r["latency"]["p99_us"])
PY
}

off=() on=()
for round in $(seq 1 "$ROUNDS"); do
  read -r rate p50 p99 < <(run_one 0)
  off+=("$rate")
  echo "round $round monitoring off: $rate req/s (p50 $p50 us, p99 $p99 us)"
  read -r rate p50 p99 < <(run_one 1000)
  on+=("$rate")
  echo "round $round monitoring on:  $rate req/s (p50 $p50 us, p99 $p99 us)"
done
/usr/bin/python3 - "${off[*]}" "${on[*]}" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
on = [float(x) for x in sys.argv[2].split()]
mo, mn = statistics.median(off), statistics.median(on)
print(f"median off {mo:.0f} req/s, on {mn:.0f} req/s: monitoring costs {100 * (1 - mn / mo):.1f}% "
      f"of throughput (per-round ratios {', '.join(f'{b / a:.3f}' for a, b in zip(off, on))})")
PY
