#!/usr/bin/env bash
# Serving benchmark: `kiln serve` beside the FastAPI peer (../shared/peers/py_serve_fastapi.py) in
# one run, on the same 784-256-128-10 MLP and the same 1x784 JSON body (peers/infer_1x784.json):
#   1. wrk -t1 -c16 -d10s --latency against each (closed loop): throughput ratio
#   2. Kiln at the peer's request rate (wrk with a per-connection delay): p50/p99
#   3. Kiln saturation (wrk -c64) against the offline batched forward of the same model.pt;
#      3b. the same with 64-row bodies (JSON, and the binary tensor data extension)
#   4. time to ready; batch sizes from /metrics; RSS at the start and after each section
#      (SOAK_S=600 for the soak)
# Usage: bench/serve_bench.sh   (BUILD_DIR overrides build/; DURATION=10; SOAK_S=0 [SOAK_DELAY_MS=5])
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
BUILD_DIR=${BUILD_DIR:-build}
PEERS=$(cd "${PEERS:-../shared/peers}" && pwd)
DURATION=${DURATION:-10}
SOAK_S=${SOAK_S:-0}
kiln="$root/$BUILD_DIR/kiln"
export KILN_HOME=$(mktemp -d /tmp/kiln-serve-bench-XXXXXX)
source bench/lib.sh
trap stop_background_and_clean EXIT
rps() { grep 'Requests/sec' | awk '{print $2}'; }
pct() { grep -E "^ +$1%" | awk '{print $2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# batch_mean VAR: VAR = mean batch size of the requests answered since the last call (/metrics).
bs_prev_sum=0; bs_prev_count=0
batch_mean() {
  local s c
  read -r s c < <(curl -s "http://127.0.0.1:$kport/metrics" |
    awk '/^kiln_inference_batch_size_sum/ {s=$2} /^kiln_inference_batch_size_count/ {c=$2} END {printf "%.0f %.0f\n", s, c}')
  printf -v "$1" '%s' "$(/usr/bin/python3 -c "import sys; s,c,ps,pc=map(float,sys.argv[1:]); print(f'{(s-ps)/max(1,c-pc):.1f}')" \
    "$s" "$c" "$bs_prev_sum" "$bs_prev_count")"
  bs_prev_sum=$s; bs_prev_count=$c
}
wait_http() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')   commit: $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
echo "cpu:     $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg)"

echo; echo "== model: MLP 784-256-128-10 trained 1 epoch on Fashion-MNIST (examples/fashion-mnist/mlp.yaml)"
"$kiln" train examples/fashion-mnist/mlp.yaml --set epochs=1 --out "$KILN_HOME/run" >/dev/null 2>&1
ln -s "$KILN_HOME/run/bundle" "$KILN_HOME/mlp"   # served as "mlp", the peer's model name

pport=$(free_port)
/usr/bin/python3 "$PEERS/py_serve_fastapi.py" "$pport" >"$KILN_HOME/peer.log" 2>&1 &
pids+=($!)
kport=$(free_port)
t0=$(date +%s.%N)
"$kiln" serve --model "$KILN_HOME/mlp" --port "$kport" --threads 1 --poll-interval-ms 1000 \
  >"$KILN_HOME/serve.out" 2>"$KILN_HOME/serve.err" &
kpid=$!
pids+=($kpid)
wait_serve_ready "$KILN_HOME/serve.out" "$KILN_HOME/serve.err" $kpid
t1=$(date +%s.%N)
ready_s=$(/usr/bin/python3 -c "print(f'{$t1-$t0:.3f}')")
echo "kiln serve ready after ${ready_s} s: $(cat "$KILN_HOME/serve.out")"
wait_http "http://127.0.0.1:$pport/v2/health/ready"
rss_start=$(rss_mib $kpid)

run_wrk() {  # url connections script [extra env]
  (cd "$PEERS" && BODY=infer_1x784.json "${@:4}" wrk -t1 -c"$2" -d"${DURATION}s" --latency \
    -s "$3" "$1")
}
kurl="http://127.0.0.1:$kport/v2/models/mlp/infer"
purl="http://127.0.0.1:$pport/v2/models/mlp/infer"

echo; echo "== 1. wrk -t1 -c16 -d${DURATION}s --latency -s post.lua (same body, same run)"
peer_out=$(run_wrk "$purl" 16 "$PEERS/post.lua" env)
batch_mean _
cpu0=$(cpu_ticks $kpid)
kiln_out=$(run_wrk "$kurl" 16 "$PEERS/post.lua" env)
cpu1=$(cpu_ticks $kpid)
batch_mean bm_c16
p_rps=$(echo "$peer_out" | rps); k_rps=$(echo "$kiln_out" | rps)
echo "peer: $p_rps req/s  p50 $(echo "$peer_out" | pct 50)  p99 $(echo "$peer_out" | pct 99)"
echo "kiln: $k_rps req/s  p50 $(echo "$kiln_out" | pct 50)  p99 $(echo "$kiln_out" | pct 99)"
echo "kiln/peer throughput = $(ratio "$k_rps" "$p_rps")x  (target >= 15x)"
rss_c16=$(rss_mib $kpid)
k_n=$(echo "$kiln_out" | awk '/requests in/ {print $1}')
echo "kiln server CPU per request (utime+stime over the run / requests): $(/usr/bin/python3 -c \
  "import sys; a,b,n,t=map(float,sys.argv[1:]); print(f'{(b-a)/t*1e6/n:.1f} us')" \
  "$cpu0" "$cpu1" "$k_n" "$(getconf CLK_TCK)")"

echo; echo "== 2. kiln at the peer's request rate (16 connections, per-connection delay)"
delay_ms=$(/usr/bin/python3 -c "print(max(0, round(16 * 1000 / $p_rps)))")
rate_out=$(run_wrk "$kurl" 16 "$root/bench/post_rate.lua" env DELAY_MS="$delay_ms")
batch_mean bm_rate
echo "delay ${delay_ms} ms/connection -> $(echo "$rate_out" | rps) req/s (peer: $p_rps)"
echo "kiln p50 $(echo "$rate_out" | pct 50)  p90 $(echo "$rate_out" | pct 90)  p99 $(echo "$rate_out" | pct 99)  (target p99 <= 2 ms)"

echo; echo "== 3. saturation: wrk -t1 -c64 (kiln --max-batch 64, 1 compute thread) vs offline forward"
sat_out=$(run_wrk "$kurl" 64 "$PEERS/post.lua" env)
batch_mean bm_c64
s_rps=$(echo "$sat_out" | rps)
off=$("$root/$BUILD_DIR/bench/serve_forward_bench" "$KILN_HOME/run/bundle" --batch 64 --threads 1 --seconds 3 | awk '{print $(NF-1)}')
echo "kiln saturation: $s_rps samples/s  p50 $(echo "$sat_out" | pct 50)  p99 $(echo "$sat_out" | pct 99)"
echo "offline forward, batch 64, 1 thread: $off samples/s"
echo "saturation / offline = $(ratio "$s_rps" "$off")  (target >= 0.50; wrk shares the 2 cores)"
rss_c64=$(rss_mib $kpid)

echo; echo "== 3b. saturation with batched bodies: 64 rows per request, wrk -t1 -c4"
# The issue does not fix the body for the saturation target; these are the same rows as the
# 1-row body, 64 per request, as JSON and as the binary tensor data extension (FP32 bytes).
json_len=$(/usr/bin/python3 - "$PEERS/infer_1x784.json" "$KILN_HOME" <<'PY'
import json, struct, sys
row = json.load(open(sys.argv[1]))["inputs"][0]["data"]
data = row * 64
with open(sys.argv[2] + "/infer_64x784.json", "w") as f:
    json.dump({"inputs": [{"name": "input", "shape": [64, 784], "datatype": "FP32", "data": data}]}, f)
head = json.dumps({"inputs": [{"name": "input", "shape": [64, 784], "datatype": "FP32",
                               "parameters": {"binary_data_size": 4 * len(data)}}]}).encode()
with open(sys.argv[2] + "/infer_64x784.bin", "wb") as f:
    f.write(head + struct.pack("<%df" % len(data), *data))
print(len(head))
PY
)
batch_mean _
b_json=$(BODY_FILE="$KILN_HOME/infer_64x784.json" wrk -t1 -c4 -d"${DURATION}s" --latency \
  -s "$root/bench/post_body.lua" "$kurl")
batch_mean bm_json64
rss_json64=$(rss_mib $kpid)
b_bin=$(BODY_FILE="$KILN_HOME/infer_64x784.bin" JSON_LEN=$json_len wrk -t1 -c4 -d"${DURATION}s" \
  --latency -s "$root/bench/post_body.lua" "$kurl")
batch_mean bm_bin64
rss_bin64=$(rss_mib $kpid)
bj=$(/usr/bin/python3 -c "print(round(64 * float('$(echo "$b_json" | rps)')))")
bb=$(/usr/bin/python3 -c "print(round(64 * float('$(echo "$b_bin" | rps)')))")
echo "64-row JSON bodies ($(stat -c %s "$KILN_HOME/infer_64x784.json") B):   $bj samples/s  p50 $(echo "$b_json" | pct 50)  p99 $(echo "$b_json" | pct 99)  mean batch $bm_json64  -> $(ratio "$bj" "$off") of offline"
echo "64-row binary bodies ($(stat -c %s "$KILN_HOME/infer_64x784.bin") B): $bb samples/s  p50 $(echo "$b_bin" | pct 50)  p99 $(echo "$b_bin" | pct 99)  mean batch $bm_bin64  -> $(ratio "$bb" "$off") of offline"
echo "$b_json$b_bin" | grep -E "Non-2xx|Socket errors" || true

echo; echo "== 4. batch sizes grow with load (mean rows per forward, per request, from /metrics)"
one_out=$(run_wrk "$kurl" 1 "$PEERS/post.lua" env)
batch_mean bm_c1
echo "  1 connection, closed loop:      $(echo "$one_out" | rps) req/s, p99 $(echo "$one_out" | pct 99), mean batch $bm_c1"
echo "  16 connections at the peer rate: mean batch $bm_rate"
echo "  16 connections, closed loop:     mean batch $bm_c16"
echo "  64 connections, closed loop:     mean batch $bm_c64"

if [ "$SOAK_S" -gt 0 ]; then
  echo; echo "== 5. soak: ${SOAK_S} s, 16 connections, ${SOAK_DELAY_MS:-5} ms between requests each; RSS every 60 s"
  (cd "$PEERS" && BODY=infer_1x784.json DELAY_MS=${SOAK_DELAY_MS:-5} wrk -t1 -c16 -d"${SOAK_S}s" \
    -s "$root/bench/post_rate.lua" "$kurl" | grep -E "requests in|Requests/sec|Non-2xx|Socket errors") &
  wpid=$!
  for _ in $(seq 1 $((SOAK_S / 60))); do sleep 60; echo "  RSS $(rss_mib $kpid) MiB"; done
  wait $wpid || true
fi
echo; echo "kiln RSS: start $rss_start MiB, after -c16 $rss_c16, -c64 $rss_c64, 64-row JSON $rss_json64, 64-row binary $rss_bin64, end $(rss_mib $kpid) MiB"
kill -TERM $kpid; wait $kpid; echo "kiln serve exit code after SIGTERM: $?"
