#!/usr/bin/env bash
# bf16 serving benchmark (issue 18): the default Fashion-MNIST CNN (examples/fashion-mnist/cnn.yaml,
# flip test-time augmentation folded in) through the server's own runner
# (build/bench/serve_forward_bench) as model.pt (fp32, as `kiln serve --precision fp32` serves it)
# and as model_bf16.pt (what `kiln serve` picks on a CPU with avx512_bf16), at batch 1 and 64 on
# one thread, ROUNDS times alternating, beside the PyTorch peer (bench/py_cnn_peer.py: the same
# network and weights in eager fp32, frozen TorchScript fp32 and bf16 autocast + channels_last).
# Prints the test accuracy the bundle records for each module.
# Usage: bench/precision_bench.sh [BUNDLE_DIR]   (default: trains the CNN into a temp KILN_HOME;
#        BUILD_DIR=build ROUNDS=3 SECONDS_PER=3)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-3}
cmake --build "$BUILD_DIR" --target kiln kiln-engine serve_forward_bench >/dev/null
print_machine
grep -q avx512_bf16 /proc/cpuinfo && echo "avx512_bf16: yes" || echo "avx512_bf16: no (no bf16 module is recorded)"
bundle=${1:-}
if [ -z "$bundle" ]; then
  export KILN_HOME=$(mktemp -d /tmp/kiln-precision-bench-XXXXXX)
  trap 'rm -rf "$KILN_HOME"' EXIT
  "$BUILD_DIR/kiln" train examples/fashion-mnist/cnn.yaml --out "$KILN_HOME/cnn" 2>&1 | grep -E "bf16 module|^final"
  bundle=$KILN_HOME/cnn/bundle
fi
/usr/bin/python3 - "$bundle" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
print(f"test accuracy: fp32 {m['metrics']['test']['accuracy']:.4f}", end="")
b = m.get("precisions", {}).get("bf16")
print(f", bf16 {b['metrics']['test']['accuracy']:.4f}" if b else ", bf16 not recorded")
PY
for round in $(seq "$ROUNDS"); do
  echo "--- round $round"
  for batch in 1 64; do
    for precision in fp32 bf16; do
      "$BUILD_DIR/bench/serve_forward_bench" "$bundle" --batch "$batch" --threads 1 \
        --seconds "$SECONDS_PER" --precision "$precision" | sed "s/^/kiln $precision: /"
    done
  done
  /usr/bin/python3 bench/py_cnn_peer.py "$bundle" --seconds "$SECONDS_PER"
done
