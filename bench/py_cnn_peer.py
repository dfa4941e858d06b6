#!/usr/bin/python3
"""The PyTorch peer of Kiln's served CNN: the network of a Kiln bundle rebuilt as an eager
nn.Sequential from manifest.json + weights.pt, with the same preprocessing and flip test-time
augmentation folded into forward(), timed on one thread as eager fp32, frozen TorchScript fp32, and
bf16 autocast + channels_last (PyTorch's fastest float path for CNNs on CPU). Prints one line per
path: "peer PATH batch B: N samples/s".
Usage: py_cnn_peer.py BUNDLE_DIR [--batch 1 64] [--seconds 3]"""
import argparse, json, time
import torch, torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("bundle")
p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
p.add_argument("--seconds", type=float, default=3)
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
cl = Served(net).eval().to(memory_format=torch.channels_last)
def autocast(x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return cl(x.contiguous(memory_format=torch.channels_last))
with torch.inference_mode():  # the rebuilt network is Kiln's: same logits as its model.pt
    probe = torch.rand(4, c, h, w) * 255
    diff = (eager(probe) - torch.jit.load(a.bundle + "/model.pt")(probe)).abs().max().item()
    if diff > 1e-3: raise SystemExit(f"peer network differs from the bundle's model.pt by {diff}")
for b in a.batch:
    x = torch.rand(b, c, h, w) * 255
    for name, f in [("eager fp32", eager), ("frozen TorchScript fp32", frozen),
                    ("bf16 autocast + channels_last", autocast)]:
        print(f"peer {name} batch {b}: {bench(f, x):.0f} samples/s", flush=True)
