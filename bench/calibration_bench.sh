#!/usr/bin/env bash
# Temperature scaling (`calibration: temperature`) benchmark: the default Fashion-MNIST CNN
# (examples/fashion-mnist/cnn.yaml, label smoothing 0.1) and the breast-cancer MLP
# (examples/breast-cancer/train.yaml, label smoothing 0.05), each trained twice with the same
# seed, without and with calibration. Prints the test accuracy, NLL and ECE (15 bins) that each
# bundle records for its model.pt, and the fitted T. Then the Python peer
# (bench/py_temperature_peer.py: Guo et al.'s reference recipe, L-BFGS on an nn.Parameter) fitted
# on the uncalibrated bundle's model.pt over the same val rows, scored on the same test rows.
# Usage: bench/calibration_bench.sh   (BUILD_DIR=build EPOCHS=7 SEEDS="42")
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
EPOCHS=${EPOCHS:-7}
SEEDS=${SEEDS:-42}
start_training_bench calibration
echo "command: EPOCHS=$EPOCHS SEEDS=\"$SEEDS\" bench/calibration_bench.sh"
report() {
  /usr/bin/python3 -c "
import json, sys
m = json.load(open(sys.argv[1] + '/bundle/manifest.json'))
t = m['metrics']['test']
c = m.get('calibration')
line = f\"test accuracy {t['accuracy']:.4f}, NLL {t['nll']:.4f}, ECE {t['ece']:.4f}\"
if c: line += f\"; T {c['temperature']:.4f} (val NLL {c['val_nll_before']:.4f} -> {c['val_nll_after']:.4f})\"
print(line)" "$1"
}
for seed in $SEEDS; do
  for example in fashion-mnist/cnn.yaml breast-cancer/train.yaml; do
    sets=(--set "seed=$seed")
    [ "$example" = fashion-mnist/cnn.yaml ] && sets+=(--set "epochs=$EPOCHS")
    for calibration in none temperature; do
      out="$work/$seed-${example%%/*}-$calibration"
      "$kiln" train "examples/$example" --out "$out" "${sets[@]}" \
        --set "calibration=$calibration" > /dev/null 2>&1
      echo "$example seed $seed calibration $calibration: $(report "$out")"
    done
    plain="$work/$seed-${example%%/*}-none"
    hash=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['lineage']['snapshot_hash'][:12])" "$plain/bundle/manifest.json")
    snapshot=$(ls -d "$KILN_HOME"/snapshots/*-"$hash")
    /usr/bin/python3 bench/py_temperature_peer.py "$plain/bundle" "$snapshot" | sed 's/^/  /'
  done
done
