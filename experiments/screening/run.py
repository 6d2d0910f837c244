"""Do training-free scores predict trained accuracy on the headline task, and does screening save compute?

correlation: sample N architectures of space.yaml (seeds 0..N-1), score each untrained
(resnas.screening.candidate_diagnostics), train each under the spec, and print the Spearman
rank correlation of every score with validation accuracy. Rows go to a CSV as they finish.

compare: real searches (random sampler) with the same number of trained candidates,
without screening and with ``search.screen: {score, pool: 4, keep: 1}``, for several seeds.
Prints each arm's best validation accuracy and the time the screened search needed (training
plus scoring) to reach the unscreened best within one seed standard deviation, as a
fraction of the unscreened search's training time.

simulate: the same comparison replayed on the correlation sample, for every score and many seeds.

Run: python experiments/screening/run.py correlation --n 100
     python experiments/screening/run.py compare --score grad_flow --trained 8 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from pathlib import Path

import optuna
import torch

from resnas import load_space, parse_space, sample
from resnas.data import load_data
from resnas.diagnose import initial_model
from resnas.scores import SCORES
from resnas.screening import candidate_diagnostics
from resnas.train import train

HERE = Path(__file__).parent
SPEC = HERE / "space.yaml"


def correlation(n: int, out: Path, shard: tuple[int, int] = (0, 1), report: list[Path] | None = None) -> None:
    import pandas as pd

    space = load_space(SPEC)
    data = load_data(space.spec.data, space.spec.search.seed)
    done = set()
    if out.exists():
        done = {int(r["seed"]) for r in csv.DictReader(out.open())}
    fields = ["seed", "connections", "val_accuracy", "train_seconds", "score_ms", "grad_ratio", *SCORES]
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fields)
        if not done:
            writer.writeheader()
        for seed in range(shard[0], n, shard[1]):
            if seed in done:
                continue
            cand = sample(space, seed)
            diag = candidate_diagnostics(space, cand, seed)
            result = train(
                initial_model(cand.architecture, seed), data, cand.train, seed=seed, device=torch.device("cpu")
            )
            row = {
                "seed": seed,
                "connections": len(cand.architecture.connections),
                "val_accuracy": result.metrics["val_accuracy"],
                "train_seconds": round(result.metrics["train_seconds"], 3),
                "score_ms": diag["score_ms"],
                "grad_ratio": diag["grad_profile"]["ratio"],
                **diag["scores"],
            }
            writer.writerow(row)
            f.flush()
            print(
                f"{seed:>4} acc {row['val_accuracy']:.3f} conns {row['connections']:>2} ratio {row['grad_ratio']:.3g}"
            )
    df = pd.concat([pd.read_csv(p) for p in (report or [out])], ignore_index=True)
    print(f"\n{len(df)} architectures; val_accuracy mean {df.val_accuracy.mean():.3f}, max {df.val_accuracy.max():.3f}")
    print(
        f"scoring {df.score_ms.median():.0f} ms median per candidate; training {df.train_seconds.median():.1f} s median"
    )
    print(f"{'score':>12} {'spearman':>9}")
    for name in (*SCORES, "connections"):
        print(f"{name:>12} {df[name].corr(df.val_accuracy, method='spearman'):>9.3f}")


def run_arm(text: str, seed: int, trained: int, screen: str | None, storage: str) -> tuple[list, float]:
    """(per trial: (cumulative seconds, val_accuracy) in trial order, total seconds)."""
    from resnas.search import search

    extra = f", screen: {{score: {screen}, pool: 4, keep: 1}}" if screen else ""
    line = "search: {trials: 8, sampler: random, seed: 0, baselines: false}"
    assert line in text, f"{SPEC} no longer has the line {line!r}"
    text = text.replace(line, f"search: {{trials: {trained}, sampler: random, seed: {seed}, baselines: false{extra}}}")

    space = parse_space(text, "space.yaml")
    study = search(space, storage=storage, study=f"s{seed}-{screen or 'none'}")
    clock, curve = 0.0, []
    for t in study.get_trials(deepcopy=False):
        if screen:
            clock += t.user_attrs.get("score_ms", 0) / 1000  # every pool member was scored
        if t.state == optuna.trial.TrialState.COMPLETE:
            clock += t.user_attrs["metrics"]["train_seconds"]
            curve.append((clock, t.values[0]))
    return curve, clock


def compare(score: str, trained: int, seeds: list[int]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    text = SPEC.read_text()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/compare.db"
        for seed in seeds:
            plain, plain_time = run_arm(text, seed, trained, None, storage)
            screened, screened_time = run_arm(text, seed, trained, score, storage)
            rows.append((seed, plain, plain_time, screened, screened_time))
    plain_best = [max(a for _, a in r[1]) for r in rows]
    screened_best = [max(a for _, a in r[3]) for r in rows]
    std = statistics.stdev(plain_best) if len(plain_best) > 1 else 0.0
    print(f"score {score}, pool 4, keep 1, {trained} trained candidates per search")
    print(f"{'seed':>4} {'plain best':>10} {'screened best':>13} {'plain s':>8} {'screened s':>10} {'reach':>6}")
    fractions = []
    for (seed, _, plain_time, screened, screened_time), pb, sb in zip(rows, plain_best, screened_best):
        target = pb - std
        reach = next((t for t, a in screened if a >= target), None)
        fraction = reach / plain_time if reach is not None else float("inf")
        fractions.append(fraction)
        print(f"{seed:>4} {pb:>10.3f} {sb:>13.3f} {plain_time:>8.1f} {screened_time:>10.1f} {fraction:>6.2f}")
    print(
        f"unscreened best {statistics.mean(plain_best):.3f} ± {std:.3f} (mean ± std over seeds); screened best "
        f"{statistics.mean(screened_best):.3f} ± {statistics.stdev(screened_best) if len(rows) > 1 else 0:.3f}"
    )
    print(
        "median time to reach the unscreened best (within one std): "
        f"{statistics.median(fractions):.2f} of its training time"
    )


def simulate(csv_path: Path, trained: int, pool: int, reps: int) -> None:
    """Screening replayed on the correlation sample: with a random sampler, a search is a draw of
    candidates from the space, so pools drawn from the trained sample (without replacement)
    give screened and unscreened searches on exactly the same footing, for many seeds."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(csv_path)
    acc, secs, score_s = df.val_accuracy.to_numpy(), df.train_seconds.to_numpy(), df.score_ms.to_numpy() / 1000
    rng = np.random.default_rng(0)
    draws = [rng.permutation(len(df))[: trained * pool] for _ in range(reps)]
    plain_best = np.array([acc[d[:trained]].max() for d in draws])
    std = plain_best.std(ddof=1)
    print(f"{len(df)} trained architectures; {reps} replayed searches of {trained} trained candidates, pool {pool}")
    print(f"unscreened best {plain_best.mean():.3f} ± {std:.3f} (mean ± std over searches)")
    print(f"{'score':>12} {'best':>13} {'reach ≤60%':>10} {'median fraction':>15} {'first 3 searches':>22}")
    for name in (*SCORES, "random"):  # random: a pool screened by a coin, the control
        values = df[name].to_numpy() if name != "random" else rng.random(len(df))
        bests, fractions = [], []
        for d, target_best in zip(draws, plain_best):
            plain_time = secs[d[:trained]].sum()
            clock, best, reach = 0.0, -1.0, None
            for p in d.reshape(trained, pool) if pool > 1 else d[:trained, None]:
                pick = p[np.argmax(values[p])]
                clock += score_s[p].sum() + secs[pick]
                best = max(best, acc[pick])
                if reach is None and best >= target_best - std:
                    reach = clock
            bests.append(best)
            fractions.append(reach / plain_time if reach is not None else np.inf)
        fractions = np.array(fractions)
        first = ", ".join(f"{f:.2f}" for f in fractions[:3])
        print(
            f"{name:>12} {np.mean(bests):>6.3f} ± {np.std(bests, ddof=1):.3f} {np.mean(fractions <= 0.6):>10.0%} "
            f"{np.median(fractions):>15.2f} {first:>16} ({np.median(fractions[:3]):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("correlation")
    c.add_argument("--n", type=int, default=100)
    c.add_argument("--out", type=Path, default=HERE / "correlation.csv")
    c.add_argument("--shard", default="0/1", help="I/K: this process trains seeds I, I+K, ... (run K at once)")
    c.add_argument("--report", type=Path, nargs="*", help="summarise these CSVs together (the shards' outputs)")
    m = sub.add_parser("compare")
    m.add_argument("--score", default="grad_flow", choices=SCORES)
    m.add_argument("--trained", type=int, default=8)
    m.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r = sub.add_parser("simulate")
    r.add_argument("--csv", type=Path, default=HERE / "correlation.csv")
    r.add_argument("--trained", type=int, default=8)
    r.add_argument("--pool", type=int, default=4)
    r.add_argument("--reps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "correlation":
        i, k = map(int, args.shard.split("/"))
        correlation(args.n, args.out, (i, k), args.report)
    elif args.cmd == "simulate":
        simulate(args.csv, args.trained, args.pool, args.reps)
    else:
        compare(args.score, args.trained, args.seeds)


if __name__ == "__main__":
    main()
