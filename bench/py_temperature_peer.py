#!/usr/bin/python3
"""The Python peer of `calibration: temperature`: the reference recipe of Guo et al. 2017 as
gpleiss/temperature_scaling implements it (ModelWithTemperature: one nn.Parameter T, L-BFGS
lr 0.01, max_iter 50, on the val split's NLL), fitted on the logits of an UNCALIBRATED Kiln
bundle's model.pt (torch.jit.load) over its snapshot's val rows, then scored on the test rows.
Prints T, the val NLL at T, the test NLL and ECE (15 bins) before and after, and the fit's
seconds; then the exact minimiser of the val NLL (SciPy's bounded Brent search on log T), the
figure Kiln's bisection should match.
Usage: py_temperature_peer.py BUNDLE_DIR SNAPSHOT_DIR"""
import json, sys, time
import numpy as np, torch


def split(snapshot, name):
    raw = f"{snapshot}/{name}_raw_x.npy"
    try:
        x = np.load(raw)
    except FileNotFoundError:
        x = np.load(f"{snapshot}/{name}_x.npy")
    return torch.from_numpy(np.ascontiguousarray(x)).float(), torch.from_numpy(np.load(f"{snapshot}/{name}_y.npy")).long()


def ece(logits, y, bins=15):
    conf, pred = torch.softmax(logits.double(), 1).max(1)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.double().mean() * abs(pred[inside].eq(y[inside]).double().mean() - conf[inside].mean())
    return float(total)


def main():
    bundle, snapshot = sys.argv[1], sys.argv[2]
    module = torch.jit.load(f"{bundle}/model.pt").eval()
    with torch.no_grad():
        val_x, val_y = split(snapshot, "val")
        test_x, test_y = split(snapshot, "test")
        val = torch.cat([module(val_x[i:i + 512]) for i in range(0, len(val_x), 512)]).float()
        test = torch.cat([module(test_x[i:i + 512]) for i in range(0, len(test_x), 512)]).float()
    start = time.perf_counter()
    temperature = torch.nn.Parameter(torch.ones(1) * 1.5)  # the reference's starting point
    nll = torch.nn.CrossEntropyLoss()
    opt = torch.optim.LBFGS([temperature], lr=0.01, max_iter=50)

    def closure():
        opt.zero_grad()
        loss = nll(val / temperature, val_y)
        loss.backward()
        return loss

    opt.step(closure)
    seconds = time.perf_counter() - start
    t = float(temperature.item())
    before = (float(nll(test, test_y)), ece(test, test_y))
    after = (float(nll(test / t, test_y)), ece(test / t, test_y))
    val_nll = lambda t: float(nll(val / t, val_y))
    print(f"peer (gpleiss ModelWithTemperature, L-BFGS): T {t:.4f} (val NLL {val_nll(t):.4f}), "
          f"fit {1000 * seconds:.1f} ms; test NLL {before[0]:.4f} -> {after[0]:.4f}, "
          f"ECE {before[1]:.4f} -> {after[1]:.4f}")
    from scipy.optimize import minimize_scalar
    with torch.no_grad():
        best = minimize_scalar(lambda u: val_nll(float(np.exp(u))), bounds=(np.log(0.05), np.log(20)),
                               method="bounded", options={"xatol": 1e-8})
    t = float(np.exp(best.x))
    print(f"exact val-NLL minimiser (SciPy bounded Brent on log T): T {t:.4f} (val NLL {val_nll(t):.4f}); "
          f"test NLL {float(nll(test / t, test_y)):.4f}, ECE {ece(test / t, test_y):.4f}")


if __name__ == "__main__":
    main()
