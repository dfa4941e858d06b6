#!/usr/bin/env bash
# Weight averaging (`ema:`) benchmark: the default Fashion-MNIST recipe (examples/fashion-mnist/
# cnn.yaml: one-cycle LR) and the same with a constant learning rate, each trained without an
# average and with `ema: {decay: D}` for each D in DECAYS, for each seed in SEEDS. Prints the test
# accuracy the bundle records (model.pt: the averaged weights where ema is on) and the first
# epoch's training samples/s (what the per-step average costs); then PyTorch's AveragedModel
# (bench/py_ema_peer.py) on the peer CNN, with and without its per-step EMA update.
# Usage: bench/ema_bench.sh   (BUILD_DIR=build SEEDS="42 7" DECAYS="0.99 0.998" EPOCHS=7
#        RECIPES="one_cycle constant")
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
SEEDS=${SEEDS:-"42 7"}
DECAYS=${DECAYS:-"0.99 0.998"}
EPOCHS=${EPOCHS:-7}
RECIPES=${RECIPES:-"one_cycle constant"}
start_training_bench ema
echo "command: SEEDS=\"$SEEDS\" DECAYS=\"$DECAYS\" EPOCHS=$EPOCHS RECIPES=\"$RECIPES\" bench/ema_bench.sh"
# test accuracy (fp32 model.pt) and the first epoch's samples/s of a run directory
report() {
  /usr/bin/python3 -c "
import json, sys
m = json.load(open(sys.argv[1] + '/bundle/manifest.json'))
first = json.loads(open(sys.argv[1] + '/metrics.jsonl').readline())
print(f\"test accuracy {m['metrics']['test']['accuracy']:.4f}, epoch 1 {first['samples_per_s']:.0f} samples/s\")" "$1"
}
for recipe in $RECIPES; do
  recipe_args=()
  # constant: the recipe's optimizer at its own lr, no schedule.
  if [ "$recipe" = constant ]; then recipe_args=(--set "schedule={name: constant}"); fi
  for seed in $SEEDS; do
    for decay in 0 $DECAYS; do
      out="$work/$recipe-$seed-$decay"
      "$kiln" train examples/fashion-mnist/cnn.yaml --out "$out" --set seed="$seed" \
        --set epochs="$EPOCHS" --set "ema={decay: $decay}" ${recipe_args[@]+"${recipe_args[@]}"} \
        >/dev/null 2>&1
      echo "$recipe seed $seed ema $decay: $(report "$out")"
      rm -rf "$out/bundle/model"*.pt "$out/checkpoint.pt"
    done
  done
done
/usr/bin/python3 bench/py_ema_peer.py
