#!/usr/bin/env bash
# Distillation benchmark (issue 18): the default Fashion-MNIST CNN (examples/fashion-mnist/cnn.yaml)
# as the teacher; a student of the same family (default width 20 / hidden 96, about 0.4x its FLOPs)
# trained with the same recipe once alone (`kiln train --set model.width=20 ...`) and once
# distilled from the teacher (`kiln compress TEACHER --distill student.yaml`), for each seed in
# SEEDS. Prints test accuracies (model.pt, fp32, and the module served here) and FLOPs.
# Usage: bench/distill_bench.sh   (BUILD_DIR=build SEEDS="42 7" TEMPERATURE=4 ALPHA=0.7
#        WIDTH=20 HIDDEN=96 EPOCHS=7 TEACHER_SET="loss.label_smoothing=0.1")
# EPOCHS: the students' epochs (alone and distilled alike; the teacher keeps its recipe's 7).
# TEACHER_SET: `--set` overrides for the teacher's training (space-separated KEY=VALUE).
# TEACHER=BUNDLE_DIR: distil from that bundle instead of training one (run with the KILN_HOME it
# was trained in: its data snapshot is there); ENSEMBLE="B1 B2": more teacher bundles (`kiln
# compress --ensemble`: the student learns the mean of all teachers' outputs); ALONE=0: skip the
# students trained alone (when an earlier run with the same seeds and EPOCHS has them).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
SEEDS=${SEEDS:-"42 7"}
TEMPERATURE=${TEMPERATURE:-4}
ALPHA=${ALPHA:-0.7}
WIDTH=${WIDTH:-20}
HIDDEN=${HIDDEN:-96}
EPOCHS=${EPOCHS:-7}
TEACHER_SET=${TEACHER_SET:-}
TEACHER=${TEACHER:-}
ALONE=${ALONE:-1}
ENSEMBLE=${ENSEMBLE:-}
ensemble_args=()
for b in $ENSEMBLE; do ensemble_args+=(--ensemble "$b"); done
teacher_args=()
for kv in $TEACHER_SET; do teacher_args+=(--set "$kv"); done
cmake --build "$BUILD_DIR" --target kiln kiln-engine >/dev/null
print_machine
work=$(mktemp -d /tmp/kiln-distill-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "$TEACHER" ] || [ -z "${KILN_HOME:-}" ]; then export KILN_HOME=$work; fi
kiln="$BUILD_DIR/kiln"
accuracy() {
  /usr/bin/python3 -c "import json,sys; m=json.load(open(sys.argv[1]+'/manifest.json')); b=m.get('precisions',{}).get('bf16'); print(f\"fp32 {m['metrics']['test']['accuracy']:.4f}\" + (f\", bf16 {b['metrics']['test']['accuracy']:.4f}\" if b else ''))" "$1"
}
echo "command: SEEDS=\"$SEEDS\" TEMPERATURE=$TEMPERATURE ALPHA=$ALPHA WIDTH=$WIDTH HIDDEN=$HIDDEN EPOCHS=$EPOCHS TEACHER_SET=\"$TEACHER_SET\" ENSEMBLE=\"$ENSEMBLE\" bench/distill_bench.sh"
if [ -z "$TEACHER" ]; then
  "$kiln" train examples/fashion-mnist/cnn.yaml --out "$work/teacher" ${teacher_args[@]+"${teacher_args[@]}"} 2>&1 | grep -E "^final"
  TEACHER=$work/teacher/bundle
fi
echo "teacher: $(accuracy "$TEACHER")"
for seed in $SEEDS; do
  cat > "$work/student.yaml" <<YAML
model: {zoo: cnn-small, width: $WIDTH, hidden: $HIDDEN, dropout: 0.1}
seed: $seed
epochs: $EPOCHS
temperature: $TEMPERATURE
alpha: $ALPHA
YAML
  if [ "$ALONE" = 1 ]; then
    "$kiln" train examples/fashion-mnist/cnn.yaml --out "$work/alone-$seed" --set seed="$seed" --set epochs="$EPOCHS" \
      --set model.width="$WIDTH" --set model.hidden="$HIDDEN" 2>&1 | grep -E "^final" | sed "s/^/alone seed $seed: /"
    echo "student alone, seed $seed: $(accuracy "$work/alone-$seed/bundle")"
  fi
  "$kiln" compress "$TEACHER" --distill "$work/student.yaml" ${ensemble_args[@]+"${ensemble_args[@]}"} \
    --timing-seconds 0 --out "$work/distilled-$seed" 2>&1 | grep -E "^distill|^after"
  echo "student distilled, seed $seed: $(accuracy "$work/distilled-$seed")"
done
