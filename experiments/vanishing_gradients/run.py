"""Deep plain networks against the same networks with a connection around every block.

One-conv blocks with no norm (search_spaces/plain_deep.yaml's family), at depths 4 to 64,
with no connections (plain) or a span-1 identity, projection or gated connection around
every block (order: pre), tanh and relu, on digits (conv2d) and mnist1d (conv1d). For each it
prints the last/first block gradient ratio at initialisation (resnas.diagnose, one batch of
64) and, with --epochs N > 0, the validation accuracy after N epochs of SGD.

Run: python experiments/vanishing_gradients/run.py                # ratios only, about a minute
     python experiments/vanishing_gradients/run.py --epochs 15 --depths 8 16 32 --datasets digits
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from resnas import parse_space, sample
from resnas.data import load_data
from resnas.diagnose import diagnosis_batch, gradient_profile, initial_model
from resnas.train import train

HERE = Path(__file__).parent
KINDS = ("plain", "identity", "projection", "gated")


def spec(dataset: str, activation: str, depth: int, kind: str, epochs: int) -> str:
    network = "conv2d" if dataset == "digits" else "conv1d"
    residual = "count: 0" if kind == "plain" else f"kinds: [{kind}], count: all"
    return f"""
name: vg
data: {{dataset: {dataset}}}
network:
  kind: {network}
  stem: {{channels: 16, kernel: 3}}
  block: {{type: plain, activation: {activation}, norm: none}}
  stages: [{{depth: {depth}, channels: 16}}]
residual: {{span: 1, {residual}, order: pre}}
train: {{epochs: {max(1, epochs)}, batch_size: 128, lr: 0.05}}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--activations", nargs="+", default=["tanh", "relu"])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--epochs", type=int, default=0, help="0: gradient ratios only")
    parser.add_argument("--plot", type=Path, default=HERE / "ratios.png")
    args = parser.parse_args()
    results = []
    print(f"{'data':>8} {'act':>5} {'depth':>5} {'kind':>10} {'grad last/first':>16} {'val_accuracy':>12}")
    for dataset in args.datasets:
        for act in args.activations:
            for depth in args.depths:
                for kind in args.kinds:
                    space = parse_space(spec(dataset, act, depth, kind, args.epochs), "vg.yaml")
                    cand = sample(space, 0)
                    ratio = gradient_profile(initial_model(cand.architecture, 0), *diagnosis_batch(space)).ratio
                    acc = float("nan")
                    if args.epochs > 0:
                        data = load_data(space.spec.data, 0)
                        model = initial_model(cand.architecture, 0)
                        acc = train(model, data, cand.train, seed=0, device=torch.device("cpu")).metrics["val_accuracy"]
                    results.append((dataset, act, depth, kind, ratio, acc))
                    print(f"{dataset:>8} {act:>5} {depth:>5} {kind:>10} {ratio:>16.3g} {acc:>12.4f}", flush=True)
    plot(results, args)


def plot(results: list[tuple], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, a) for d in args.datasets for a in args.activations]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharey=True, squeeze=False)
    for ax, (dataset, act) in zip(axes[0], panels):
        for kind in args.kinds:
            rows = [r for r in results if r[0] == dataset and r[1] == act and r[3] == kind]
            ax.semilogy([r[2] for r in rows], [r[4] for r in rows], marker="o", ms=3, label=kind)
        ax.set_xscale("log", base=2)
        ax.set_xticks(args.depths, [str(d) for d in args.depths])
        ax.minorticks_off()
        ax.set_title(f"{dataset}, {act}", fontsize=9)
        ax.set_xlabel("depth (blocks)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("grad ratio last/first block")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=80)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
