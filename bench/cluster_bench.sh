#!/usr/bin/env bash
# Inference cluster benchmark (issue 19): the cost of nginx in front, for a tiny model (the
# breast-cancer MLP, `kiln train --data breast_cancer.csv`, requests of one CSV row each) and a
# convolutional one (the default Fashion-MNIST CNN architecture trained briefly, one 28x28 image
# per request, flip TTA), closed loop with 64 connections for DURATION s, ROUNDS times:
#   1. one `kiln serve` replica with both cores (--threads 2), loaded directly;
#   2. `kiln deploy up`: 2 replicas (--threads 1 each) behind nginx, loaded through nginx;
#   3. the same cluster, one replica loaded directly (what nginx adds per request);
# and the throughput ratio through nginx vs one replica direct, same machine, same run.
# Usage: bench/cluster_bench.sh   (BUILD_DIR=build DURATION=10 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
kiln="$(pwd)/$BUILD_DIR/kiln"
cmake --build "$BUILD_DIR" --target kiln kiln-engine >/dev/null
print_machine
echo "nginx: $(nginx -v 2>&1)"
export KILN_HOME=$(mktemp -d /tmp/kiln-cluster-bench-XXXXXX)
csv=$(cd ../shared/datasets && pwd)/breast_cancer.csv
single=""
cleanup() {
  [ -n "$single" ] && kill "$single" 2>/dev/null || true
  "$kiln" deploy down "$KILN_HOME/cluster.yaml" >/dev/null 2>&1 || true
  rm -rf "$KILN_HOME"
}
trap cleanup EXIT
"$kiln" train --data "$csv" --target diagnosis --out "$KILN_HOME/bc" >/dev/null 2>&1
"$kiln" registry push "$KILN_HOME/bc" --name bc >/dev/null
"$kiln" train examples/fashion-mnist/cnn.yaml --out "$KILN_HOME/cnn" --set data.limit=6000 \
  --set epochs=1 >/dev/null 2>&1
"$kiln" registry push "$KILN_HOME/cnn" --name cnn >/dev/null
/usr/bin/python3 -c 'import json; print(json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [float(i % 256) for i in range(784)]}]}))' > "$KILN_HOME/image.json"
summary='import json, sys
r = json.load(sys.stdin)
lat = r["latency"]
rate = r["requests"]["completed"] / r["elapsed_s"]
print("%.0f req/s, errors %d, p50 %.2f ms, p99 %.2f ms" % (rate, r["errors"]["total"], lat["p50_us"] / 1000, lat["p99_us"] / 1000))'
load() {  # URL -> "req/s, errors, p50, p99" (bc: CSV rows; cnn: one image)
  local request=(--data "$csv" --drop-column diagnosis)
  [ "$model" = cnn ] && request=(--body "$KILN_HOME/image.json")
  "$kiln" loadtest "$1" "${request[@]}" --connections 64 \
    --duration "$DURATION" --json 2>/dev/null | /usr/bin/python3 -c "$summary"
}
for model in bc cnn; do
port=$(free_port)
cat > "$KILN_HOME/cluster.yaml" <<YAML
name: bench
port: $port
replicas: 2
models: [$model@1]
serve_args: [--threads, "1"]
YAML
for round in $(seq "$ROUNDS"); do
  echo "--- $model, round $round"
  sport=$(free_port)
  "$kiln" serve --model "$model@1" --port "$sport" --threads 2 > "$KILN_HOME/single.log" 2>&1 &
  single=$!
  for _ in $(seq 100); do grep -q "ready on" "$KILN_HOME/single.log" && break; sleep 0.1; done
  echo "one replica (2 threads), direct: $(load "http://127.0.0.1:$sport/v2/models/$model/infer")"
  kill "$single"; wait "$single" 2>/dev/null || true; single=""
  "$kiln" deploy up "$KILN_HOME/cluster.yaml" > /dev/null
  echo "2 replicas through nginx:        $(load "http://127.0.0.1:$port/v2/models/$model/infer")"
  rport=$("$kiln" deploy status "$KILN_HOME/cluster.yaml" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["replicas"][0]["port"])')
  echo "one cluster replica, direct:     $(load "http://127.0.0.1:$rport/v2/models/$model/infer")"
  "$kiln" deploy down "$KILN_HOME/cluster.yaml" > /dev/null
done
done
