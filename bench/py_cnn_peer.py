#!/usr/bin/python3
"""The PyTorch peer of Kiln's served CNN: the network of a Kiln bundle rebuilt as an eager
nn.Sequential from manifest.json + weights.pt, with the same preprocessing and flip test-time
augmentation folded into forward(), timed on one thread as eager fp32, frozen TorchScript fp32, and
bf16 autocast + channels_last (PyTorch's fastest float path for CNNs on CPU). Prints one line per
path: "peer PATH batch B: N samples/s". With --int8, also PyTorch's own eager-mode static
quantisation of the same network (torch.ao.quantization: conv+bn+relu and linear+relu fused, the
default onednn qconfig, engine onednn, calibrated on the first --calibration-rows Fashion-MNIST
training images, then scripted), with its test accuracy on the 10,000 test images.
Usage: py_cnn_peer.py BUNDLE_DIR [--batch 1 64] [--seconds 3] [--int8] [--calibration-rows 1000]"""
import argparse, ctypes, json, time
import torch, torch.nn as nn

# glibc's allocator as kiln-engine sets it (kiln::configure_allocator_for_tensors): without it
# every large activation is a fresh mmap whose pages fault on first touch, which made fp32
# convolutions at batch 64 5-8x slower in both (docs/benchmarks.md).
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap at all
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD

