#!/usr/bin/env bash
# GPU benchmarks (issue 20), Kiln beside the PyTorch peer on the same machine's torch + CUDA, in
# one run (about 4 minutes on an H100):
#   1. training throughput on the shared peer's CNN and MLP (batch 128, Adam 1e-3), samples/s of
#      the second epoch: Kiln --device cuda vs bench/py_gpu_peer.py default and --fast
#   2. time to 92% test accuracy of the served module: examples/fashion-mnist/cnn.yaml on the GPU
#      vs the same recipe in PyTorch with the peer's best settings
#   3. serving the MLP and the CNN: the offline forward (serve_forward_bench) at batch 1, 64 and
#      1024 on the GPU and on the CPU, then `kiln serve --device cuda|cpu` over HTTP: throughput at
#      saturation (closed loop, 64 connections, one-image JSON bodies) and p50/p99 at 1000 req/s
# Usage (on the GPU machine, from scripts/gpu.sh bench): KILN=build-gpu/kiln bench/gpu_bench.sh
# SMOKE=1 runs every step briefly on a data subset (and DEVICE=cpu without a GPU, peer skipped) to
# check the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
KILN=${KILN:-$root/build/kiln}
FORWARD=${FORWARD:-$(dirname "$KILN")/bench/serve_forward_bench}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
PYTHON=${PYTHON:-python3}
FMNIST=${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
export KILN_HOME=$(mktemp -d /tmp/kiln-gpu-bench-XXXXXX)
source bench/lib.sh
trap stop_background_and_clean EXIT
json_get() { "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }
# samples/s of the last epoch of a run (metrics.jsonl)
kiln_rate() { "$PYTHON" -c "import json,sys; print(round(json.loads(open(sys.argv[1]).read().splitlines()[-1])['samples_per_s']))" "$1/metrics.jsonl"; }
http_get() { "$PYTHON" -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())" "$1" 2>/dev/null; }
peer_rate() { grep -o '[0-9]* samples/s' | tail -1 | cut -d' ' -f1; }
run_peer() { if [[ "$DEVICE" == cpu ]]; then echo "peer skipped (DEVICE=cpu)"; else "$PYTHON" bench/py_gpu_peer.py "$@"; fi; }

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || true
echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "kiln: $(git rev-parse --short HEAD 2>/dev/null) $("$KILN" devices | tr '\n' ';')"

# The Fashion-MNIST spec over the files here, and the example configs pointing at it.
sed "s|^root: .*|root: $FMNIST|" examples/fashion-mnist/dataset.yaml >"$KILN_HOME/dataset.yaml"
for c in peer-cnn mlp cnn; do
  sed "s|^data: .*|data: $KILN_HOME/dataset.yaml|" "examples/fashion-mnist/$c.yaml" >"$KILN_HOME/$c.yaml"
done
limit=()
[[ "$SMOKE" == 1 ]] && limit=(--set data.limit=3000)
"$KILN" data prepare "$KILN_HOME/dataset.yaml" >/dev/null

echo; echo "== 1. training throughput, the shared peer's models (batch 128, Adam 1e-3), epoch 2"
"$KILN" train "$KILN_HOME/peer-cnn.yaml" --device "$DEVICE" --set epochs=2 "${limit[@]}" \
  --out "$KILN_HOME/peer-cnn" >"$KILN_HOME/peer-cnn.log" 2>&1 || { cat "$KILN_HOME/peer-cnn.log"; exit 1; }
grep -m1 '^train:' "$KILN_HOME/peer-cnn.log" || true
k_cnn=$(kiln_rate "$KILN_HOME/peer-cnn")
"$KILN" train "$KILN_HOME/mlp.yaml" --device "$DEVICE" --set epochs=2 "${limit[@]}" \
  --out "$KILN_HOME/mlp" >"$KILN_HOME/mlp.log" 2>&1 || { cat "$KILN_HOME/mlp.log"; exit 1; }
k_mlp=$(kiln_rate "$KILN_HOME/mlp")
for kind in cnn mlp; do
  k=$k_cnn; [[ $kind == mlp ]] && k=$k_mlp
  echo "$kind: kiln $k samples/s"
  for flags in "" "--fast"; do
    p=$(run_peer throughput "$kind" $flags --epochs 2 | tee "$KILN_HOME/peer-$kind$flags.log" | peer_rate || true)
    [[ -n "$p" ]] && echo "$kind: peer ${flags:-default} $p samples/s -> kiln/peer = $(ratio "$k" "$p")"
  done
done

echo; echo "== 2. time to 92% test accuracy (served module), examples/fashion-mnist/cnn.yaml"
"$KILN" train "$KILN_HOME/cnn.yaml" --device "$DEVICE" "${limit[@]}" --out "$KILN_HOME/cnn" \
  >"$KILN_HOME/cnn.log" 2>&1 || { cat "$KILN_HOME/cnn.log"; exit 1; }
"$PYTHON" - "$KILN_HOME/cnn" <<'PY'
import json, sys
d = sys.argv[1]
lines = [json.loads(l) for l in open(d + "/metrics.jsonl")]
m = json.load(open(d + "/final_metrics.json"))
epochs = ", ".join("%.2f" % l["epoch_seconds"] for l in lines)
print(f"kiln: {len(lines)} epochs, {sum(l['epoch_seconds'] for l in lines):.2f} s of training "
      f"(epochs {epochs}), served-module test accuracy {m['test']['accuracy']:.4f}")
PY
run_peer recipe | tail -8

echo; echo "== 3. serving the MLP and the CNN: GPU vs CPU"
cpu_threads=$(($(nproc) / 2))
for model in mlp cnn; do
  bundle="$KILN_HOME/$model/bundle"
  for batch in 1 64 1024; do
    for dev in "$DEVICE" cpu; do
      "$FORWARD" "$bundle" --batch "$batch" --threads "$cpu_threads" --seconds 2 --device "$dev" |
        sed "s/^/$model /"
    done
  done
done
# One image as an OIP JSON body (raw pixels 0..255).
"$PYTHON" -c '
import json, sys
print(json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
  "data": [float((i * 37) % 256) for i in range(784)]}]}))' >"$KILN_HOME/body.json"
