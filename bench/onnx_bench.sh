#!/usr/bin/env bash
# ONNX export benchmark (issue 18): `kiln export --format onnx` of the default Fashion-MNIST CNN
# (examples/fashion-mnist/cnn.yaml, flip test-time augmentation folded in), checked as a third
# party would and run by ONNX Runtime (onnxruntime-node, tools/onnxruntime) on the whole test
# split (t10k, 10,000 images):
#  - the export's wall time; Python's onnx.checker.check_model(full_check=True);
#  - ONNX Runtime's logits vs model.pt's (the module `kiln serve --precision fp32` serves, run by
#    Debian's python3-torch on the same raw pixels), and its probabilities vs `kiln predict`'s;
#  - ONNX Runtime's accuracy vs the bundle's recorded test accuracy;
#  - samples/s on one thread at batch 1 and 64, ROUNDS times alternating: ONNX Runtime on Kiln's
#    graph, ONNX Runtime on the graph PyTorch's own exporter (torch.onnx.export of model.pt,
#    opset 17) makes of the same module (the peer), and Kiln's served fp32 and bf16 modules
#    (build/bench/serve_forward_bench).
# Usage: bench/onnx_bench.sh [BUNDLE_DIR]   (default: trains the CNN into a temp KILN_HOME;
#        BUILD_DIR=build ROUNDS=3 SECONDS_PER=3)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-3}
cmake --build "$BUILD_DIR" --target kiln kiln-engine serve_forward_bench >/dev/null
scripts/install-deps.sh >/dev/null
print_machine
echo "onnxruntime-node: $(node -p "require('./tools/onnxruntime/node_modules/onnxruntime-node/package.json').version"), node $(node --version)"
bundle=${1:-}
work=$(mktemp -d /tmp/kiln-onnx-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "$bundle" ]; then
  export KILN_HOME=$work
  "$BUILD_DIR/kiln" train examples/fashion-mnist/cnn.yaml --out "$KILN_HOME/cnn" 2>&1 | grep -E "^final"
  bundle=$KILN_HOME/cnn/bundle
fi
images=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
labels=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

start=$(date +%s.%N)
"$BUILD_DIR/kiln" export "$bundle" --format onnx --out "$work/kiln.onnx"
echo "export wall time: $(echo "$(date +%s.%N) - $start" | bc) s (kiln front + engine start included)"
"$BUILD_DIR/kiln" predict "$bundle" --input "$images" --json > "$work/predict.json"

# Raw pixels, model.pt's logits (Python loads the same TorchScript file), the checker and the
# peer graph from torch.onnx.export.
/usr/bin/python3 - "$bundle" "$work" "$images" "$labels" <<'PY'
import gzip, json, sys, warnings
import numpy as np, onnx, torch
bundle, work, images, labels = sys.argv[1:5]
torch.set_num_threads(1)
raw = np.frombuffer(gzip.open(images).read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
x = torch.from_numpy(raw.astype(np.float32))
x.numpy().tofile(f"{work}/x.f32")
np.frombuffer(gzip.open(labels).read(), np.uint8, offset=8).astype(np.int64).tofile(f"{work}/y.i64")
m = torch.jit.load(f"{bundle}/model.pt").eval()
with torch.no_grad():
    torch.cat([m(x[i:i + 500]) for i in range(0, len(x), 500)]).numpy().tofile(f"{work}/kiln_logits.f32")
onnx.checker.check_model(onnx.load(f"{work}/kiln.onnx"), full_check=True)
print("python onnx.checker.check_model(full_check=True): passed")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(m, x[:2], f"{work}/peer.onnx", opset_version=17, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
for name in ("kiln", "peer"):
    g = onnx.load(f"{work}/{name}.onnx").graph
    print(f"{name}.onnx: {len(g.node)} nodes, ops {sorted(set(n.op_type for n in g.node))}")
PY
node tools/onnxruntime/run.js "$work/kiln.onnx" --input "$work/x.f32" --shape 1,28,28 \
  --output "$work/ort_logits.f32" --batch 500 > /dev/null
/usr/bin/python3 - "$bundle" "$work" <<'PY'
import json, sys
import numpy as np
bundle, work = sys.argv[1:3]
m = json.load(open(f"{bundle}/manifest.json"))
ort = np.fromfile(f"{work}/ort_logits.f32", np.float32).reshape(-1, 10)
kiln = np.fromfile(f"{work}/kiln_logits.f32", np.float32).reshape(-1, 10)
y = np.fromfile(f"{work}/y.i64", np.int64)
print(f"rows: {len(ort)}; logits up to {np.abs(kiln).max():.2f}")
print(f"max |ORT - model.pt| logits: {np.abs(ort - kiln).max():.3g} (mean {np.abs(ort - kiln).mean():.3g})")
p = np.exp(ort - ort.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
labels = m["labels"]
pred = json.load(open(f"{work}/predict.json"))
q = np.array([[r["probabilities"][l] for l in labels] for r in pred])
print(f"max |ORT softmax - kiln predict| probabilities: {np.abs(p - q).max():.3g}")
print(f"argmax disagreements with model.pt: {(ort.argmax(1) != kiln.argmax(1)).sum()}")
print(f"ONNX Runtime test accuracy {(ort.argmax(1) == y).mean():.4f}; bundle records "
      f"{m['metrics']['test']['accuracy']:.4f}")
PY
head -c $((64 * 784 * 4)) "$work/x.f32" > "$work/x64.f32"  # the timed batch: the first 64 images
for round in $(seq "$ROUNDS"); do
  echo "--- round $round"
  for batch in 1 64; do
    for graph in kiln peer; do
      node tools/onnxruntime/run.js "$work/$graph.onnx" --input "$work/x64.f32" --shape 1,28,28 \
        --batch "$batch" --threads 1 --bench-seconds "$SECONDS_PER" |
        node -e "const r = JSON.parse(require('fs').readFileSync(0)); console.log('onnxruntime $graph.onnx: batch ' + r.bench.batch + ', 1 thread: ' + Math.round(r.bench.samples_per_s) + ' samples/s')"
    done
    for precision in fp32 bf16; do
      "$BUILD_DIR/bench/serve_forward_bench" "$bundle" --batch "$batch" --threads 1 \
        --seconds "$SECONDS_PER" --precision "$precision" | sed "s/^/kiln $precision: /"
    done
  done
done
