#!/usr/bin/python3
"""The PyTorch peer of `kiln train --nproc 2`: torch.nn.parallel.DistributedDataParallel (Gloo over
loopback, torch.multiprocessing.spawn: Debian 12's torchrun 1.13 does not start under Python 3.11)
training the peer CNN of ../shared/peers/py_train_fmnist.py (conv32-conv64-fc128, bf16 autocast +
channels_last, Adam 1e-3) on Fashion-MNIST with a global batch of 256: once as one process with 2
threads, once as 2 ranks with 1 thread each (DistributedSampler, 128 rows per rank per step).
Prints samples/s per epoch, the median, and test accuracy for each, then the 2-process/1-process
ratio. --accumulate N (> 1) adds 2 ranks with batches of 256/N accumulated N to a step under
DDP's no_sync() (one all-reduce a step), each batch's loss weighted 1/N.
Usage: py_ddp_peer.py [--epochs 2] [--accumulate 1]"""
import argparse, contextlib, gzip, os, socket, statistics, time
import numpy as np, torch, torch.distributed as dist, torch.multiprocessing as mp, torch.nn as nn

D = "/usr/share/datasets/fashion-mnist/"
GLOBAL_BATCH = 256


def idx(path, off):
    return np.frombuffer(gzip.open(D + path).read(), np.uint8, offset=off)


def net():
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def run(rank, world, port, epochs, out, accumulate=1):
    torch.set_num_threads(2 // world)
    torch.manual_seed(0)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    xtr = torch.tensor(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28), dtype=torch.float32) / 255
    ytr = torch.tensor(idx("train-labels-idx1-ubyte.gz", 8), dtype=torch.long)
    ds = torch.utils.data.TensorDataset(xtr, ytr)
    sampler = torch.utils.data.distributed.DistributedSampler(ds, world, rank, seed=0) if world > 1 else None
    dl = torch.utils.data.DataLoader(ds, batch_size=GLOBAL_BATCH // world // accumulate,
                                     shuffle=sampler is None, sampler=sampler)
    model = net().to(memory_format=torch.channels_last)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    lossf = nn.CrossEntropyLoss()
    rates = []
    for ep in range(epochs):
        if sampler:
            sampler.set_epoch(ep)
        model.train()
        t = time.time()
        for k, (x, y) in enumerate(dl):
            if k % accumulate == 0:
                opt.zero_grad()
            last = (k + 1) % accumulate == 0 or k + 1 == len(dl)
            # All but a step's last batch add into .grad without an all-reduce.
            with model.no_sync() if world > 1 and not last else contextlib.nullcontext():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = lossf(model(x.contiguous(memory_format=torch.channels_last)), y)
                (loss / accumulate).backward()
            if last:
                opt.step()
        if world > 1:
            dist.barrier()
        rates.append(len(ds) / (time.time() - t))
    if rank == 0:
        xte = torch.tensor(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28), dtype=torch.float32) / 255
        yte = idx("t10k-labels-idx1-ubyte.gz", 8)
        model.eval()
        with torch.no_grad():
            pred = model(xte.contiguous(memory_format=torch.channels_last)).argmax(1).numpy()
        out.put((rates, float((pred == yte).mean())))
    if world > 1:
        dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--accumulate", type=int, default=1)
    a = p.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    runs = [(1, 1), (2, 1)] + ([(2, a.accumulate)] if a.accumulate > 1 else [])
    for world, accumulate in runs:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        q = ctx.Queue()
        procs = [ctx.Process(target=run, args=(r, world, port, a.epochs, q, accumulate))
                 for r in range(world)]
        for pr in procs:
            pr.start()
        rates, acc = q.get()
        for pr in procs:
            pr.join()
        results[(world, accumulate)] = statistics.median(rates)
        how = f", batches of {GLOBAL_BATCH // accumulate} accumulated {accumulate}" if accumulate > 1 else ""
        print(f"peer PyTorch DDP, {world} process(es) x {2 // world} thread(s){how}: samples/s per epoch "
              + " / ".join(f"{r:,.0f}" for r in rates)
              + f", median {results[(world, accumulate)]:,.0f}; test accuracy {acc:.4f}", flush=True)
    print(f"peer 2-process / 1-process samples/s: {results[(2, 1)] / results[(1, 1)]:.2f}x")
    if a.accumulate > 1:
        print(f"peer 2-process accumulated / 2-process samples/s: "
              f"{results[(2, a.accumulate)] / results[(2, 1)]:.2f}x")


if __name__ == "__main__":
    main()
