#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults: profile and prepare the data,
# train the Fashion-MNIST default, evaluate, predict from raw files, export, test it (`kiln test`,
# the default suite), register it
# (alias production) and serve fashion-mnist@production over HTTP (one prediction, then a
# graceful stop), with live drift monitoring seeing a clean stream and then a shifted one.
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

step "Export ONNX (the same function as a graph built in C++: ONNX Runtime, TensorRT, OpenVINO)"
"$kiln" export "$run/bundle" --format onnx --out "$run/model.onnx"

step "Test the bundle before registering it: the default suite (smoke, baselines, boundary, invariance, serve skew, latency); a failed check stops here"
"$kiln" test "$run/bundle" --junit "$run/test-junit.xml" --report "$run/test-report.json"
test_tags=$(/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("--tag test.result=" + ("passed" if r["passed"] else "failed"), "--tag test.suite=" + r["suite"] + "@" + r["suite_sha256"][:12])' "$run/test-report.json")

step "Register the tested bundle as fashion-mnist (next immutable version) and point alias production at it"
# shellcheck disable=SC2086
pushed=$("$kiln" registry push "$run/bundle" --name fashion-mnist --tag source=demo $test_tags \
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

step "Serve fashion-mnist@production (Open Inference Protocol v2), classify one test image over HTTP, stop with SIGTERM"
serve_out="$KILN_HOME/serve-demo.out"
"$kiln" serve --model fashion-mnist@production --port 0 --poll-interval-ms 0 --monitor-window 500 \
  >"$serve_out" 2>"$KILN_HOME/serve-demo.log" &
serve_pid=$!
for _ in $(seq 1 300); do grep -q "ready on" "$serve_out" 2>/dev/null && break; sleep 0.1; done
cat "$serve_out"
url=$(grep -o 'http://[0-9.:]*' "$serve_out")
# The first test image, raw 0-255 pixels, as a 1x1x28x28 UINT8 tensor; ask for the label too.
/usr/bin/python3 - "$url" <<'PY'
import gzip, json, sys, urllib.request
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    pixels = list(f.read(16 + 784)[16:])
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz") as f:
    truth = f.read(9)[8]
body = {"id": "demo-1",
        "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": pixels}],
        "outputs": [{"name": "labels"}, {"name": "probabilities"}]}
req = urllib.request.Request(sys.argv[1] + "/v2/models/fashion-mnist/infer", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
out = json.load(urllib.request.urlopen(req))
label, probs = out["outputs"][0]["data"][0], out["outputs"][1]["data"]
names = json.load(urllib.request.urlopen(sys.argv[1] + "/v2/models/fashion-mnist"))["parameters"]["labels"]
print(f"POST /v2/models/fashion-mnist/infer -> model_version {out['model_version']}: "
      f"prediction '{label}' (p = {max(probs):.3f}); true class '{names[truth]}'")

# Live monitoring: 500 clean test images, then 500 of the next ones dimmed to 70% brightness (a
# planted covariate shift), 50 per request; the server's drift window holds the last 500 rows.
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    raw = f.read()[16:]
def send(first, scale):
    for start in range(first, first + 500, 50):
        pixels = [min(255, int(p * scale)) for p in raw[start * 784:(start + 50) * 784]]
        body = {"inputs": [{"name": "input", "shape": [50, 1, 28, 28], "datatype": "UINT8",
                            "data": pixels}]}
        urllib.request.urlopen(urllib.request.Request(
            sys.argv[1] + "/v2/models/fashion-mnist/infer", json.dumps(body).encode(),
            {"Content-Type": "application/json"})).read()
    m = json.load(urllib.request.urlopen(sys.argv[1] + "/v2/models/fashion-mnist/monitor"))
    d = m["drift"]
    drifted = [f["name"] for f in d["features"] if f["drifted"]]
    print(f"  after {m['rows_total']} rows: {100 * d['drift_share']:.0f}% of {len(d['features'])} "
          f"features drifted ({'DATASET DRIFT' if d['dataset_drift'] else 'no dataset drift'}), "
          f"predicted classes PSI {d['prediction_psi']:.3f}"
          + (f"; drifted: {', '.join(drifted[:6])}{' ...' if len(drifted) > 6 else ''}" if drifted else ""))
print("live drift monitor (GET /v2/models/fashion-mnist/monitor):")
send(1000, 1.0)
send(2000, 0.7)
PY
curl -s "$url/metrics" | grep -E '^kiln_(drift_share|prediction_psi)' || true
# The dashboard as a browser renders it (headless Chromium, installed by install-deps.sh).
if command -v chromium >/dev/null 2>&1 &&
  chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
    --user-data-dir="$KILN_HOME/.chromium" --window-size=1400,1450 --virtual-time-budget=5000 \
    --screenshot="$KILN_HOME/dashboard.png" "$url/dashboard" >/dev/null 2>&1; then
  echo "dashboard: $url/dashboard (rendered by headless Chromium: $KILN_HOME/dashboard.png)"
fi
kill -TERM "$serve_pid"
wait "$serve_pid" && echo "kiln serve stopped cleanly (exit 0)"

step "Done. Snapshots, runs, reports and the registry (registry.db, artifacts/) are under $KILN_HOME"
ls "$KILN_HOME/snapshots" "$run"
