#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults. Today that is the data stage on
# Fashion-MNIST and the breast-cancer CSVs; later stages extend it to a served, monitored model.
set -euo pipefail
build=${1:-build}
kiln="$build/kiln"
export KILN_HOME=${KILN_HOME:-$HOME/.kiln}
mkdir -p "$KILN_HOME"
step() { printf '\n== %s\n' "$*"; }

step "kiln --version"
"$kiln" --version

step "Profile Fashion-MNIST (60000 train / 10000 test, 10 classes)"
"$kiln" data profile examples/fashion-mnist/dataset.yaml --report "$KILN_HOME/fashion-mnist-profile.json"

step "Prepare Fashion-MNIST into a content-addressed snapshot (val carved from train, stratified)"
"$kiln" data prepare examples/fashion-mnist/dataset.yaml

step "Profile the deliberately damaged breast-cancer CSV: every planted fault, by line"
"$kiln" data profile ../shared/datasets/breast_cancer_dirty.csv --target diagnosis \
  --report "$KILN_HOME/breast-cancer-dirty-profile.json" | sed -n '/^issues/,$p'

step "Prepare it: repair, reject and list; fit imputer and scaler on train only"
"$kiln" data prepare examples/breast-cancer/dirty.yaml

if [ -x "$build/bench/loader_bench" ]; then
  step "Loader throughput on Fashion-MNIST with augmentation (2 epochs)"
  "$build/bench/loader_bench" --epochs 2 || true
fi

step "Done. Snapshots and reports are under $KILN_HOME"
ls "$KILN_HOME/snapshots"
