#!/usr/bin/env bash
# Load generator benchmark (issue 15): `kiln loadtest` against `kiln serve` (breast-cancer MLP
# bundle), the generator pinned to CPU 0 and the server to CPU 1:
#   1. the highest intended rate the generator keeps on schedule (GET /v2/health/ready), with its
#      CPU time (utime+stime from /proc) per second of run: at most one core
#   2. coordinated omission: the server SIGSTOPped for 1 s during a 10 s run (infer): kiln
#      loadtest open loop at RATE req/s vs wrk -t1 -c16 -d10s --latency (closed loop; wrk 4
#      then adds synthetic samples for the gaps, stats_correct()) vs kiln loadtest closed loop
#      with 16 connections (no correction: what a closed loop alone measures)
#   3. no stall, the same rate: kiln loadtest percentiles vs wrk paced to about the same rate
#      (16 connections, a per-connection delay)
# Usage: bench/loadtest_bench.sh   (BUILD_DIR overrides build/; RATE=1000; RATES="..." for 1)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
RATE=${RATE:-1000}
RATES=${RATES:-"10000 25000 50000 75000 100000"}
kiln="$root/$BUILD_DIR/kiln"
export KILN_HOME=$(mktemp -d /tmp/kiln-loadtest-bench-XXXXXX)
trap stop_background_and_clean EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo ""; }
jq_() { /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
pct() { grep -E "^ +$1%" | awk '{print $2}'; }
tck=$(getconf CLK_TCK)

print_machine
echo "lscpu:   $(lscpu | grep 'Model name' | sed 's/ \+/ /g')"

echo; echo "== bundle: examples/breast-cancer/train.yaml; kiln serve --threads 1 on CPU 1"
"$kiln" train examples/breast-cancer/train.yaml --out "$KILN_HOME/run" >/dev/null 2>&1
ln -s "$KILN_HOME/run/bundle" "$KILN_HOME/bc"
port=$(free_port)
taskset -c 1 "$kiln" serve --model "$KILN_HOME/bc" --port "$port" --threads 1 \
  >"$KILN_HOME/serve.out" 2>"$KILN_HOME/serve.err" &
kpid=$!
pids+=($kpid)
wait_serve_ready "$KILN_HOME/serve.out" "$KILN_HOME/serve.err" $kpid
cat "$KILN_HOME/serve.out"
base="http://127.0.0.1:$port"
health="$base/v2/health/ready"
infer="$base/v2/models/bc/infer"
/usr/bin/python3 -c "
import json; print(json.dumps({'inputs': [{'name': 'input', 'shape': [1, 30], 'datatype': 'FP32', 'data': [0.0] * 30}]}))" \
  >"$KILN_HOME/zeros.json"

# loadtest ARGS...: runs `taskset -c 0 kiln loadtest ARGS --json` into $KILN_HOME/lt.json and
# sets lt_cpu_s to its utime+stime (sampled from /proc every 50 ms until it exits).
loadtest() {
  taskset -c 0 "$kiln" loadtest "$@" --json >"$KILN_HOME/lt.json" 2>"$KILN_HOME/lt.err" &
  local p=$! last=0 t
  while kill -0 $p 2>/dev/null; do
    t=$(cpu_ticks $p); [ -n "$t" ] && last=$t
    sleep 0.05
  done
  wait $p || true
  lt_cpu_s=$(/usr/bin/python3 -c "print(f'{$last/$tck:.2f}')")
}

echo; echo "== 1. highest intended rate kept on schedule: GET /v2/health/ready, 5 s per rate, 64 connections"
printf "%9s %10s %8s %8s %10s %10s %11s %7s %6s %8s\n" intended achieved sent errors p50_us p99_us late_sends cpu_s cores us/req
for r in $RATES; do
  s0=$(cpu_ticks $kpid)
  loadtest "$health" --rate "$r" --duration 5
  s1=$(cpu_ticks $kpid)
  f="$KILN_HOME/lt.json"
  printf "%9s %10.0f %8s %8s %10.0f %10.0f %11s %7s %6s %8s   (server %s cores)\n" "$r" \
    "$(jq_ "$f" "j['achieved_rate_per_s']")" "$(jq_ "$f" "j['requests']['sent']")" \
    "$(jq_ "$f" "j['errors']['total']")" "$(jq_ "$f" "j['latency']['p50_us']")" \
    "$(jq_ "$f" "j['latency']['p99_us']")" "$(jq_ "$f" "j['late_sends']")" "$lt_cpu_s" \
    "$(/usr/bin/python3 -c "print(f'{$lt_cpu_s/$(jq_ "$f" "j['elapsed_s']"):.2f}')")" \
    "$(/usr/bin/python3 -c "print(f'{1e6*$lt_cpu_s/max(1,$(jq_ "$f" "j['requests']['sent']")):.1f}')")" \
    "$(/usr/bin/python3 -c "print(f'{($s1-$s0)/$tck/$(jq_ "$f" "j['elapsed_s']"):.2f}')")"
done

stall() {  # SIGSTOP the server 3 s in, for 1 s
  sleep 3; kill -STOP $kpid; sleep 1; kill -CONT $kpid
}
cat >"$KILN_HOME/post.lua" <<LUA
local f = io.open("$KILN_HOME/zeros.json", "r")
wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
local d = tonumber(os.getenv("DELAY_MS") or "0")
function delay() return d end
LUA

echo; echo "== 2. server stopped (SIGSTOP) for 1 s, 3 s into a 10 s run: POST infer (1x30 zeros)"
stall & sp=$!
loadtest "$infer" --body "$KILN_HOME/zeros.json" --rate "$RATE" --duration 10
wait $sp
f="$KILN_HOME/lt.json"
echo "kiln loadtest --rate $RATE (open loop, 64 connections): p50 $(jq_ "$f" "j['latency']['p50_us']") us, p90 $(jq_ "$f" "j['latency']['p90_us']") us, p99 $(jq_ "$f" "j['latency']['p99_us']") us, max $(jq_ "$f" "j['latency']['max_us']") us, $(jq_ "$f" "j['requests']['completed']") requests"
stall & sp=$!
wrk_out=$(taskset -c 0 wrk -t1 -c16 -d10s --latency -s "$KILN_HOME/post.lua" "$infer")
wait $sp
echo "wrk -t1 -c16 -d10s --latency (closed loop, wrk's stats_correct): p50 $(echo "$wrk_out" | pct 50), p90 $(echo "$wrk_out" | pct 90), p99 $(echo "$wrk_out" | pct 99), max $(echo "$wrk_out" | awk '/Latency  /{print $4}'), $(echo "$wrk_out" | awk '/requests in/{print $1}') requests"
stall & sp=$!
loadtest "$infer" --body "$KILN_HOME/zeros.json" --connections 16 --duration 10
wait $sp
echo "kiln loadtest --connections 16 (closed loop): p50 $(jq_ "$f" "j['latency']['p50_us']") us, p90 $(jq_ "$f" "j['latency']['p90_us']") us, p99 $(jq_ "$f" "j['latency']['p99_us']") us, max $(jq_ "$f" "j['latency']['max_us']") us, $(jq_ "$f" "j['requests']['completed']") requests"

echo; echo "== 3. no stall, about $RATE req/s: percentiles"
loadtest "$infer" --body "$KILN_HOME/zeros.json" --rate "$RATE" --duration 10
echo "kiln loadtest --rate $RATE: p50 $(jq_ "$f" "j['latency']['p50_us']") us, p90 $(jq_ "$f" "j['latency']['p90_us']") us, p99 $(jq_ "$f" "j['latency']['p99_us']") us, achieved $(jq_ "$f" "round(j['achieved_rate_per_s'])") req/s"
echo "  the same answers from the actual send: p50 $(jq_ "$f" "j['latency_from_send']['p50_us']") us, p90 $(jq_ "$f" "j['latency_from_send']['p90_us']") us, p99 $(jq_ "$f" "j['latency_from_send']['p99_us']") us; $(jq_ "$f" "j['late_sends']") sends more than 1 ms late (max $(jq_ "$f" "j['max_send_lag_us']") us)"
delay=$((16000 / RATE))
wrk_out=$(DELAY_MS=$delay taskset -c 0 wrk -t1 -c16 -d10s --latency -s "$KILN_HOME/post.lua" "$infer")
echo "wrk -t1 -c16 -d10s, ${delay} ms delay per connection: p50 $(echo "$wrk_out" | pct 50), p90 $(echo "$wrk_out" | pct 90), p99 $(echo "$wrk_out" | pct 99), $(echo "$wrk_out" | awk '/Requests\/sec/{print $2}') req/s"
