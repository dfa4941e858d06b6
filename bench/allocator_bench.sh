#!/usr/bin/env bash
# The tensor allocator setting (core configure_allocator_for_tensors: no mmap for any size) against
# glibc's mmap above 32 MiB (KILN_ALLOCATOR_MMAP=1), alternating, ROUNDS times each:
#   1. `kiln train examples/fashion-mnist/cnn.yaml --set epochs=2`: wall time (training, the final
#      evaluations of model.pt and model_bf16.pt, the reference profile), epoch seconds, page
#      faults and peak RSS
#   2. `kiln eval` of that bundle on the test split (evaluation batch 512, flip TTA)
# Usage: bench/allocator_bench.sh   (BUILD_DIR overrides build/; ROUNDS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-2}
kiln="$BUILD_DIR/kiln"
export KILN_HOME=$(mktemp -d /tmp/kiln-alloc-bench-XXXXXX)
trap 'rm -rf "$KILN_HOME"' EXIT
source bench/lib.sh
print_machine
"$kiln" data prepare examples/fashion-mnist/dataset.yaml >/dev/null
snapshot=$(ls -d "$KILN_HOME"/snapshots/fashion-mnist-*)
for round in $(seq "$ROUNDS"); do
  for mode in heap mmap; do
    setting=KILN_ALLOCATOR_MMAP=0
    [[ $mode == mmap ]] && setting=KILN_ALLOCATOR_MMAP=1
    out="$KILN_HOME/$mode-$round"
    /usr/bin/time -f "train wall %e s, minor faults %R, peak RSS %M KiB" env "$setting" \
      "$kiln" train examples/fashion-mnist/cnn.yaml --set epochs=2 --out "$out" \
      2>"$out.err" >/dev/null || { cat "$out.err"; exit 1; }
    epochs=$(grep -o '^epoch [0-9]/2: .*(\([0-9.]*s\)' "$out.err" | grep -o '([0-9.]*s' | tr -d '(' | tr '\n' ' ')
    echo "round $round $mode: $(tail -1 "$out.err"); epochs $epochs"
    /usr/bin/time -f "eval wall %e s, minor faults %R, peak RSS %M KiB" env "$setting" \
      "$kiln" eval "$out" --data "$snapshot" --json 2>"$out.eval.err" >/dev/null
    echo "round $round $mode: $(tail -1 "$out.eval.err")"
  done
done
