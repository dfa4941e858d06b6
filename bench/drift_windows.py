#!/usr/bin/env python3
"""Windows of Fashion-MNIST test images for bench/drift_bench.sh, and the analysis of what
`kiln monitor drift --json` said about them.

  drift_windows.py make DIR [--images F] [--sizes 250,500,1000] [--clean 60,100,60]
                            [--shifted 10,20,10] [--mixed N] [--seed S]
      writes each window as a one-split snapshot directory DIR/<name>/ (test_x.npy: N×1×28×28,
      values 0..255, uint8 or float32 for brightness; test_y.npy: the true labels) and
      DIR/manifest.json.
  drift_windows.py analyze DIR
      reads DIR/<name>.json (one `kiln monitor drift --json` output per window) and prints the
      detection / false-alarm table (95% Wilson intervals) and alternative decision rules
      recomputed from the per-feature p-values.

Windows: "clean" are W test images drawn without replacement (disjoint within one permutation of
the 10,000 images, new permutation once it is used up); "bright" the same draw with every pixel
×0.7; "shift_rd" translated right and down by 3 pixels (zero fill); "shift_rand" each image
translated by 3 pixels in a random one of the 4 directions. "mixed_<kind>_k<k>": a sliding
window of the last 1000 requests whose last k rows are shifted (the first 1000 − k clean).
Needs numpy only.
"""
import argparse
import gzip
import hashlib
import io
import json
import math
import os
import sys

import numpy as np

