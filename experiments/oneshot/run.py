"""One-shot vs black-box search on the headline task (see README.md beside this file).

    python experiments/oneshot/run.py baselines   # random and TPE searches, 24 trials x 3 seeds
    python experiments/oneshot/run.py oneshot     # the one-shot strategy, 3 seeds (+ ablations)
    python experiments/oneshot/run.py report      # the table and the plot, from the database

Every run is a resnas study in one SQLite database (``--db``), so a killed run resumes
with the same command and the figures are read back from the storage.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
TRIALS = 24
SAMPLERS = ("random", "tpe")
# The strategy with its defaults, and without the penalty on connections above count's bound.
CONFIGS = {"oneshot": None, "oneshot-nopenalty": {"sparsity": 0.0}}
# Ranking rows name a kind as a module key; back to (kind, shortcut).
KIND = {
    "identity": ("identity", None),
    "projection": ("projection", None),
    "pad": ("pad", None),
    "gated_identity": ("gated", "identity"),
    "gated_projection": ("gated", "projection"),
    "gated_pad": ("gated", "pad"),
}


def space_for(seed: int, sampler: str = "random", oneshot: dict | None = None, count=None):
    """The headline spec with its search seed (and sampler, one-shot settings) set."""
    from resnas.space import parse_space

    raw = yaml.safe_load((HERE / "headline.yaml").read_text())
    # A plain random / TPE search: no baseline trials enqueued first, no confirmation runs.
    raw["search"].update(seed=seed, sampler=sampler, baselines=False)
    if oneshot is not None:
        raw["search"]["oneshot"] = oneshot
    if count is not None:
        raw["residual"]["count"] = count
    return parse_space(yaml.safe_dump(raw, sort_keys=False), f"headline seed {seed}")


def run_baselines(url: str) -> None:
    from resnas.search import search

    for sampler in SAMPLERS:
        for seed in SEEDS:
            search(space_for(seed, sampler), storage=url, study=f"{sampler}-s{seed}", trials=TRIALS, progress=False)


def run_oneshot(url: str, results: Path, seeds: tuple[int, ...] = SEEDS) -> None:
    """The strategy (perturbation selection) per seed, then the ablations on the same supernet:
    the magnitude-selected architecture and the perturbation one without count limits."""
    import optuna
    import torch

    from resnas.arch import Architecture, Connection
    from resnas.oneshot import run_oneshot as strategy
    from resnas.oneshot._derive import choose_count
    from resnas.search import measure_and_train
    from resnas.space import Candidate

    for seed, (config, settings) in itertools.product(seeds, CONFIGS.items()):
        file = results / f"{config}-seed{seed}.json"
        record = json.loads(file.read_text()) if file.exists() else {}
        space = space_for(seed, oneshot=settings)
        study = strategy(space, url, f"{config}-s{seed}")
        sup = next(t for t in study.trials if t.user_attrs.get("oneshot") == "supernet")
        derived = next(t for t in study.trials if t.user_attrs.get("origin") == "oneshot")
        rows = sup.user_attrs["ranking"]["perturbation"]
        # Without count limits: every connection whose removal costs validation loss.
        free = choose_count([r["perturbation"] for r in rows], list(range(len(rows) + 1)))
        arches = {
            "magnitude": Architecture.from_dict(sup.user_attrs["derived"]["magnitude"]),
            "perturbation_no_count_limit": dataclasses.replace(
                Architecture.from_dict(sup.user_attrs["derived"]["perturbation"]),
                connections=tuple(Connection(r["src"], r["dst"], *KIND[r["kind"]]) for r in rows[:free]),
            ),
        }
        for name, arch in arches.items():
            if name in record:
                continue
            metrics, _, _ = measure_and_train(
                space, Candidate(arch, sup.user_attrs["train"]), derived.user_attrs["seed"], torch.device("cpu")
            )
            record[name] = {"val_accuracy": metrics["val_accuracy"], "connections": len(arch.connections)}
            file.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        assert derived.state == optuna.trial.TrialState.COMPLETE


def _trials(url: str, name: str) -> list:
    import optuna

    if name not in optuna.get_all_study_names(url):
        return []  # not run (yet): its cells read nan
    study = optuna.load_study(study_name=name, storage=url)
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def best_within(trials: list, flops: float) -> float:
    """Best val accuracy among the first trials whose summed training FLOPs fit in ``flops``."""
    best, spent = float("nan"), 0.0
    for t in sorted(trials, key=lambda t: t.number):
        spent += t.user_attrs["metrics"]["train_flops"]
        if spent > flops:
            break
        best = max(t.values[0], best) if best == best else t.values[0]
    return best


def mean_sd(values: list[float]) -> str:
    import numpy as np

    v = np.array(values, dtype=float)
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def report(url: str, results: Path) -> None:
    """Markdown tables (printed and written to results.md), summary.json and plot.png."""
    import numpy as np

    ablations = {f.stem: json.loads(f.read_text()) for f in results.glob("*-seed*.json")}
    rows, summary = [], {"seeds": {}}
    lines = [
        "| seed | one-shot val_acc | random p90 | random best | rank among random | "
        "FLOPs ratio | seconds ratio | connections |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seed in SEEDS:
        trials = _trials(url, f"oneshot-s{seed}")
        derived = next(t for t in trials if t.user_attrs.get("origin") == "oneshot")
        random = _trials(url, f"random-s{seed}")
        accs = np.array([t.values[0] for t in random])
        d = derived.user_attrs
        flops = d["search_flops"] + d["metrics"]["train_flops"]
        seconds = d["search_seconds"] + d["metrics"]["train_seconds"]
        r_flops = sum(t.user_attrs["metrics"]["train_flops"] for t in random)
        r_seconds = sum(t.user_attrs["metrics"]["train_seconds"] for t in random)
        row = {
            "oneshot": derived.values[0],
            "random_p90": float(np.percentile(accs, 90)),
            "random_best": float(accs.max()),
            "rank": int((accs > derived.values[0]).sum()) + 1,
            "flops_ratio": flops / r_flops,
            "seconds_ratio": seconds / r_seconds,
            "flops": flops,
            "connections": d["connections"],
        }
        for sampler in SAMPLERS:
            trials_s = _trials(url, f"{sampler}-s{seed}")
            row[f"{sampler}_1x"] = best_within(trials_s, flops)
            row[f"{sampler}_4x"] = best_within(trials_s, 4 * flops)
            row[f"{sampler}_curve"] = [
                (
                    sum(x.user_attrs["metrics"]["train_flops"] for x in trials_s[: i + 1]),
                    max(x.values[0] for x in trials_s[: i + 1]),
                )
                for i in range(len(trials_s))
            ]
        row["ablations"] = {c: ablations.get(f"{c}-seed{seed}", {}) for c in CONFIGS}
        nopen = next(t for t in _trials(url, f"oneshot-nopenalty-s{seed}") if t.user_attrs.get("origin") == "oneshot")
        row["ablations"]["oneshot-nopenalty"]["perturbation"] = {
            "val_accuracy": nopen.values[0],
            "connections": nopen.user_attrs["connections"],
        }
        row["ablations"]["oneshot"]["perturbation"] = {"val_accuracy": row["oneshot"], "connections": d["connections"]}
        rows.append(row)
        summary["seeds"][seed] = {k: v for k, v in row.items() if not k.endswith("_curve")}
        lines.append(
            f"| {seed} | {row['oneshot']:.3f} | {row['random_p90']:.3f} | {row['random_best']:.3f} | "
            f"{row['rank']} of {len(accs) + 1} | {row['flops_ratio']:.3f} | {row['seconds_ratio']:.3f} | "
            f"{row['connections']} |"
        )
    med = {k: float(np.median([r[k] for r in rows])) for k in ("oneshot", "random_p90", "flops_ratio", "seconds_ratio")}
    summary["median"] = med
    lines.append(
        f"| median | {med['oneshot']:.3f} | {med['random_p90']:.3f} | | | {med['flops_ratio']:.3f} | "
        f"{med['seconds_ratio']:.3f} | |"
    )
    lines += ["", "| strategy | best val_acc at 1x one-shot FLOPs | at 4x |", "|---|---:|---:|"]
    lines.append(f"| one-shot (perturbation) | {mean_sd([r['oneshot'] for r in rows])} | |")
    for sampler in SAMPLERS:
        at1, at4 = (mean_sd([r[f"{sampler}_{k}"] for r in rows]) for k in ("1x", "4x"))
        lines.append(f"| {sampler} | {at1} | {at4} |")
    lines += [
        "",
        "| supernet | selection | val_acc (mean ± sd, 3 seeds) | connections per seed |",
        "|---|---|---:|---:|",
    ]
    for config in CONFIGS:
        for key in ("perturbation", "magnitude", "perturbation_no_count_limit"):
            found = [r["ablations"][config].get(key) for r in rows]
            if all(found):
                accs = [f["val_accuracy"] for f in found]
                lines.append(f"| {config} | {key} | {mean_sd(accs)} | {[f['connections'] for f in found]} |")
    lines += [
        "",
        "| supernet | seed | placements | non-none weight > 0.5 at the end | positive perturbation importance |",
        "|---|---:|---:|---:|---:|",
    ]
    for config, seed in itertools.product(CONFIGS, SEEDS):
        sup = next(t for t in _all(url, f"{config}-s{seed}") if t.user_attrs.get("oneshot") == "supernet")
        final = sup.user_attrs["trajectory"][-1]["weights"]
        kept = sum(1 - w[0] > 0.5 for w in final.values())
        positive = sum(r["perturbation"] > 0 for r in sup.user_attrs["ranking"]["perturbation"])
        summary["seeds"][seed][f"{config}_collapse"] = {"kept": kept, "positive": positive, "placements": len(final)}
        lines.append(f"| {config} | {seed} | {len(final)} | {kept} | {positive} |")
    text = "\n".join(lines)
    print(text)
    (HERE / "results.md").write_text(text + "\n")
    (HERE / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    _plot(rows)


def _all(url: str, name: str) -> list:
    import optuna

    return optuna.load_study(study_name=name, storage=url).trials


def _plot(rows: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {"random": "tab:blue", "tpe": "tab:orange"}
    for sampler in SAMPLERS:
        for i, r in enumerate(rows):
            if not r[f"{sampler}_curve"]:
                continue
            x, y = zip(*r[f"{sampler}_curve"])
            ax.step(
                x,
                y,
                where="post",
                color=colors[sampler],
                alpha=0.6,
                label=f"{sampler} (best so far)" if i == 0 else None,
            )
    ax.scatter(
        [r["flops"] for r in rows],
        [r["oneshot"] for r in rows],
        color="black",
        zorder=3,
        label="one-shot (derived, retrained)",
    )
    ax.set_xlabel("training FLOPs spent (supernet + derivation + retraining for one-shot)")
    ax.set_ylabel("val accuracy")
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.set_title("headline task: 12-block plain tanh CNN on mnist1d, 3 seeds")
    fig.tight_layout()
    fig.savefig(HERE / "plot.png", dpi=110)


def timing(url: str) -> None:
    """Seconds, measured fairly: the supernet's epochs, its derivation and a 12-connection
    network's epochs timed in one process, interleaved, so machine load hits all alike; then
    the seconds ratio the recorded FLOPs imply for seed 0 (24 random trials x 8 epochs)."""
    import time

    import torch

    from resnas.arch import Architecture
    from resnas.data import load_data
    from resnas.nn import build
    from resnas.oneshot import build_supernet, importance
    from resnas.oneshot._space import base_candidate
    from resnas.oneshot._train import train_supernet
    from resnas.train import train

    space = space_for(0)
    cfg = base_candidate(space).train
    data = load_data(space.spec.data, 0)
    derived = next(t for t in _trials(url, "oneshot-s0") if t.user_attrs.get("origin") == "oneshot")
    arch = Architecture.from_dict(derived.user_attrs["architecture"])
    settings = space.spec.search.oneshot
    cpu = torch.device("cpu")
    sup_search, sup_warm, net_epoch, derive = [], [], [], []
    for _ in range(2):
        net = build_supernet(space, 0)
        one = settings.model_copy(update={"epochs": 1, "warmup": 0})
        sup_search.append(train_supernet(net, data, cfg, one, device=cpu).seconds)
        warm = settings.model_copy(update={"epochs": 2, "warmup": 1})
        sup_warm.append(train_supernet(build_supernet(space, 0), data, cfg, warm, device=cpu).seconds - sup_search[-1])
        start = time.perf_counter()
        importance(net, data.x_val, data.y_val)
        derive.append(time.perf_counter() - start)
        net_epoch.append(train(build(arch), data, {**cfg, "epochs": 1}, device=cpu).history[-1]["train_seconds"])
    s_search, s_warm, s_net, s_derive = (min(v) for v in (sup_search, sup_warm, net_epoch, derive))
    epochs = int(cfg["epochs"])
    oneshot = (settings.epochs - settings.warmup) * s_search + settings.warmup * s_warm + s_derive + epochs * s_net
    random = TRIALS * epochs * s_net
    print(
        f"supernet epoch with architecture steps {s_search:.2f} s, without {s_warm:.2f} s, "
        f"derivation {s_derive:.2f} s, "
        f"12-connection network epoch {s_net:.2f} s (best of 2, interleaved)\n"
        f"one-shot {oneshot:.1f} s vs {TRIALS} trials x {epochs} epochs {random:.1f} s: ratio {oneshot / random:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["baselines", "oneshot", "report", "timing"])
    parser.add_argument("--db", default=str(HERE / "results.db"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=str(HERE / "ablations"), help="directory of per-seed ablation results")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="one-shot seeds to run, e.g. 0,2")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    url = f"sqlite:///{args.db}"
    if args.part == "baselines":
        run_baselines(url)
    elif args.part == "oneshot":
        Path(args.results).mkdir(exist_ok=True)
        run_oneshot(url, Path(args.results), tuple(int(x) for x in args.seeds.split(",")))
    elif args.part == "timing":
        timing(url)
    else:
        report(url, Path(args.results))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
