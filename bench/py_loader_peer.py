#!/usr/bin/python3
"""Peer for the Kiln loader benchmark: what a PyTorch user writes to feed Fashion-MNIST with the
same augmentation (pad-2 random crop, horizontal flip p 0.5, gaussian noise std 0.02, random
erasing p 0.25), batch 128, shuffled, through torch.utils.data.DataLoader with torchvision
transforms applied per sample. Usage: py_loader_peer.py [epochs] [workers]"""
import gzip, sys, time
import numpy as np, torch, torchvision.transforms as T

D = "/usr/share/datasets/fashion-mnist/"
def idx(path, off): return np.frombuffer(gzip.open(D + path).read(), np.uint8, offset=off)
X = torch.tensor(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28))
Y = torch.tensor(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(1)
torch.manual_seed(0)

augment = T.Compose([
    T.RandomCrop(28, padding=2),
    T.RandomHorizontalFlip(0.5),
    T.Lambda(lambda x: x + 0.02 * torch.randn_like(x)),
    T.Normalize((0.2860,), (0.3530,)),
    T.RandomErasing(p=0.25),
])

class Augmented(torch.utils.data.Dataset):
    def __len__(self): return len(X)
    def __getitem__(self, i): return augment(X[i].float() / 255.0), Y[i]

dl = torch.utils.data.DataLoader(Augmented(), batch_size=128, shuffle=True, num_workers=workers,
                                 persistent_workers=workers > 0)
for ep in range(epochs + 1):  # the first epoch warms up (worker start, page cache)
    t = time.time(); n = 0
    for x, y in dl: n += x.shape[0]
    dt = time.time() - t
    if ep > 0: print(f"peer epoch {ep}: {n / dt:.0f} samples/s ({dt:.2f} s)", flush=True)
