#!/usr/bin/env bash
# bf16 and int8 serving benchmark (issue 18): the default Fashion-MNIST CNN (examples/fashion-mnist/cnn.yaml,
# flip test-time augmentation folded in) through the server's own runner
# (build/bench/serve_forward_bench) as model.pt (fp32, as `kiln serve --precision fp32` serves it)
# and as model_bf16.pt (what `kiln serve` picks on a CPU with avx512_bf16), at batch 1 and 64 on
# one thread, ROUNDS times alternating, and the int8 bundle `kiln compress --quantize int8` makes
# of it, and the bundle `kiln compress --prune 0.5` makes (served in bf16), beside the PyTorch peer (bench/py_cnn_peer.py --int8: the same network and weights in
# eager fp32, frozen TorchScript fp32, bf16 autocast + channels_last, and PyTorch's eager-mode
# static quantisation on onednn). Prints each module's test accuracy and model file size.
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
work=$(mktemp -d /tmp/kiln-precision-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "$bundle" ]; then
  export KILN_HOME=$work
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
"$BUILD_DIR/kiln" compress "$bundle" --quantize int8 --out "$work/int8" \
  --timing-seconds 0 2>&1 | grep -E "^int8|^after"
int8_bundle=$work/int8
"$BUILD_DIR/kiln" compress "$bundle" --prune 0.5 --out "$work/pruned" --timing-seconds 0 2>&1 |
  grep -E "^prune|^after"
pruned_bundle=$work/pruned
echo "model.pt bytes: fp32 $(stat -c %s "$bundle/model.pt"), bf16 $(stat -c %s "$bundle/model_bf16.pt" 2>/dev/null || echo -), int8 $(stat -c %s "$int8_bundle/model.pt")"
for round in $(seq "$ROUNDS"); do
  echo "--- round $round"
  for batch in 1 64; do
    for precision in fp32 bf16; do
      "$BUILD_DIR/bench/serve_forward_bench" "$bundle" --batch "$batch" --threads 1 \
        --seconds "$SECONDS_PER" --precision "$precision" | sed "s/^/kiln $precision: /"
    done
    "$BUILD_DIR/bench/serve_forward_bench" "$int8_bundle" --batch "$batch" --threads 1 \
      --seconds "$SECONDS_PER" | sed "s/^/kiln int8: /"
    "$BUILD_DIR/bench/serve_forward_bench" "$pruned_bundle" --batch "$batch" --threads 1 \
      --seconds "$SECONDS_PER" --precision bf16 | sed "s/^/kiln pruned-0.5-bf16: /"
  done
  /usr/bin/python3 bench/py_cnn_peer.py "$bundle" --seconds "$SECONDS_PER" --int8
done
