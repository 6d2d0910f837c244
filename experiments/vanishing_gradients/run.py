"""Deep plain networks vs the same networks with identity connections, on digits.

For depths 8, 16 and 32 (one-conv tanh blocks, no norm: search_spaces/plain_deep.yaml
with its depth changed) it prints, with and without a span-1 identity connection around
every block: the last/first block gradient-norm ratio at initialisation, and the
validation accuracy after training. Run: python experiments/vanishing_gradients/run.py
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from resnas import Connection, build, load_space, sample
from resnas.data import load_data
from resnas.train import train


def gradient_ratio(arch, data) -> float:
    torch.manual_seed(0)
    model = build(arch)
    x, y = data.x_train[:128], data.y_train[:128]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return model.blocks[-1].conv.weight.grad.norm().item() / model.blocks[0].conv.weight.grad.norm().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    space = load_space("search_spaces/plain_deep.yaml")
    base = sample(space, 0)
    data = load_data(space.spec.data, 0)
    cfg = {**base.train, "epochs": args.epochs}
    print(f"{'depth':>5} {'connections':>11} {'grad last/first':>16} {'val_accuracy':>12}")
    for depth in (8, 16, 32):
        blocks = base.architecture.blocks[:depth]
        for skips in (False, True):
            conns = tuple(Connection(k, k + 1, "identity") for k in range(depth)) if skips else ()
            arch = dataclasses.replace(base.architecture, blocks=blocks, connections=conns)
            ratio = gradient_ratio(arch, data)
            torch.manual_seed(0)
            result = train(build(arch), data, cfg, seed=0, device=torch.device("cpu"))
            print(f"{depth:>5} {len(conns):>11} {ratio:>16.3g} {result.metrics['val_accuracy']:>12.4f}", flush=True)


if __name__ == "__main__":
    main()
