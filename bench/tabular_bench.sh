#!/usr/bin/env bash
# Tabular benchmark: Kiln from the raw CSVs through the data stage, beside scikit-learn's
# StandardScaler + MLP (the peer a Python user reaches for) in the same run.
#   0. the quick path (`kiln train --data FILE.csv --target COL`, model chosen by cross-validation)
#      on five tables x split seeds 1-5, beside scikit-learn's MLP and LogisticRegression
#      (LinearRegression) on the same rows: bench/tabular_quick_path.py. SECTION=0 runs it alone.
#   1. scikit-learn's own split, train_test_split(test_size=0.2, random_state=42), which Kiln
#      reproduces row for row (split.method: sklearn; the script checks the test rows match):
#      examples/{breast-cancer,diabetes}/train-sklearn-split.yaml, Kiln seeds 1-5 vs sklearn
#      seeds 0-4.
#   2. robustness: breast cancer on Kiln's stratified 70/15/15 split for split seeds 1-5,
#      examples/breast-cancer/train.yaml vs scikit-learn MLP on the same train rows.
# Usage: bench/tabular_bench.sh   (BUILD_DIR overrides build/). Needs python3-sklearn.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
DATASETS=${DATASETS:-../shared/datasets}
kiln="$BUILD_DIR/kiln"
export KILN_HOME=$(mktemp -d /tmp/kiln-bench-XXXXXX)
trap 'rm -rf "$KILN_HOME"' EXIT
source bench/lib.sh
print_machine

if [ "${SECTION:-all}" = all ] || [ "${SECTION:-all}" = 0 ]; then
echo; echo "== 0. the quick path, cross-validated model choice, beside scikit-learn"
/usr/bin/python3 bench/tabular_quick_path.py "$kiln" "$KILN_HOME/quick" "$DATASETS"
fi
[ "${SECTION:-all}" = 0 ] && exit 0

if [ "${SECTION:-all}" != 2 ]; then
echo; echo "== 1. scikit-learn's split (test_size=0.2, random_state=42)"
for ex in breast-cancer diabetes; do
  for seed in 1 2 3 4 5; do
    "$kiln" train examples/$ex/train-sklearn-split.yaml --set seed=$seed \
      --out "$KILN_HOME/runs/$ex-$seed" --json 2>/dev/null > "$KILN_HOME/$ex-$seed.json"
  done
done
/usr/bin/python3 - "$KILN_HOME" "$DATASETS" <<'PY'
import csv, glob, json, sys, warnings
import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import r2_score
warnings.filterwarnings("ignore")
home, datasets = sys.argv[1], sys.argv[2]
for ex, csv_name, target in [("breast-cancer", "breast_cancer.csv", "diagnosis"),
                             ("diabetes", "diabetes.csv", "disease_progression")]:
    rows = list(csv.reader(open(f"{datasets}/{csv_name}")))
    header, rows = rows[0], rows[1:]
    t = header.index(target)
    X = np.array([[float(v) for j, v in enumerate(r) if j != t] for r in rows])
    y = np.array([r[t] for r in rows])
    regression = ex == "diabetes"
    if regression:
        y = y.astype(float)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=42)
    # The Kiln snapshot must hold exactly these test rows: compare CSV line numbers (header = 1).
    snap = glob.glob(f"{home}/snapshots/{ex}-sklearn-split-*")[0]
    m = json.load(open(snap + "/manifest.json"))
    _, te_idx = train_test_split(np.arange(len(y)), test_size=0.2, random_state=42)
    same = sorted(m["splits"]["test"]["source_lines"]) == sorted(int(i) + 2 for i in te_idx)
    print(f"{ex}: Kiln's test rows are scikit-learn's, line for line: {same}")
    assert same
    kiln = [json.load(open(f"{home}/{ex}-{s}.json"))["test_metrics"] for s in range(1, 6)]
    if regression:
        k = [r["r2"] for r in kiln]
        sk = [r2_score(yte, make_pipeline(StandardScaler(), MLPRegressor(random_state=s, max_iter=5000)).fit(Xtr, ytr).predict(Xte)) for s in range(5)]
        name = "test R2"
    else:
        k = [r["accuracy"] for r in kiln]
        sk = [make_pipeline(StandardScaler(), MLPClassifier(random_state=s, max_iter=2000)).fit(Xtr, ytr).score(Xte, yte) for s in range(5)]
        name = "test accuracy"
    print(f"{ex} ({len(yte)} test rows) {name}: kiln mean {np.mean(k):.4f} min {np.min(k):.4f} "
          f"[{', '.join(f'{v:.4f}' for v in k)}]; sklearn MLP mean {np.mean(sk):.4f} min {np.min(sk):.4f} "
          f"[{', '.join(f'{v:.4f}' for v in sk)}]; kiln - sklearn (means) {np.mean(k) - np.mean(sk):+.4f}")
PY

fi
echo; echo "== 2. breast cancer on Kiln's stratified 70/15/15 split, split seeds 1-5"
for seed in 1 2 3 4 5; do
  snap=$("$kiln" data prepare examples/breast-cancer/dataset.yaml --seed $seed --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"])')
  "$kiln" train examples/breast-cancer/train.yaml --set data.path="$snap" --out "$KILN_HOME/runs/bc-split-$seed" \
    --json 2>/dev/null > "$KILN_HOME/bc-split-$seed.json"
  /usr/bin/python3 - "$snap" $seed "$KILN_HOME/bc-split-$seed.json" <<'PY'
import json, sys, warnings
import numpy as np
from sklearn.neural_network import MLPClassifier
warnings.filterwarnings("ignore")
kiln = json.load(open(sys.argv[3]))["test_metrics"]["accuracy"]
d = sys.argv[1]
X, y, Xt, yt = (np.load(f"{d}/{n}.npy") for n in ("train_x", "train_y", "test_x", "test_y"))
sk = [MLPClassifier(random_state=k, max_iter=2000).fit(X, y).score(Xt, yt) for k in range(3)]
print(f"split seed {sys.argv[2]}: kiln {kiln:.4f}  sklearn MLP (seeds 0-2, same train rows) {np.mean(sk):.4f}")
PY
done
