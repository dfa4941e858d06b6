#!/usr/bin/python3
"""The PyTorch peer of `ema:`: the peer CNN of /work/shared/peers/py_train_fmnist.py (conv32-conv64-
fc128, batch 128, Adam 1e-3, 2 threads, fp32) trained one epoch on Fashion-MNIST without and with
torch.optim.swa_utils.AveragedModel updated after every step (EMA decay 0.999, its avg_fn),
each twice, interleaved. Prints samples/s of each and the EMA's cost as a share of a step.
Usage: py_ema_peer.py [--steps N]"""
import argparse, gzip, time, numpy as np, torch, torch.nn as nn
from torch.optim.swa_utils import AveragedModel

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=200)
a = p.parse_args()
D = "/usr/share/datasets/fashion-mnist/"
X = np.frombuffer(gzip.open(D + "train-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
Y = np.frombuffer(gzip.open(D + "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
torch.set_num_threads(2); torch.manual_seed(0)
ds = torch.utils.data.TensorDataset(torch.tensor(X, dtype=torch.float32) / 255.0, torch.tensor(Y, dtype=torch.long))

def run(ema):
    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3); lossf = nn.CrossEntropyLoss()
    avg = AveragedModel(net, avg_fn=lambda av, p, n: 0.999 * av + 0.001 * p) if ema else None
    dl = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True)
    n, t = 0, time.time()
    for i, (x, y) in enumerate(dl):
        if i == a.steps: break
        opt.zero_grad(); lossf(net(x), y).backward(); opt.step()
        if avg is not None: avg.update_parameters(net)
        n += x.shape[0]
    return n / (time.time() - t)

rates = {False: [], True: []}
for _ in range(2):
    for ema in (False, True): rates[ema].append(run(ema))
off, on = max(rates[False]), max(rates[True])
print(f"peer AveragedModel: without {off:.0f} samples/s, with EMA every step {on:.0f} samples/s "
      f"({(off / on - 1) * 100:.1f}% per step)")
