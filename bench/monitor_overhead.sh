#!/usr/bin/env bash
# Cost of live monitoring in `kiln serve` (issue 16 target: <= 5% of serving throughput at
# saturation). One Fashion-MNIST MLP bundle (with its reference profile), served on one core
# (`taskset -c 1`, --threads 1) with --monitor-window 1000 (on) and 0 (off), saturated by
# `kiln loadtest` closed loop (16 connections, the peers' 1x784 JSON body) on the other core.
# Off and on alternate ROUNDS times (default 3) so load drift hits both alike; the medians and
# their ratio are printed. Usage: bench/monitor_overhead.sh   (BUILD_DIR, ROUNDS, SECONDS_EACH)
# MODE=prediction-log compares instead: everything off; the prediction log alone
# (--prediction-log hash); and the defaults (live monitoring + the hashed prediction log), and
# prints the rows the log dropped (kiln_prediction_log_dropped_total) in each run. Each run also
# prints the server's CPU time per answered request (utime + stime over the load test / completed
# requests), which a busy machine disturbs less than the rate.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-10}
MODE=${MODE:-monitor}
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

run_one() {  # $@ = serve flags; prints achieved req/s, p50 and p99 (us), rows the log dropped
  # shellcheck disable=SC2068
  taskset -c 1 "$kiln" serve --model "$tmp/run/bundle" --port 0 --threads 1 $@ \
    >"$tmp/serve.out" 2>"$tmp/serve.log" &
  local pid=$!
  for _ in $(seq 1 100); do grep -q "ready on" "$tmp/serve.out" 2>/dev/null && break; sleep 0.1; done
  local url
  url=$(grep -o 'http://[0-9.:]*' "$tmp/serve.out")
  local ticks0
  ticks0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  taskset -c 0 "$kiln" loadtest "$url/v2/models/bundle/infer" --body "$body" --connections 16 \
    --duration "$SECONDS_EACH" --json >"$tmp/lt.json"
  local dropped ticks1
  ticks1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  dropped=$(curl -s "$url/metrics" | awk '/^kiln_prediction_log_dropped_total/ {print $2}')
  kill -TERM "$pid"
  wait "$pid" || true
  /usr/bin/python3 - "$tmp/lt.json" "$((ticks1 - ticks0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / max(1, r["requests"]["completed"])
print(round(r["achieved_rate_per_s"]), r["latency"]["p50_us"], r["latency"]["p99_us"],
      f"{cpu_us:.1f}", end=" ")
PY
  echo "${dropped:-0}"
}

# Configurations "name|serve flags"; the first is the baseline.
if [ "$MODE" = prediction-log ]; then
  configs=("off|--monitor-window 0 --prediction-log off"
    "log-hash|--monitor-window 0 --prediction-log hash"
    "defaults|--monitor-window 1000 --prediction-log hash")
else
  configs=("off|--monitor-window 0 --prediction-log off"
    "monitor|--monitor-window 1000 --prediction-log off")
fi
declare -A rates cpus
for round in $(seq 1 "$ROUNDS"); do
  for c in "${configs[@]}"; do
    name=${c%%|*}
    read -r rate p50 p99 cpu dropped < <(run_one ${c#*|})
    rates[$name]="${rates[$name]:-} $rate"
    cpus[$name]="${cpus[$name]:-} $cpu"
    printf 'round %s %-9s %6s req/s (p50 %s us, p99 %s us, server CPU %s us/request, log rows dropped %s)\n' \
      "$round" "$name:" "$rate" "$p50" "$p99" "$cpu" "$dropped"
  done
done
args=()
for c in "${configs[@]}"; do args+=("${c%%|*}=${rates[${c%%|*}]}=${cpus[${c%%|*}]}"); done
/usr/bin/python3 - "${args[@]}" <<'PY'
import statistics, sys
runs = [(a.split("=")[0], [float(x) for x in a.split("=")[1].split()],
         [float(x) for x in a.split("=")[2].split()]) for a in sys.argv[1:]]
base_name, base, base_cpu = runs[0]
mb, mc = statistics.median(base), statistics.median(base_cpu)
print(f"median {base_name} {mb:.0f} req/s, {mc:.1f} us server CPU/request")
for name, rates, cpu in runs[1:]:
    m = statistics.median(rates)
    ratios = [b / a for a, b in zip(base, rates)]
    print(f"median {name} {m:.0f} req/s: costs {100 * (1 - m / mb):.1f}% of throughput (ratio of "
          f"medians), {100 * (1 - statistics.median(ratios)):.1f}% (median per-round ratio; "
          f"ratios {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"{statistics.median(cpu):.1f} us server CPU/request ({statistics.median(cpu) / mc:.3f}x)")
PY