p = argparse.ArgumentParser()
p.add_argument("bundle")
p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
p.add_argument("--seconds", type=float, default=3)
p.add_argument("--int8", action="store_true")
p.add_argument("--calibration-rows", type=int, default=1000)
a = p.parse_args()
torch.set_num_threads(1)
m = json.load(open(a.bundle + "/manifest.json"))
state = torch.load(a.bundle + "/weights.pt")
c, h, w = m["input_shape"]
layers, shape = [], [c, h, w]
for i, l in enumerate(m["model"]["layers"]):
    t = l["type"]
    if t == "conv2d":
        k = l.get("kernel", 3); pad = l.get("padding", 0); out = l["out"]
        layers.append(nn.Conv2d(shape[0], out, k, l.get("stride", 1), pad, bias=l.get("bias", True)))
        shape = [out, (shape[1] + 2 * pad - k) // l.get("stride", 1) + 1, (shape[2] + 2 * pad - k) // l.get("stride", 1) + 1]
    elif t == "batchnorm2d": layers.append(nn.BatchNorm2d(shape[0]))
    elif t == "relu": layers.append(nn.ReLU())
    elif t == "maxpool2d":
        k = l.get("kernel", 2); layers.append(nn.MaxPool2d(k)); shape = [shape[0], shape[1] // k, shape[2] // k]
    elif t == "flatten": layers.append(nn.Flatten()); shape = [shape[0] * shape[1] * shape[2]]
    elif t == "linear":
        out = m["outputs"] if l["out"] == "outputs" else l["out"]
        layers.append(nn.Linear(shape[0], out, bias=l.get("bias", True))); shape = [out]
    elif t == "dropout": layers.append(nn.Dropout(l.get("p", 0.5)))
    else: raise SystemExit(f"layer {i}: {t} not rebuilt by this peer")
net = nn.Sequential(*layers)
net.load_state_dict({k.replace("layers.", ""): v for k, v in state.items()}, strict=False)
net.eval()
pre = m["preprocessing"]
mean = torch.tensor(pre["mean"]).view(1, -1, 1, 1); std = torch.tensor(pre["std"]).view(1, -1, 1, 1)
flip = m.get("test_time_augmentation") == "flip"

class Served(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.scale, self.flip = net, float(pre["input_scale"]), flip
        self.register_buffer("mean", mean.clone()); self.register_buffer("std", std.clone())
    def forward(self, x):
        x = (x * self.scale - self.mean) / self.std
        if self.flip: return (self.net(x) + self.net(torch.flip(x, [3]))) * 0.5
        return self.net(x)

def bench(f, x):
    with torch.inference_mode():
        for _ in range(10): f(x)
        t = time.time(); n = 0
        while time.time() - t < a.seconds: f(x); n += x.shape[0]
    return n / (time.time() - t)

eager = Served(net).eval()
frozen = torch.jit.freeze(torch.jit.script(Served(net).eval()))
import copy
# A copy: .to(memory_format=...) converts a module's parameters in place, and the eager fp32 path
# above must keep NCHW weights (channels_last fp32 is its own path below).
cl = Served(copy.deepcopy(net)).eval().to(memory_format=torch.channels_last)
def autocast(x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return cl(x.contiguous(memory_format=torch.channels_last))
with torch.inference_mode():  # the rebuilt network is Kiln's: same logits as its model.pt
    probe = torch.rand(4, c, h, w) * 255
    diff = (eager(probe) - torch.jit.load(a.bundle + "/model.pt")(probe)).abs().max().item()
    if diff > 1e-3: raise SystemExit(f"peer network differs from the bundle's model.pt by {diff}")
def fp32_channels_last(x):
    return cl(x.contiguous(memory_format=torch.channels_last))
paths = [("eager fp32", eager), ("frozen TorchScript fp32", frozen),
         ("eager fp32 channels_last", fp32_channels_last),
         ("bf16 autocast + channels_last", autocast)]

if a.int8:
    import gzip
    import numpy as np
    from torch.ao import quantization as tq
    torch.backends.quantized.engine = "onednn"
    def idx_images(name):
        with gzip.open(f"/usr/share/datasets/fashion-mnist/{name}-images-idx3-ubyte.gz") as f:
            return torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32))
    def idx_labels(name):
        with gzip.open(f"/usr/share/datasets/fashion-mnist/{name}-labels-idx1-ubyte.gz") as f:
            return torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64))
    qnet = copy.deepcopy(net).eval()
    mods = list(qnet)
    groups, i = [], 0
    while i < len(mods):
        if isinstance(mods[i], nn.Conv2d) and i + 2 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d) and isinstance(mods[i + 2], nn.ReLU):
            groups.append([str(i), str(i + 1), str(i + 2)]); i += 3
        elif isinstance(mods[i], nn.Linear) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU):
            groups.append([str(i), str(i + 1)]); i += 2
        else:
            i += 1
    qnet = tq.fuse_modules(qnet, groups)
    class Quantised(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.quant, self.inner, self.dequant = tq.QuantStub(), inner, tq.DeQuantStub()
            self.scale, self.flip = float(pre["input_scale"]), flip
            self.register_buffer("mean", mean.clone()); self.register_buffer("std", std.clone())
        def forward(self, x):
            x = (x * self.scale - self.mean) / self.std
            n = x.size(0)
            if self.flip: x = torch.cat([x, torch.flip(x, [3])], 0)
            y = self.dequant(self.inner(self.quant(x)))
            if self.flip: return (y[:n] + y[n:]) * 0.5
            return y
    q = Quantised(qnet).eval()
    q.qconfig = tq.get_default_qconfig("onednn")
    tq.prepare(q, inplace=True)
    with torch.inference_mode():
        calib = idx_images("train")[: a.calibration_rows]
        for i in range(0, len(calib), 256): q(calib[i:i + 256])
    tq.convert(q, inplace=True)
    q = torch.jit.script(q)
    xt, yt = idx_images("t10k"), idx_labels("t10k")
    with torch.inference_mode():
        pred = torch.cat([q(xt[i:i + 500]).argmax(1) for i in range(0, len(xt), 500)])
    print(f"peer int8 (eager-mode static PTQ, onednn) test accuracy {(pred == yt).float().mean().item():.4f}")
    paths.append(("int8 eager-mode static PTQ (onednn)", q))

for b in a.batch:
    x = torch.rand(b, c, h, w) * 255
    for name, f in paths:
        print(f"peer {name} batch {b}: {bench(f, x):.0f} samples/s", flush=True)
