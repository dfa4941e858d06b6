#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults: profile and prepare the data,
# train the Fashion-MNIST default, evaluate, predict from raw files, export, and register it
# (alias production). Later stages extend it to a served, monitored model.
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

step "Train the shipped default: examples/fashion-mnist/cnn.yaml (>= 92% test accuracy in about a minute)"
run="$KILN_HOME/runs/fashion-mnist-demo"
"$kiln" train examples/fashion-mnist/cnn.yaml --out "$run" --overwrite

step "Evaluate the bundle on the test split (the bundle's weights, sha256-verified)"
"$kiln" eval "$run/bundle" --data examples/fashion-mnist/dataset.yaml --split test --report "$run/eval.json"

step "Predict from raw IDX images through the bundle's own preprocessing (first 5 test images)"
"$kiln" predict "$run/bundle" --input /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
  --output "$run/predictions.csv"
head -6 "$run/predictions.csv" | cut -c1-120

step "Export TorchScript (raw 0-255 pixels in, logits out; loadable with torch.jit.load)"
"$kiln" export "$run/bundle" --format torchscript --out "$run/model.pt"

step "Register the bundle as fashion-mnist (next immutable version) and point alias production at it"
pushed=$("$kiln" registry push "$run/bundle" --name fashion-mnist --tag source=demo \
  --description "make demo: examples/fashion-mnist/cnn.yaml")
echo "$pushed"
version=$(echo "$pushed" | sed -n 's/^pushed fashion-mnist@\([0-9]*\).*/\1/p')
"$kiln" registry alias set fashion-mnist production "$version"
"$kiln" registry show fashion-mnist@production
"$kiln" registry list fashion-mnist

step "Evaluate through the registry reference (the verified, materialised copy)"
"$kiln" eval fashion-mnist@production --data examples/fashion-mnist/dataset.yaml --split test

step "Re-hash every artifact in the registry"
"$kiln" registry verify

step "Done. Snapshots, runs, reports and the registry (registry.db, artifacts/) are under $KILN_HOME"
ls "$KILN_HOME/snapshots" "$run"
