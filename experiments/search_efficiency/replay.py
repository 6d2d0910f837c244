"""Replay samplers against the exhaustive table (``table.csv``): each trial is a lookup.

For random search, TPE, NSGA-II (two objectives: validation accuracy and training FLOPs)
and regularized evolution, over many seeds: the trials needed to reach the table's top 1 %
and top 5 % by validation accuracy, the best accuracy found after each trial, and the
hypervolume (accuracy x FLOPs) of what was found. Every sampler runs with resnas's own
settings (``resnas.search._study.make_sampler``) and draws architectures through
``resnas.sample`` exactly as a search does. Writes ``results.csv`` (one row per sampler
and seed) and ``best_vs_trials.png`` and prints the table of the README. Run:

    nice -n 10 python experiments/search_efficiency/replay.py --seeds 50 --trials 150
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from resnas import load_space, parse_space, sample
from resnas.search._study import make_sampler

HERE = Path(__file__).resolve().parent
SAMPLERS = ("random", "tpe", "nsga2", "evolution")


def hypervolume(points: np.ndarray, ref: tuple[float, float]) -> float:
    """2-D hypervolume of (accuracy to maximise, flops to minimise) points against ``ref``
    = (worst accuracy, worst flops)."""
    good = points[(points[:, 0] > ref[0]) & (points[:, 1] < ref[1])]
    volume, best_acc = 0.0, ref[0]
    for acc, flops in sorted(good.tolist(), key=lambda p: p[1]):  # cheapest first
        if acc > best_acc:
            volume += (acc - best_acc) * (ref[1] - flops)
            best_acc = acc
    return volume


def replay(space, table: pd.DataFrame, sampler: str, seed: int, trials: int) -> dict:
    spec = space.text.replace("sampler: tpe", f"sampler: {sampler}").replace("seed: 0", f"seed: {seed}")
    if sampler == "nsga2":
        accuracy = "  - {metric: val_accuracy, direction: maximize}\n"
        spec = spec.replace(accuracy, accuracy + "  - {metric: train_flops, direction: minimize}\n")
    s = parse_space(spec)
    directions = ["maximize", "minimize"] if sampler == "nsga2" else ["maximize"]
    study = optuna.create_study(directions=directions, sampler=make_sampler(s, trials, seed))
    by_print = table.set_index("fingerprint")
    accs, flops = [], []
    for _ in range(trials):
        trial = study.ask()
        row = by_print.loc[sample(s, trial).fingerprint]
        accs.append(float(row["val_accuracy"]))
        flops.append(float(row["train_flops"]))
        study.tell(trial, [accs[-1], flops[-1]] if sampler == "nsga2" else accs[-1])
    return {"acc": np.array(accs), "flops": np.array(flops)}


def first_reaching(acc: np.ndarray, threshold: float) -> float:
    hit = np.nonzero(acc >= threshold)[0]
    return float(hit[0] + 1) if len(hit) else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    space = load_space(HERE / "space.yaml")
    table = pd.read_csv(HERE / "table.csv")
    ranked = np.sort(table["val_accuracy"].to_numpy())[::-1]
    top = {p: ranked[max(1, math.ceil(len(ranked) * p / 100)) - 1] for p in (1, 5)}
    ref = (float(table["val_accuracy"].min()), float(table["train_flops"].max()) * 1.01)
    best_hv = hypervolume(table[["val_accuracy", "train_flops"]].to_numpy(dtype=float), ref)
    print(
        f"table: {len(table)} architectures; top 1 % = val_accuracy >= {top[1]:.4f}, "
        f"top 5 % >= {top[5]:.4f}, best {ranked[0]:.4f}, median {np.median(ranked):.4f}"
    )
    rows, curves = [], []
    for name in args.samplers.split(","):
        start = time.time()
        for seed in range(args.seeds):
            found = replay(space, table, name, seed, args.trials)
            best = np.maximum.accumulate(found["acc"])
            points = np.stack([found["acc"], found["flops"]], axis=1)
            rows.append(
                {
                    "sampler": name,
                    "seed": seed,
                    "trials_to_top1": first_reaching(found["acc"], top[1]),
                    "trials_to_top5": first_reaching(found["acc"], top[5]),
                    "best_at_20": best[min(19, len(best) - 1)],
                    "best_at_50": best[min(49, len(best) - 1)],
                    "hypervolume_at_50": hypervolume(points[:50], ref) / best_hv,
                }
            )
            curves += [{"sampler": name, "seed": seed, "trial": i + 1, "best": b} for i, b in enumerate(best)]
        print(f"{name}: {args.seeds} seeds in {time.time() - start:.0f} s", flush=True)
    results = pd.DataFrame(rows)
    results.to_csv(HERE / "results.csv", index=False)
    print_table(results, args.trials)
    plot(pd.DataFrame(curves), top)


def print_table(results: pd.DataFrame, trials: int) -> None:
    # "lower" quantiles: a seed that never reached the target (inf) stays inf instead of nan.
    random_median = results[results["sampler"] == "random"]["trials_to_top1"].quantile(0.5, interpolation="lower")
    print(
        f"\n| sampler | trials to top 1 % (median [IQR]) | x random | reached top 1 % in {trials} | "
        "trials to top 5 % (median [IQR]) | best after 20 | best after 50 | hypervolume after 50 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def iqr(g: pd.DataFrame, col: str) -> str:
        median, q1, q3 = (g[col].quantile(q, interpolation="lower") for q in (0.5, 0.25, 0.75))
        text = ["not reached" if math.isinf(v) else f"{v:.0f}" for v in (median, q1, q3)]
        return f"{text[0]} [{text[1]}, {text[2]}]"

    for name, g in results.groupby("sampler", sort=False):
        ratio = g["trials_to_top1"].quantile(0.5, interpolation="lower") / random_median
        print(
            f"| {name} | {iqr(g, 'trials_to_top1')} | {ratio:.2f} | {np.isfinite(g['trials_to_top1']).mean():.0%} | "
            f"{iqr(g, 'trials_to_top5')} | {g['best_at_20'].mean():.4f} ± {g['best_at_20'].std():.4f} | "
            f"{g['best_at_50'].mean():.4f} ± {g['best_at_50'].std():.4f} | "
            f"{g['hypervolume_at_50'].mean():.3f} ± {g['hypervolume_at_50'].std():.3f} |"
        )


def plot(curves: pd.DataFrame, top: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, g in curves.groupby("sampler", sort=False):
        q = g.groupby("trial")["best"].quantile([0.25, 0.5, 0.75]).unstack()
        ax.plot(q.index, q[0.5], label=name)
        ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.15)
    for p, v in top.items():
        ax.axhline(v, color="grey", lw=0.8, ls="--")
        ax.text(1, v, f"top {p} %", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("trials")
    ax.set_ylabel("best val_accuracy found (median, IQR over seeds)")
    ax.set_title("search efficiency on the exhaustive table")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "best_vs_trials.png", dpi=120)


if __name__ == "__main__":
    main()
