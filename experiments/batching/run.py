"""In-memory batching (index slices of a random permutation, as resnas trains) against a
torch DataLoader over a TensorDataset, for the same model and data.

Prints samples/second for each and the ratio, measured in the same run.
Run: python experiments/batching/run.py [--dataset digits|mnist1d] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from resnas import build, load_space, sample
from resnas.data import load_data


def slices(model, x, y, batch, epochs, opt) -> float:
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for b in range(0, len(y), batch):
            idx = order[b : b + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return epochs * len(y) / (time.perf_counter() - start)


def loader(model, x, y, batch, epochs, opt) -> float:
    dl = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in dl:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return epochs * len(y) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="search_spaces/digits_cnn.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    space = load_space(args.spec)
    arch = sample(space, 0).architecture
    data = load_data(space.spec.data, 0)
    rates = {}
    for name, fn in (("loader", loader), ("slices", slices), ("loader ", loader), ("slices ", slices)):
        torch.manual_seed(0)
        model = build(arch)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        rates.setdefault(name.strip(), []).append(fn(model, data.x_train, data.y_train, args.batch, args.epochs, opt))
    best = {k: max(v) for k, v in rates.items()}  # best of two runs each, interleaved
    print(f"spec {args.spec}, {len(data.y_train)} training samples, batch {args.batch}, {args.epochs} epochs")
    print(f"DataLoader(TensorDataset): {best['loader']:10.0f} samples/s")
    print(f"index slices:              {best['slices']:10.0f} samples/s")
    print(f"ratio slices/DataLoader:   {best['slices'] / best['loader']:10.2f}x")


if __name__ == "__main__":
    main()