for model in mlp cnn; do
  for dev in "$DEVICE" cpu; do
    port=$(free_port)
    "$KILN" serve --model "$model=$KILN_HOME/$model/bundle" --port "$port" --device "$dev" \
      --threads "$cpu_threads" --max-batch 64 >"$KILN_HOME/serve-$model-$dev.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
      http_get "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
      sleep 0.2
    done
    url="http://127.0.0.1:$port/v2/models/$model/infer"
    duration=5; [[ "$SMOKE" == 1 ]] && duration=1
    "$KILN" loadtest "$url" --body "$KILN_HOME/body.json" --connections 64 --threads 2 \
      --duration "$duration" --json >"$KILN_HOME/sat.json" || true
    "$KILN" loadtest "$url" --body "$KILN_HOME/body.json" --rate 1000 --threads 2 \
      --duration "$duration" --json >"$KILN_HOME/rate.json" || true
    echo "$model on $dev: saturation $(json_get "$KILN_HOME/sat.json" "round(d['achieved_rate_per_s'])") req/s" \
      "(errors $(json_get "$KILN_HOME/sat.json" "d['errors']['total']")); at 1000 req/s p50" \
      "$(json_get "$KILN_HOME/rate.json" "d['latency']['p50_us']") us, p99" \
      "$(json_get "$KILN_HOME/rate.json" "d['latency']['p99_us']") us"
    [[ "$dev" != cpu ]] && http_get "http://127.0.0.1:$port/metrics" | grep -E '^kiln_gpu_(utilization|memory_used)' || true
    kill "${pids[-1]}" 2>/dev/null || true
    wait "${pids[-1]}" 2>/dev/null || true
  done
done
