#!/usr/bin/env python3
"""Fine-tuning from the registry vs training from scratch (issue 18's target): pretrain the
default CNN (examples/fashion-mnist/cnn.yaml) on Fashion-MNIST classes 0-4, push it, then learn
classes 5-9 from 50 training images per class, once fine-tuned from the registered model
(`kiln train --init fmnist-a@1`) and once from scratch, the same network, recipe and epochs;
both scored on all 5,000 test images of classes 5-9 (the bundle's own test metrics: model.pt, as
served). Several draws of the 250 images (--seeds).

  fine_tune_bench.py --kiln build/kiln [--seeds 3] [--pretrain-epochs 4] [--epochs 30]

The class subsets are written as IDX .gz files with their dataset specs in a temp dir (numpy
only); KILN_HOME is a temp dir too. Prints a JSON report.
"""
import argparse
import gzip
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


def load(prefix):
    with gzip.open(f"{DATA}/{prefix}-images-idx3-ubyte.gz", "rb") as f:
        x = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{DATA}/{prefix}-labels-idx1-ubyte.gz", "rb") as f:
        y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return x, y


def write_idx(path, x, y):
    with gzip.open(path + "-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, len(x), 28, 28) + x.astype(np.uint8).tobytes())
    with gzip.open(path + "-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, len(y)) + y.astype(np.uint8).tobytes())


def subset(x, y, classes, per_class=None, rng=None):
    idx = []
    for k in classes:
        members = np.flatnonzero(y == k)
        if per_class is not None:
            members = rng.choice(members, per_class, replace=False)
        idx.extend(members.tolist())
    idx = np.array(sorted(idx))
    remap = {k: i for i, k in enumerate(classes)}
    return x[idx], np.array([remap[v] for v in y[idx]])


def write_spec(dir_, name, classes, val):
    with open(f"{dir_}/{name}.yaml", "w") as f:
        f.write(f"name: {name}\nkind: images\nformat: idx\nroot: .\nsplits:\n"
                f"  train: {{images: {name}-train-images-idx3-ubyte.gz, "
                f"labels: {name}-train-labels-idx1-ubyte.gz}}\n"
                f"  test: {{images: {name}-test-images-idx3-ubyte.gz, "
                f"labels: {name}-test-labels-idx1-ubyte.gz}}\n"
                f"classes: {json.dumps([CLASSES[k] for k in classes])}\n"
                f"split: {{val: {val}, seed: 42}}\n")
    return f"{dir_}/{name}.yaml"


def train(kiln, env, args, out):
    t0 = time.time()
    r = subprocess.run([kiln, "train", *args, "--out", out], env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(f"kiln train failed: {r.stderr[-3000:]}")
    m = json.load(open(f"{out}/bundle/manifest.json"))
    return m["metrics"]["test"]["accuracy"], time.time() - t0, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--per-class", type=int, default=50)
    args = ap.parse_args()
    kiln = os.path.abspath(args.kiln)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cnn = f"{repo}/examples/fashion-mnist/cnn.yaml"
    work = tempfile.mkdtemp(prefix="kiln-finetune-")
    env = dict(os.environ, KILN_HOME=f"{work}/home")
    report = {"per_class": args.per_class, "epochs": args.epochs, "runs": []}
    try:
        xtr, ytr = load("train")
        xte, yte = load("t10k")
        a, b = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
        write_idx(f"{work}/a-train", *subset(xtr, ytr, a))
        write_idx(f"{work}/a-test", *subset(xte, yte, a))
        spec_a = write_spec(work, "a", a, 0.1)
        acc, secs, _ = train(kiln, env, [cnn, "--set", f"data={spec_a}", "--set",
                                         f"epochs={args.pretrain_epochs}"], f"{work}/a")
        report["pretrain"] = {"classes": [CLASSES[k] for k in a], "test_accuracy": acc,
                              "seconds": round(secs, 1)}
        subprocess.run([kiln, "registry", "push", f"{work}/a/bundle", "--name", "fmnist-a"],
                       env=env, check=True, capture_output=True)
        write_idx(f"{work}/b-test", *subset(xte, yte, b))
        common = ["--set", f"epochs={args.epochs}", "--set", "early_stopping.patience=0"]
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            write_idx(f"{work}/b-train", *subset(xtr, ytr, b, args.per_class, rng))
            spec_b = write_spec(work, "b", b, 0.1)
            scratch, t_s, _ = train(kiln, env, [cnn, "--set", f"data={spec_b}", *common],
                                    f"{work}/scratch-{seed}")
            tuned, t_f, log = train(kiln, env, [cnn, "--set", f"data={spec_b}", "--init",
                                                "fmnist-a@1", *common], f"{work}/tuned-{seed}")
            init_line = next((l for l in log.splitlines() if l.startswith("init from")), "")
            report["runs"].append({"draw": seed, "scratch": scratch, "fine_tuned": tuned,
                                   "gain_points": round(100 * (tuned - scratch), 2),
                                   "scratch_s": round(t_s, 1), "fine_tuned_s": round(t_f, 1),
                                   "init": init_line})
            print(json.dumps(report["runs"][-1]), file=sys.stderr)
        gains = [r["gain_points"] for r in report["runs"]]
        report["median_gain_points"] = statistics.median(gains)
        report["min_gain_points"] = min(gains)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
