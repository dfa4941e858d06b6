#!/usr/bin/env bash
# Forward chunking (model::choose_forward_chunking): a CNN bundle's modules at batch 64 through the
# server's own runner, in the forwards `kiln serve` chooses and whole (--whole), beside the
# PyTorch peer (bench/py_cnn_peer.py: eager fp32, eager fp32 channels_last, bf16 autocast), ROUNDS
# times alternating, on one intra-op thread (the peer's setting). Prints per-round ratios of Kiln fp32 (chosen
# forwards) to its whole batches and to PyTorch eager fp32 channels_last.
# Usage: bench/forward_chunking_bench.sh [BUNDLE_DIR]   (default: trains examples/fashion-mnist/
#        cnn.yaml for EPOCHS=1 into a temp KILN_HOME: speed does not depend on the weights;
#        BUILD_DIR=build ROUNDS=3 SECONDS_PER=3 BATCH=64)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-3}
BATCH=${BATCH:-64}
cmake --build "$BUILD_DIR" --target kiln kiln-engine serve_forward_bench >/dev/null
print_machine
bundle=${1:-}
work=$(mktemp -d /tmp/kiln-chunking-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "$bundle" ]; then
  export KILN_HOME=$work
  "$BUILD_DIR/kiln" train examples/fashion-mnist/cnn.yaml --out "$KILN_HOME/cnn" \
    --set "epochs=${EPOCHS:-1}" 2>&1 | grep -E "^test accuracy"
  bundle=$KILN_HOME/cnn/bundle
fi
samples() { grep -o '[0-9]* samples/s$' | grep -o '^[0-9]*'; }
for round in $(seq "$ROUNDS"); do
  echo "--- round $round"
  out=$("$BUILD_DIR/bench/serve_forward_bench" "$bundle" --batch "$BATCH" --threads 1 \
    --seconds "$SECONDS_PER" --precision fp32)
  echo "kiln fp32, chosen forwards: $out"
  chosen=$(echo "$out" | samples)
  out=$("$BUILD_DIR/bench/serve_forward_bench" "$bundle" --batch "$BATCH" --threads 1 \
    --seconds "$SECONDS_PER" --precision fp32 --whole)
  echo "kiln fp32, whole batches: $out"
  whole=$(echo "$out" | samples)
  if [ -f "$bundle/model_bf16.pt" ]; then
    for flag in "" --whole; do
      echo "kiln bf16${flag:+, $flag}: $("$BUILD_DIR/bench/serve_forward_bench" "$bundle" \
        --batch "$BATCH" --threads 1 --seconds "$SECONDS_PER" --precision bf16 $flag)"
    done
  fi
  peer=$(/usr/bin/python3 bench/py_cnn_peer.py "$bundle" --batch "$BATCH" \
    --seconds "$SECONDS_PER" | grep -v '^#')
  echo "$peer"
  peer_cl=$(echo "$peer" | grep "eager fp32 channels_last" | samples)
  echo "ratio: chosen / whole $(ratio "$chosen" "$whole"), chosen / PyTorch eager fp32 channels_last $(ratio "$chosen" "$peer_cl"), whole / PyTorch $(ratio "$whole" "$peer_cl")"
done
