#!/usr/bin/env bash
# What flip test-time augmentation costs per request: the default Fashion-MNIST CNN
# (examples/fashion-mnist/cnn.yaml) exported with eval_tta flip (as shipped: the mirror folded
# into model.pt) and with eval_tta none, the same weights' architecture, through the server's own
# runner (serve_forward_bench) at batch 1 and 64, one intra-op thread. Forward cost does not
# depend on how well the weights are trained, so both bundles come from one short epoch.
# Usage: bench/tta_cost.sh   (BUILD_DIR overrides build/)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
kiln="$BUILD_DIR/kiln"
export KILN_HOME=$(mktemp -d /tmp/kiln-bench-XXXXXX)
trap 'rm -rf "$KILN_HOME"' EXIT
source bench/lib.sh
print_machine
for tta in flip none; do
  "$kiln" train examples/fashion-mnist/cnn.yaml --set data.limit=2000 --set epochs=1 \
    --set eval_tta=$tta --out "$KILN_HOME/$tta" >/dev/null 2>&1
done
for batch in 1 64; do
  for tta in none flip; do
    echo "eval_tta $tta, batch $batch: $("$BUILD_DIR/bench/serve_forward_bench" "$KILN_HOME/$tta/bundle" \
      --batch $batch --threads 1 --seconds 3)"
  done
done
