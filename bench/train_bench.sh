#!/usr/bin/env bash
# Training benchmarks, Kiln beside the Python peer (../shared/peers/py_train_fmnist.py) in one run:
#   1. the peer's exact CNN and settings (bs 128, Adam 1e-3): samples/s, peer default and --fast
#   2. MLP 784-256-128-10, same settings: samples/s
#   3. time to accuracy: examples/fashion-mnist/cnn.yaml (the shipped default), with peak RSS
#   4. tabular, raw CSVs through the data stage, against scikit-learn StandardScaler + MLP on the
#      same split (bench/tabular_bench.sh)
# Usage: bench/train_bench.sh   (BUILD_DIR overrides build/). Needs python3-torch, python3-sklearn.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PEERS=${PEERS:-../shared/peers}
kiln="$BUILD_DIR/kiln"
export KILN_HOME=$(mktemp -d /tmp/kiln-bench-XXXXXX)
trap 'rm -rf "$KILN_HOME"' EXIT
source bench/lib.sh
print_machine

# samples/s of the first epoch of a finished run (metrics.jsonl)
kiln_rate() { /usr/bin/python3 -c "import json,sys; print(round(json.loads(open(sys.argv[1]).readline())['samples_per_s']))" "$1/metrics.jsonl"; }
peer_rate() { grep -o '[0-9]* samples/s' | head -1 | cut -d' ' -f1; }
ratio() { /usr/bin/python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }

echo; echo "== 1. peer CNN (conv32-conv64-fc128, bs 128, Adam 1e-3), one epoch of 60000 (Kiln: 54000 + val)"
"$kiln" data prepare examples/fashion-mnist/dataset.yaml >/dev/null
"$kiln" train examples/fashion-mnist/peer-cnn.yaml --out "$KILN_HOME/peer-cnn" >/dev/null 2>&1
k_cnn=$(kiln_rate "$KILN_HOME/peer-cnn")
p_cnn=$(/usr/bin/python3 "$PEERS/py_train_fmnist.py" 1 cnn | peer_rate)
p_cnn_fast=$(/usr/bin/python3 "$PEERS/py_train_fmnist.py" 1 cnn --fast | peer_rate)
echo "kiln (bf16 + channels_last, auto): $k_cnn samples/s"
echo "peer default: $p_cnn samples/s   -> kiln/peer = $(ratio "$k_cnn" "$p_cnn")"
echo "peer --fast:  $p_cnn_fast samples/s   -> kiln/peer = $(ratio "$k_cnn" "$p_cnn_fast")"

echo; echo "== 2. MLP 784-256-128-10 (bs 128, Adam 1e-3)"
"$kiln" train examples/fashion-mnist/mlp.yaml --out "$KILN_HOME/mlp" >/dev/null 2>&1
k_mlp=$(kiln_rate "$KILN_HOME/mlp")
p_mlp=$(/usr/bin/python3 "$PEERS/py_train_fmnist.py" 1 mlp | peer_rate)
echo "kiln: $k_mlp samples/s   peer: $p_mlp samples/s   -> kiln/peer = $(ratio "$k_mlp" "$p_mlp")"

echo; echo "== 3. time to accuracy: examples/fashion-mnist/cnn.yaml"
/usr/bin/time -f "peak RSS %M KiB, wall %e s" "$kiln" train examples/fashion-mnist/cnn.yaml \
  --out "$KILN_HOME/cnn" 2>"$KILN_HOME/cnn.err" >/dev/null || { cat "$KILN_HOME/cnn.err"; exit 1; }
tail -1 "$KILN_HOME/cnn.err"
/usr/bin/python3 - "$KILN_HOME/cnn" <<'PY'
import json, sys
d = sys.argv[1]
lines = [json.loads(l) for l in open(d + "/metrics.jsonl")]
train_s = sum(l["epoch_seconds"] for l in lines)
m = json.load(open(d + "/final_metrics.json"))
test = m.get("test", m)
print(f"epochs {len(lines)}, training wall time {train_s:.1f} s, test accuracy {test['accuracy']:.4f}")
PY

echo; echo "== 4. tabular from the raw CSVs: bench/tabular_bench.sh"
BUILD_DIR="$BUILD_DIR" bench/tabular_bench.sh