DEFAULT_IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def load_images(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def load_labels(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=8)


def translate(x, dy, dx):
    """Shifts images (N×28×28) by (dy, dx) pixels, zero fill."""
    out = np.zeros_like(x)
    h, w = x.shape[1:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, yd, xd] = x[:, ys, xs]
    return out


DIRECTIONS = [(3, 0), (-3, 0), (0, 3), (0, -3)]


def apply_shift(kind, x, rng):
    if kind == "clean":
        return x
    if kind == "bright":
        # float32 keeps the exact ×0.7 (uint8 would round it)
        return x.astype(np.float32) * 0.7
    if kind == "shift_rd":
        return translate(x, 3, 3)
    if kind == "shift_rand":
        out = np.empty_like(x)
        d = rng.integers(0, 4, size=len(x))
        for i, (dy, dx) in enumerate(DIRECTIONS):
            m = d == i
            if m.any():
                out[m] = translate(x[m], dy, dx)
        return out
    raise ValueError(kind)


class Sampler:
    """Draws windows without replacement; disjoint until a permutation is used up."""

    def __init__(self, n, rng):
        self.n, self.rng, self.perm, self.pos = n, rng, None, n

    def take(self, w):
        if self.pos + w > self.n:
            self.perm, self.pos = self.rng.permutation(self.n), 0
        idx = self.perm[self.pos:self.pos + w]
        self.pos += w
        return idx


CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


def save(d, name, x, y):
    """Writes the window as a one-split ("test") Kiln snapshot directory d/name: `kiln monitor
    drift --data` takes a CSV (tables only), a dataset spec or a snapshot directory."""
    x = x.reshape(len(x), 1, 28, 28)
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    out = os.path.join(d, name)
    os.makedirs(out, exist_ok=True)
    files = {}
    for fname, arr in [("test_x.npy", x), ("test_y.npy", y.astype(np.int64))]:
        buf = io.BytesIO()
        np.save(buf, arr)
        with open(os.path.join(out, fname), "wb") as f:
            f.write(buf.getvalue())
        files[fname] = hashlib.sha256(buf.getvalue()).hexdigest()
    manifest = {
        "name": "drift-window", "kind": "images", "task": "classification",
        "schema": {"input": {"dtype": str(x.dtype), "shape": [1, 28, 28], "layout": "NCHW"},
                   "target": {"name": "label", "type": "categorical", "classes": CLASSES}},
        "splits": {"test": {"rows": len(x), "x_shape": list(x.shape)}},
        "format": "kiln.snapshot", "format_version": 1, "files": files,
        "content_hash": hashlib.sha256("".join(sorted(files.values())).encode()).hexdigest()}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def cmd_make(a):
    os.makedirs(a.dir, exist_ok=True)
    imgs = load_images(a.images)
    labels = load_labels(a.images.replace("images-idx3", "labels-idx1"))
    rng = np.random.default_rng(a.seed)
    manifest = []
    sizes = [int(s) for s in a.sizes.split(",")]
    clean = [int(s) for s in a.clean.split(",")]
    shifted = [int(s) for s in a.shifted.split(",")]
    for w, n_clean, n_shifted in zip(sizes, clean, shifted):
        for kind, count in [("clean", n_clean), ("bright", n_shifted), ("shift_rd", n_shifted),
                            ("shift_rand", n_shifted)]:
            sampler = Sampler(len(imgs), rng)
            for i in range(count):
                name = f"w{w}_{kind}_{i:03d}"
                idx = sampler.take(w)
                save(a.dir, name, apply_shift(kind, imgs[idx], rng), labels[idx])
                manifest.append({"name": name, "window": w, "kind": kind, "k": w})
    # sliding window of the last 1000 requests, the last k of them shifted
    for kind in ["bright", "shift_rd"]:
        for k in [100, 250, 500]:
            sampler = Sampler(len(imgs), rng)
            for i in range(a.mixed):
                idx = sampler.take(1000)
                x = imgs[idx].astype(np.float32)
                x[1000 - k:] = apply_shift(kind, imgs[idx[1000 - k:]], rng)
                name = f"mixed_{kind}_k{k}_{i:03d}"
                save(a.dir, name, x, labels[idx])
                manifest.append({"name": name, "window": 1000, "kind": f"mixed_{kind}", "k": k})
    with open(os.path.join(a.dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=0)
    print(f"{len(manifest)} windows in {a.dir}")


def wilson(k, n, z=1.959964):
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def fmt_rate(k, n):
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def decide(rep, alpha=0.05, share=0.5, bonferroni=False, js=0.1):
    """Recomputes dataset drift from one report's per-feature statistics."""
    feats = rep["features"]
    ks = [f for f in feats if f["test"] == "ks"]
    a = alpha / len(ks) if bonferroni else alpha
    drifted = sum(f["p_value"] <= a for f in ks)
    drifted += sum(f["statistic"] >= js for f in feats if f["test"] == "jensen_shannon")
    return drifted / len(feats) >= share


def cmd_analyze(a):
    with open(os.path.join(a.dir, "manifest.json")) as f:
        manifest = json.load(f)
    groups = {}
    missing = 0
    for m in manifest:
        path = os.path.join(a.dir, m["name"] + ".json")
        if not os.path.exists(path):
            missing += 1
            continue
        with open(path) as f:
            rep = json.load(f)
        groups.setdefault((m["kind"], m["window"], m["k"]), []).append(rep)

    if missing:
        print(f"{missing} windows have no report yet (skipped)")
    # sanity: the recomputation reproduces Kiln's own flag at the default rule
    mismatch = sum(decide(r) != r["dataset_drift"] for g in groups.values() for r in g)
    print(f"recomputed default rule disagrees with kiln on {mismatch} windows")

    print("\n| windows | W | dataset_drift flagged (95% Wilson CI) | any feature drifted |"
          " drift_share median [min, max] | prediction_drift |")
    print("|---|---:|---|---|---|---|")
    order = ["clean", "bright", "shift_rd", "shift_rand", "mixed_bright", "mixed_shift_rd"]
    keys = sorted(groups, key=lambda t: (order.index(t[0]), t[1], t[2]))
    for key in keys:
        g = groups[key]
        n = len(g)
        flag = sum(r["dataset_drift"] for r in g)
        anyf = sum(any(f["drifted"] for f in r["features"]) for r in g)
        sh = np.array([r["drift_share"] for r in g])
        pred = sum(r.get("prediction_drift", False) for r in g)
        label = key[0] if not key[0].startswith("mixed") else f"{key[0]}, last k={key[2]}"
        print(f"| {label} | {key[1]} | {fmt_rate(flag, n)} | {fmt_rate(anyf, n)} |"
              f" {np.median(sh):.2f} [{sh.min():.2f}, {sh.max():.2f}] | {pred}/{n} |")

    # per-feature false-positive rates on clean windows
    print("\nclean windows, share of windows where each feature drifted:")
    for w in sorted({k[1] for k in groups if k[0] == "clean"}):
        g = groups[("clean", w, w)]
        names = [f["name"] for f in g[0]["features"]]
        rates = {nm: np.mean([r["features"][i]["drifted"] for r in g]) for i, nm in enumerate(names)}
        print(f"  W={w}: " + ", ".join(f"{nm} {100 * v:.0f}%" for nm, v in rates.items()))
        js = [r["features"][-1]["statistic"] for r in g if r["features"][-1]["test"] == "jensen_shannon"]
        if js:
            print(f"  W={w}: clean JS distance median {np.median(js):.4f} max {np.max(js):.4f}")

    print("\nsmallest KS p-value per window (quantiles 5/50/95%):")
    for key in keys:
        mp = np.array([min(f["p_value"] for f in r["features"] if f["test"] == "ks")
                       for r in groups[key]])
        q = np.quantile(mp, [0.05, 0.5, 0.95])
        print(f"  {key[0]} W{key[1]} k{key[2]}: " + " / ".join(f"{v:.2g}" for v in q))

    rules = [("default: KS alpha 0.05, share 0.5", dict()),
             ("KS alpha 0.05, share 0.25", dict(share=0.25)),
             ("KS alpha 0.01, share 0.5", dict(alpha=0.01)),
             ("KS alpha 0.01, share 0.25", dict(alpha=0.01, share=0.25)),
             ("KS Bonferroni 0.05/18, share 0.5", dict(bonferroni=True)),
             ("KS Bonferroni 0.05/18, any feature (share > 0)", dict(bonferroni=True, share=1e-9)),
             ("KS Bonferroni 0.01/18, any feature", dict(alpha=0.01, bonferroni=True, share=1e-9)),
             ("KS alpha 0.05, share 0.75", dict(share=0.75))]
    print("\nalternative rules (flagged share per group):")
    hdr = [(k[0] if not k[0].startswith("mixed") else f"{k[0]} k{k[2]}") + f" W{k[1]}" for k in keys]
    print("| rule | " + " | ".join(hdr) + " |")
    print("|---|" + "---:|" * len(keys))
    for label, kw in rules:
        cells = []
        for key in keys:
            g = groups[key]
            k = sum(decide(r, **kw) for r in g)
            cells.append(f"{100 * k / len(g):.0f}%")
        print(f"| {label} | " + " | ".join(cells) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--images", default=DEFAULT_IMAGES)
    m.add_argument("--sizes", default="250,500,1000")
    m.add_argument("--clean", default="60,100,60", help="clean windows per size")
    m.add_argument("--shifted", default="10,20,10", help="windows per size of each shift kind")
    m.add_argument("--mixed", type=int, default=10, help="sliding windows per (shift, k)")
    m.add_argument("--seed", type=int, default=16)
    z = sub.add_parser("analyze")
    z.add_argument("dir")
    a = p.parse_args()
    return cmd_make(a) if a.cmd == "make" else cmd_analyze(a)


if __name__ == "__main__":
    sys.exit(main())
