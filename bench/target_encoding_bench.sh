#!/usr/bin/env bash
# Target encoding benchmark: diabetes (../shared/datasets/diabetes.csv, 442 rows, regression) with
# its age column (57 distinct years) used three ways: as a number (the plain spec), as a
# category one-hot encoded (`categories: {columns: [age]}`), and as a category target-encoded
# (`categories: {columns: [age], target_encode: [age]}`). Each is trained with
# `kiln train --data SPEC --model mlp --seed S` for each seed S in SEEDS (the quick path: an 80/20
# split by that seed, the zoo MLP 64-32 with AdamW + one-cycle, weights seeded alike); prints the
# network's input width and the test R² of the bundle (model.pt), then their mean and sd.
# Usage: bench/target_encoding_bench.sh   (BUILD_DIR=build SEEDS="1 2 ... 10")
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
SEEDS=${SEEDS:-"1 2 3 4 5 6 7 8 9 10"}
start_training_bench te
data=$(realpath ../shared/datasets/diabetes.csv)
echo "command: SEEDS=\"$SEEDS\" bench/target_encoding_bench.sh"
declare -A categories=(
  [numeric]=""
  [one_hot]="categories: {columns: [age]}"
  [target]="categories: {columns: [age], target_encode: [age]}")
for way in numeric one_hot target; do
  scores=()
  for seed in $SEEDS; do
    cat > "$work/$way.yaml" <<YAML
name: diabetes-$way
kind: table
sources: [$data]
target: disease_progression
task: regression
${categories[$way]}
YAML
    "$kiln" train --data "$work/$way.yaml" --model mlp --seed "$seed" --out "$work/run-$way-$seed" \
      >/dev/null 2>&1
    line=$(/usr/bin/python3 -c "
import json, sys
m = json.load(open(sys.argv[1] + '/bundle/manifest.json'))
print(m['input_shape'][0], m['metrics']['test']['r2'])" "$work/run-$way-$seed")
    echo "$way seed $seed: inputs/r2 $line" | tee -a "$work/scores"
    scores+=("${line##* }")
  done
  /usr/bin/python3 -c "import statistics as s, sys; v=[float(x) for x in sys.argv[2:]]; print(f'{sys.argv[1]}: test R2 mean {s.mean(v):.4f} sd {s.stdev(v):.4f} over {len(v)} seeds')" "$way" "${scores[@]}"
done
# Paired by seed (the same split and weights seed): target encoding against the other two.
/usr/bin/python3 -c "
import collections, statistics as st, sys
d = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    p = line.split(); d[p[0]][p[2].rstrip(':')] = float(p[-1])
for other in ('one_hot', 'numeric'):
    diffs = [d['target'][s] - d[other][s] for s in d['target']]
    print(f'target - {other}: test R2 {st.mean(diffs):+.4f} (sd {st.stdev(diffs):.4f}), higher in {sum(x > 0 for x in diffs)} of {len(diffs)} seeds')" "$work/scores"
