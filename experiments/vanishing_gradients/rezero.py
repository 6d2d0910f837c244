"""ReZero against plain and identity-connected deep plain networks, with training, on digits.

For each depth (one-conv tanh blocks, no norm: search_spaces/plain_deep.yaml cut to that
depth) three networks: no connections, a span-1 identity connection around every block, and
the same with ReZero (Bachlechner et al. 2020: a learned scalar on each branch, initialised
at 0, so every block starts as the identity; its conv gradients are zero at initialisation,
so it gets no gradient ratio). Prints the last/first block gradient-norm ratio at
initialisation and the validation accuracy after training (with several seeds: the mean and
the min-max spread).

Run: python experiments/vanishing_gradients/rezero.py [--depths 32] [--seeds 3]
     [--optimizer adam --lr 0.01]
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
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--optimizer", default=None, help="override the spec's (sgd)")
    parser.add_argument("--lr", type=float, default=None, help="override the spec's (0.05)")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    space = load_space("search_spaces/plain_deep.yaml")
    base = sample(space, 0)
    data = load_data(space.spec.data, 0)
    cfg = {**base.train, "epochs": args.epochs}
    cfg.update({k: v for k, v in (("optimizer", args.optimizer), ("lr", args.lr)) if v is not None})
    print(f"{'depth':>5} {'connections':>11} {'branch scale':>12} {'grad last/first':>16} {'val_accuracy':>12}")
    for depth in args.depths:
        blocks = base.architecture.blocks[:depth]
        for skips, scale in ((False, "none"), (True, "none"), (True, "rezero")):
            conns = tuple(Connection(k, k + 1, "identity") for k in range(depth)) if skips else ()
            arch = dataclasses.replace(base.architecture, blocks=blocks, connections=conns, branch_scale=scale)
            ratio = f"{gradient_ratio(arch, data):.3g}" if scale == "none" else "-"
            scores = []
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                result = train(build(arch), data, cfg, seed=seed, device=torch.device("cpu"))
                scores.append(result.metrics["val_accuracy"])
            accuracy = f"{sum(scores) / len(scores):.4f}"
            if len(scores) > 1:
                accuracy += f" ({min(scores):.3f}-{max(scores):.3f})"
            print(f"{depth:>5} {len(conns):>11} {scale:>12} {ratio:>16} {accuracy:>12}", flush=True)


if __name__ == "__main__":
    main()
