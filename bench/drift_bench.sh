#!/usr/bin/env bash
# Issue 16's drift target on Fashion-MNIST: does `kiln monitor drift` flag a planted shift
# (brightness ×0.7, 3-pixel translation) within a window of W requests, and how often does it flag
# windows of unshifted test images? Trains the default bundle (examples/fashion-mnist/cnn.yaml)
# unless BUNDLE names one with a reference_profile.json, builds windows of test images with
# bench/drift_windows.py (numpy; each window a one-split snapshot directory, since --data takes a
# CSV only for tables), runs `kiln monitor drift BUNDLE --data WINDOW --split test --json` on each
# (one process at a time, ~2.4 s each: LibTorch load + model) and prints detection / false-alarm
# rates with 95% Wilson intervals, plus alternative decision rules recomputed from the per-feature
# p-values. Results: docs/benchmarks.md, "Drift detection on Fashion-MNIST (issue 16)".
# Usage: bench/drift_bench.sh [drift_windows.py make options: --sizes 250,500,1000
#        --clean 60,100,60 --shifted 10,20,10 --mixed 10 --seed 16]   (~400 windows, ~15 min)
# Env: KILN (default build/kiln), BUNDLE (reuse a bundle), PYTHON (default /usr/bin/python3),
#      KEEP=DIR (keep the windows and JSON reports there instead of a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-build/kiln}
PYTHON=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d /tmp/kiln-drift-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
work=${KEEP:-$tmp/windows}
export KILN_HOME=$tmp/home
source bench/lib.sh
print_machine
start=$(date +%s)

if [[ -z "${BUNDLE:-}" ]]; then
  echo "training examples/fashion-mnist/cnn.yaml ..."
  "$KILN" train examples/fashion-mnist/cnn.yaml --out "$tmp/run" >"$tmp/train.log" 2>&1 ||
    { tail -20 "$tmp/train.log"; exit 1; }
  BUNDLE=$tmp/run/bundle
fi
[[ -f "$BUNDLE/reference_profile.json" ]] || { echo "$BUNDLE has no reference_profile.json" >&2; exit 1; }
echo "bundle:  $BUNDLE"

"$PYTHON" bench/drift_windows.py make "$work" "$@"
n=0
for dir in "$work"/*/; do
  dir=${dir%/}
  json=$dir.json
  [[ -s "$json" ]] && continue  # KEEP=DIR: resume
  # stderr: "not prepared like the bundle's training data" (the window's own snapshot hash)
  "$KILN" monitor drift "$BUNDLE" --data "$dir" --split test --json >"$json.part" 2>"$dir.err" ||
    { cat "$dir.err" >&2; exit 1; }
  mv "$json.part" "$json"
  n=$((n + 1))
done
echo "ran kiln monitor drift on $n windows"
"$PYTHON" bench/drift_windows.py analyze "$work"
echo "wall time: $(($(date +%s) - start)) s"
