#!/usr/bin/env python3
"""The PyTorch peer of Kiln's GPU training (bench/gpu_bench.sh), on the machine's torch + CUDA.

  py_gpu_peer.py throughput cnn|mlp [--fast] [--epochs 2]
      The shared peer's model and settings (../shared/peers/py_train_fmnist.py: conv32-conv64-fc128
      or 784-256-128-10, batch 128, Adam 1e-3) on the GPU. Default: what a PyTorch user writes
      (a DataLoader over CPU tensors, each batch copied to the GPU, fp32). --fast: the peer's best
      settings: the whole dataset on the GPU, batches indexed there, bf16 autocast,
      channels_last, cudnn.benchmark. One line per epoch, as the shared peer prints them:
      "epoch E Ts N samples/s test_acc A".
  py_gpu_peer.py recipe
      examples/fashion-mnist/cnn.yaml written in PyTorch with the --fast settings: cnn-small
      (conv32-BN-ReLU-pool, conv64-BN-ReLU-pool, fc128, dropout 0.1), AdamW 3e-3 wd 5e-4,
      one-cycle to 1e-2 (25% rising), label smoothing 0.1, random horizontal flips, batch 256,
      7 epochs on the first 54,000 training images (Kiln keeps 10% for validation), test
      accuracy with flip test-time augmentation after each epoch. Prints the training seconds
      (evaluation excluded) at which the test accuracy first reached 92%.
Fashion-MNIST comes from KILN_FASHION_MNIST_DIR (default Debian's /usr/share/datasets/fashion-mnist).
"""
import argparse, gzip, os, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

D = os.environ.get("KILN_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def idx(name, offset):
    with gzip.open(os.path.join(D, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


p = argparse.ArgumentParser()
p.add_argument("mode", choices=["throughput", "recipe"])
p.add_argument("kind", nargs="?", default="cnn", choices=["cnn", "mlp"])
p.add_argument("--fast", action="store_true")
p.add_argument("--epochs", type=int, default=2)
a = p.parse_args()
dev = torch.device("cuda")
torch.manual_seed(0)
Xtr = torch.from_numpy(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).copy())
Ytr = torch.from_numpy(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
Xte = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).copy())
Yte = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
print(f"torch {torch.__version__} cuda {torch.version.cuda} on {torch.cuda.get_device_name(0)}",
      flush=True)


def sync():
    torch.cuda.synchronize()


def test_accuracy(net, fmt, flip=False, mean=0.0, std=1.0):
    net.eval()
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=a.fast or a.mode == "recipe"):
        x = ((Xte.to(dev).float() / 255 - mean) / std).contiguous(memory_format=fmt)
        logits = net(x).float()
        if flip:
            logits = (logits + net(torch.flip(x, [3])).float()) * 0.5
        acc = (logits.argmax(1).cpu() == Yte).float().mean().item()
    net.train()
    return acc


if a.mode == "throughput":
    if a.kind == "cnn":
        net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                            nn.ReLU(), nn.Linear(128, 10))
    fmt = torch.channels_last if a.fast and a.kind == "cnn" else torch.contiguous_format
    net = net.to(dev, memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    lossf = nn.CrossEntropyLoss()
    n = len(Ytr)
    if a.fast:
        torch.backends.cudnn.benchmark = True
        X, Y = Xtr.to(dev), Ytr.to(dev)
    else:
        ds = torch.utils.data.TensorDataset(Xtr.float() / 255, Ytr)
        dl = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True)
    for ep in range(a.epochs):
        sync()
        t = time.time()
        if a.fast:
            perm = torch.randperm(n, device=dev)
            batches = ((X[i].float().div_(255).contiguous(memory_format=fmt), Y[i])
                       for i in perm.split(128))
        else:
            batches = ((x.to(dev), y.to(dev)) for x, y in dl)
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", torch.bfloat16, enabled=a.fast):
                loss = lossf(net(x), y)
            loss.backward()
            opt.step()
        sync()
        dt = time.time() - t
        print(f"epoch {ep + 1} {dt:.2f}s {n / dt:.0f} samples/s test_acc {test_accuracy(net, fmt):.4f}",
              flush=True)
else:
    torch.backends.cudnn.benchmark = True
    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]
    net = nn.Sequential(*block(1, 32), *block(32, 64), nn.Flatten(), nn.Linear(64 * 7 * 7, 128),
                        nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    fmt = torch.channels_last
    net = net.to(dev, memory_format=fmt)
    X, Y = Xtr[:54000].to(dev), Ytr[:54000].to(dev)
    mean = (X.float() / 255).mean().item()
    std = (X.float() / 255).std().item()
    epochs, bs = 7, 256
    steps = epochs * (len(Y) // bs)
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=steps, pct_start=0.25)
    lossf = nn.CrossEntropyLoss(label_smoothing=0.1)
    trained = 0.0
    reached = None
    for ep in range(epochs):
        sync()
        t = time.time()
        perm = torch.randperm(len(Y), device=dev)[: (len(Y) // bs) * bs]
        for i in perm.split(bs):
            x = (X[i].float() / 255 - mean) / std
            flip = torch.rand(len(i), device=dev) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), torch.flip(x, [3]), x).contiguous(memory_format=fmt)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", torch.bfloat16):
                loss = lossf(net(x), Y[i])
            loss.backward()
            opt.step()
            sched.step()
        sync()
        trained += time.time() - t
        acc = test_accuracy(net, fmt, flip=True, mean=mean, std=std)
        print(f"epoch {ep + 1}: {trained:.2f}s of training, test_acc {acc:.4f}", flush=True)
        if reached is None and acc >= 0.92:
            reached = trained
    print(f"time to 92%: {reached:.2f} s" if reached is not None else "time to 92%: not reached",
          flush=True)
