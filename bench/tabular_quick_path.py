#!/usr/bin/python3
"""The tabular quick path (`kiln train --data FILE.csv --target COL`) beside scikit-learn.

For every table and split seed, Kiln makes its stratified 80/20 split (`--seed S`) and chooses
its model by cross-validation on the training rows; scikit-learn's StandardScaler + MLPClassifier
(MLPRegressor) defaults and StandardScaler + LogisticRegression (LinearRegression for the
regression table) are fitted on exactly the same raw training rows (read back from the snapshot's
source_lines) and scored on the same test rows. For reference only (not a peer in the target),
scikit-learn choosing its own linear penalty by 5-fold CV, as Kiln does: LogisticRegressionCV
(RidgeCV for regression). Kiln's figure is the one its bundle records: the
exported model.pt on the raw test rows.

Usage: bench/tabular_quick_path.py KILN_BINARY WORK_DIR [SHARED_DATASETS_DIR]
"""
import csv, glob, gzip, json, os, subprocess, sys, time, warnings

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression, LogisticRegressionCV, RidgeCV
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")
if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
    print(__doc__.strip())
    sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
kiln, work = sys.argv[1], sys.argv[2]
shared = sys.argv[3] if len(sys.argv) > 3 else "../shared/datasets"
sk_data = "/usr/lib/python3/dist-packages/sklearn/datasets/data"
seeds = [int(s) for s in os.environ.get("SEEDS", "1 2 3 4 5").split()]


def sklearn_table(name, path, classes):
    """One of the tables scikit-learn ships, as a CSV with a header and a 'target' column."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    if not classes:  # digits.csv.gz has no header line
        data = rows
    else:
        data = rows[1:]
    width = len(data[0]) - 1
    out = f"{work}/{name}.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"x{i}" for i in range(width)] + ["target"])
        for r in data:
            w.writerow(r[:-1] + [f"class_{int(float(r[-1]))}"])
    return out


os.makedirs(work, exist_ok=True)
tables = [
    ("breast_cancer", f"{shared}/breast_cancer.csv", "diagnosis", False),
    ("diabetes", f"{shared}/diabetes.csv", "disease_progression", True),
    ("iris", sklearn_table("iris", f"{sk_data}/iris.csv", True), "target", False),
    ("wine", sklearn_table("wine", f"{sk_data}/wine_data.csv", True), "target", False),
    ("digits", sklearn_table("digits", f"{sk_data}/digits.csv.gz", False), "target", False),
]
only = os.environ.get("TABLES")
if only:
    tables = [t for t in tables if t[0] in only.split(",")]

summary = []
for name, path, target, regression in tables:
    with open(path) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    t = header.index(target)
    kiln_scores, mlp_scores, linear_scores, tuned_scores, walls, choices = [], [], [], [], [], []
    for seed in seeds:
        out = f"{work}/runs/{name}-{seed}"
        env = dict(os.environ, KILN_HOME=f"{work}/home")
        start = time.time()
        p = subprocess.run([kiln, "train", "--data", path, "--target", target, "--seed", str(seed),
                            "--out", out, "--overwrite", "--json"], capture_output=True, text=True,
                           env=env)
        wall = time.time() - start
        if p.returncode != 0:
            sys.exit(f"{name} seed {seed}: kiln train failed:\n{p.stderr}")
        result = json.loads(p.stdout)
        manifest = json.load(open(f"{out}/bundle/manifest.json"))
        snapshot = json.load(open(glob.glob(f"{work}/home/snapshots/*-{manifest['lineage']['snapshot_hash'][:12]}/manifest.json")[0]))
        lines = {s: snapshot["splits"][s]["source_lines"] for s in ("train", "test")}
        def xy(split):
            picked = [body[line - 2] for line in lines[split]]
            x = np.array([[float(v) for j, v in enumerate(r) if j != t] for r in picked])
            y = np.array([r[t] for r in picked])
            return x, (y.astype(float) if regression else y)
        xtr, ytr = xy("train")
        xte, yte = xy("test")
        if regression:
            kiln_score = manifest["metrics"]["test"]["r2"]
            mlp = make_pipeline(StandardScaler(), MLPRegressor(random_state=seed, max_iter=5000))
            linear = make_pipeline(StandardScaler(), LinearRegression())
            tuned = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
            score = lambda m: r2_score(yte, m.fit(xtr, ytr).predict(xte))
        else:
            kiln_score = manifest["metrics"]["test"]["accuracy"]
            mlp = make_pipeline(StandardScaler(), MLPClassifier(random_state=seed, max_iter=2000))
            linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
            tuned = make_pipeline(StandardScaler(), LogisticRegressionCV(cv=5, max_iter=5000))
            score = lambda m: m.fit(xtr, ytr).score(xte, yte)
        kiln_scores.append(kiln_score)
        mlp_scores.append(score(mlp))
        linear_scores.append(score(linear))
        tuned_scores.append(score(tuned))
        walls.append(wall)
        search = result.get("model_search")
        chosen = search["candidates"][search["chosen"]] if search else None
        choices.append(f"{chosen['name']}/{chosen['weight_decay']:g}" if chosen else "-")
        print(f"  {name} seed {seed}: kiln {kiln_score:.4f} ({choices[-1]}, {wall:.1f} s)  "
              f"sklearn MLP {mlp_scores[-1]:.4f}  linear {linear_scores[-1]:.4f}  "
              f"CV-tuned linear {tuned_scores[-1]:.4f}", flush=True)
    metric = "R2" if regression else "accuracy"
    best_peer = max(np.mean(mlp_scores), np.mean(linear_scores))
    line = (f"{name} ({len(body)} rows, {len(lines['test'])} test, {metric}): kiln mean "
            f"{np.mean(kiln_scores):.4f}, sklearn MLP {np.mean(mlp_scores):.4f}, "
            f"{'LinearRegression' if regression else 'LogisticRegression'} "
            f"{np.mean(linear_scores):.4f} (CV-tuned: {np.mean(tuned_scores):.4f}); kiln - best peer {np.mean(kiln_scores) - best_peer:+.4f}; "
            f"kiln wall max {max(walls):.1f} s, mean {np.mean(walls):.1f} s")
    print(line, flush=True)
    summary.append(line)
print()
print("\n".join(summary))
