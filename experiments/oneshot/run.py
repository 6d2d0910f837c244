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
import functools
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


# The tasks: the headline task (the shipped search_spaces/adaptive.yaml) and the earlier
# stand-in for it (headline.yaml beside this file), each in its own database.
TASKS = {
    "adaptive": HERE.parent.parent / "search_spaces" / "adaptive.yaml",
    "headline": HERE / "headline.yaml",
}
TASK = "adaptive"


def space_for(seed: int, sampler: str = "random", oneshot: dict | None = None, count=None):
    """The task's spec with its search seed (and sampler, one-shot settings) set."""
    from resnas.space import parse_space

    raw = yaml.safe_load(TASKS[TASK].read_text())
    # A plain random / TPE search: no baseline trials enqueued first, no confirmation runs.
    raw["search"].update(seed=seed, sampler=sampler, baselines=False, confirm=0)
    if oneshot is not None:
        raw["search"]["oneshot"] = oneshot
    if count is not None:
        raw["residual"]["count"] = count
    return parse_space(yaml.safe_dump(raw, sort_keys=False), f"{TASK} seed {seed}")


def run_baselines(url: str, samplers: tuple[str, ...] = SAMPLERS, seeds: tuple[int, ...] = SEEDS) -> None:
    from resnas.search import search

    for sampler in samplers:
        for seed in seeds:
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

    for seed, (config, settings) in itertools.product(seeds, configs().items()):
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


URLS = {"baselines": "", "oneshot": ""}  # set by main: the searches' and the one-shot runs' databases


@functools.cache
def _url(name: str) -> str:
    """The database holding study ``name``: the one-shot runs' database, or among the searches'
    (``--db`` and any ``<task>-*.db`` beside it, for seeds run apart) the one where it has
    most finished trials. Read only while nothing writes to them."""
    import optuna

    if name.startswith("oneshot"):
        return URLS["oneshot"]
    here = Path(URLS["baselines"].removeprefix("sqlite:///")).parent
    urls = [URLS["baselines"]] + [
        f"sqlite:///{p}" for p in sorted(here.glob(f"{TASK}-*.db")) if f"sqlite:///{p}" != URLS["oneshot"]
    ]

    def finished(url: str) -> int:
        if name not in optuna.get_all_study_names(url):
            return -1
        study = optuna.load_study(study_name=name, storage=url)
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    return max(urls, key=finished)


def configs() -> dict:
    """One-shot settings per ablation. adaptive.yaml's count allows every placement, so the
    penalty on connections above its bound never acts there: one configuration."""
    return CONFIGS if TASK == "headline" else {"oneshot": None}


def _trials(name: str) -> list:
    import optuna

    url = _url(name)
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
    samplers = [s for s in SAMPLERS if _trials(f"{s}-s{SEEDS[0]}")]
    rows, summary = [], {"task": TASK, "seeds": {}}
    lines = [
        "| seed | one-shot val_acc | random p90 | random best | percentile among random | rank among random | "
        "FLOPs ratio | recorded seconds ratio | connections |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seed in SEEDS:
        trials = _trials(f"oneshot-s{seed}")
        derived = next(t for t in trials if t.user_attrs.get("origin") == "oneshot")
        random = _trials(f"random-s{seed}")
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
            # The share of the random trials the derived network matches or beats, in per cent.
            "percentile": 100.0 * float((accs <= derived.values[0]).mean()),
            "random_flops": r_flops,
            "random_accs": [float(a) for a in accs],
            "flops_ratio": flops / r_flops,
            "seconds_ratio": seconds / r_seconds,
            "flops": flops,
            "connections": d["connections"],
        }
        for sampler in samplers:
            trials_s = _trials(f"{sampler}-s{seed}")
            row[f"{sampler}_1x"] = best_within(trials_s, flops)
            row[f"{sampler}_4x"] = best_within(trials_s, 4 * flops)
            row[f"{sampler}_curve"] = [
                (
                    sum(x.user_attrs["metrics"]["train_flops"] for x in trials_s[: i + 1]),
                    max(x.values[0] for x in trials_s[: i + 1]),
                )
                for i in range(len(trials_s))
            ]
        row["ablations"] = {c: ablations.get(f"{c}-seed{seed}", {}) for c in configs()}
        for config in configs():
            if config == "oneshot":
                continue
            other = next(t for t in _trials(f"{config}-s{seed}") if t.user_attrs.get("origin") == "oneshot")
            row["ablations"][config]["perturbation"] = {
                "val_accuracy": other.values[0],
                "connections": other.user_attrs["connections"],
            }
        row["ablations"]["oneshot"]["perturbation"] = {"val_accuracy": row["oneshot"], "connections": d["connections"]}
        rows.append(row)
        summary["seeds"][seed] = {k: v for k, v in row.items() if not k.endswith("_curve")}
        lines.append(
            f"| {seed} | {row['oneshot']:.3f} | {row['random_p90']:.3f} | {row['random_best']:.3f} | "
            f"{row['percentile']:.0f} | {row['rank']} of {len(accs) + 1} | {row['flops_ratio']:.3f} | "
            f"{row['seconds_ratio']:.3f} | "
            f"{row['connections']} |"
        )
    keys = ("oneshot", "random_p90", "percentile", "flops_ratio", "seconds_ratio")
    med = {k: float(np.median([r[k] for r in rows])) for k in keys}
    summary["median"] = med
    lines.append(
        f"| median | {med['oneshot']:.3f} | {med['random_p90']:.3f} | | {med['percentile']:.0f} | | "
        f"{med['flops_ratio']:.3f} | "
        f"{med['seconds_ratio']:.3f} | |"
    )
    lines += ["", "| strategy | best val_acc at 1x one-shot FLOPs | at 4x |", "|---|---:|---:|"]
    lines.append(f"| one-shot (perturbation) | {mean_sd([r['oneshot'] for r in rows])} | |")
    for sampler in samplers:
        at1, at4 = (mean_sd([r[f"{sampler}_{k}"] for r in rows]) for k in ("1x", "4x"))
        over = sum(4 * r["flops"] > r["random_flops"] for r in rows)
        note = f" (all {TRIALS} trials in {over} of {len(rows)} seeds: 4x exceeds the search)" if over else ""
        lines.append(f"| {sampler} | {at1} | {at4}{note} |")
    lines += [
        "",
        "| supernet | selection | val_acc (mean ± sd, 3 seeds) | connections per seed | percentile among random |",
        "|---|---|---:|---:|---:|",
    ]
    for config in configs():
        for key in ("perturbation", "magnitude", "perturbation_no_count_limit"):
            found = [r["ablations"][config].get(key) for r in rows]
            if all(found):
                accs = [f["val_accuracy"] for f in found]
                pct = [
                    100.0 * float((np.array(r["random_accs"]) <= f["val_accuracy"]).mean()) for r, f in zip(rows, found)
                ]
                summary.setdefault("selections", {})[f"{config}/{key}"] = {"val_accuracy": accs, "percentile": pct}
                lines.append(
                    f"| {config} | {key} | {mean_sd(accs)} | {[f['connections'] for f in found]} | "
                    f"{', '.join(f'{p:.0f}' for p in pct)} |"
                )
    lines += [
        "",
        "| supernet | seed | placements | non-none weight > 0.5 at the end | positive perturbation importance |",
        "|---|---:|---:|---:|---:|",
    ]
    for config, seed in itertools.product(configs(), SEEDS):
        sup = next(t for t in _all(f"{config}-s{seed}") if t.user_attrs.get("oneshot") == "supernet")
        final = sup.user_attrs["trajectory"][-1]["weights"]
        kept = sum(1 - w[0] > 0.5 for w in final.values())
        positive = sum(r["perturbation"] > 0 for r in sup.user_attrs["ranking"]["perturbation"])
        summary["seeds"][seed][f"{config}_collapse"] = {"kept": kept, "positive": positive, "placements": len(final)}
        lines.append(f"| {config} | {seed} | {len(final)} | {kept} | {positive} |")
    timed = HERE / f"timing-{TASK}.json"
    if timed.exists():
        runs = json.loads(timed.read_text())
        lines += [
            "",
            "| seed | supernet s | derivation s (passes) | derived epoch s | one-shot s | random search s | "
            "seconds ratio | ratio, derived epoch at least the random mean | load average |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for seed, t in sorted(runs.items()):
            # The derived network's epochs are timed last; where the load fell meanwhile, they
            # are flattered. Taking them at least as long as the random architectures' mean:
            mean = sum(t["random_epoch_seconds"]) / len(t["random_epoch_seconds"])
            epochs = t["random_seconds"] / sum(t["random_epoch_seconds"])
            slow = max(mean, t["derived_epoch_seconds"])
            t["ratio_at_least_mean"] = (t["supernet_seconds"] + t["derive_seconds"] + epochs * slow) / t[
                "random_seconds"
            ]
            lines.append(
                f"| {seed} | {t['supernet_seconds']:.1f} | {t['derive_seconds']:.1f} ({t['derive_passes']}) | "
                f"{t['derived_epoch_seconds']:.2f} | {t['oneshot_seconds']:.1f} | {t['random_seconds']:.1f} | "
                f"{t['ratio']:.3f} | {t['ratio_at_least_mean']:.3f} | {' / '.join(f'{x:.0f}' for x in t['load'])} |"
            )
        summary["timing_median_ratio"] = float(np.median([t["ratio"] for t in runs.values()]))
        summary["timing_median_ratio_at_least_mean"] = float(
            np.median([t["ratio_at_least_mean"] for t in runs.values()])
        )
        lines.append(
            f"| median | | | | | | {summary['timing_median_ratio']:.3f} | "
            f"{summary['timing_median_ratio_at_least_mean']:.3f} | |"
        )
    text = "\n".join(lines)
    print(text)
    suffix = "" if TASK == "adaptive" else f"-{TASK}"
    (HERE / f"results{suffix}.md").write_text(text + "\n")
    (HERE / f"summary{suffix}.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    _plot(rows, samplers, HERE / f"plot{suffix}.png")


def _all(name: str) -> list:
    import optuna

    return optuna.load_study(study_name=name, storage=_url(name)).trials


def _plot(rows: list[dict], samplers: list[str], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {"random": "tab:blue", "tpe": "tab:orange"}
    for sampler in samplers:
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
    ax.set_title(f"{TASKS[TASK].name}: 12-block plain tanh CNN on mnist1d, 3 seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def timing(seed: int) -> dict:
    """Seconds, measured fairly, for one seed: a whole one-shot run (supernet training and
    derivation, as the strategy runs them) with the training of the seed's 24 random-search
    architectures interleaved, one epoch of two or three of them after each supernet epoch,
    so that machine load hits both alike; then the derived network's epochs alternated with
    a few more random-architecture epochs. Random search's seconds: the sum over its trials
    of ``train.epochs`` times that trial's measured epoch; one-shot's: the supernet's
    training (the interleaved work subtracted) plus the derivation plus ``train.epochs``
    times the derived network's epoch. Every epoch includes its validation pass, as in
    the recorded trials."""
    import time

    import torch

    from resnas.arch import Architecture
    from resnas.data import load_data
    from resnas.nn import build
    from resnas.oneshot import run_supernet
    from resnas.train import train

    space = space_for(seed)
    cpu = torch.device("cpu")
    random = _trials(f"random-s{seed}")
    if len(random) < TRIALS:
        raise SystemExit(f"timing: random-s{seed} has {len(random)} of {TRIALS} trials; run baselines first")
    archs = [Architecture.from_dict(t.user_attrs["architecture"]) for t in random]
    cfg = random[0].user_attrs["train"]
    data = load_data(space.spec.data, seed)
    epochs = int(cfg["epochs"])
    one_epoch = {**cfg, "epochs": 1}
    per_arch: list[float] = []
    aside = 0.0  # seconds spent on interleaved random epochs inside the supernet's clock
    n_sup = space.spec.search.oneshot.epochs
    per_call = -(-len(archs) // n_sup)

    def epoch_of(arch: Architecture) -> float:
        torch.manual_seed(seed)
        return train(build(arch), data, one_epoch, seed=seed, device=cpu).history[-1]["train_seconds"]

    def between(epoch: int, record: dict) -> None:
        nonlocal aside
        start = time.perf_counter()
        for arch in archs[len(per_arch) : len(per_arch) + per_call]:
            per_arch.append(epoch_of(arch))
        aside += time.perf_counter() - start

    load = [os.getloadavg()[0]]
    record = run_supernet(space, cpu, report=between)
    load.append(os.getloadavg()[0])
    supernet = record["metrics"]["train_seconds"] - aside
    derive = record["metrics"]["derive_seconds"]
    derived = Architecture.from_dict(record["derived"][record["selection"]])
    derived_epochs, again = [], []
    for arch in archs[:3]:
        derived_epochs.append(epoch_of(derived))
        again.append(epoch_of(arch))
    load.append(os.getloadavg()[0])
    net_epoch = sorted(derived_epochs)[1]
    oneshot = supernet + derive + epochs * net_epoch
    search = epochs * sum(per_arch)
    out = {
        "seed": seed,
        "supernet_seconds": supernet,
        "derive_seconds": derive,
        "derive_passes": record["derive_passes"],
        "derived_epoch_seconds": net_epoch,
        "random_epoch_seconds": per_arch,
        "random_epoch_seconds_again": again,
        "oneshot_seconds": oneshot,
        "random_seconds": search,
        "ratio": oneshot / search,
        "load": load,
    }
    print(
        f"seed {seed}: supernet {supernet:.1f} s ({n_sup} epochs), derivation {derive:.1f} s "
        f"({record['derive_passes']} passes), derived network {epochs} x {net_epoch:.2f} s; "
        f"random search {epochs} x {sum(per_arch):.1f} s over {len(per_arch)} architectures "
        f"(mean epoch {sum(per_arch) / len(per_arch):.2f} s; the first three again after: "
        f"{', '.join(f'{a:.2f}' for a in again)} vs {', '.join(f'{a:.2f}' for a in per_arch[:3])})\n"
        f"  one-shot {oneshot:.1f} s vs random search {search:.1f} s: ratio {oneshot / search:.3f} "
        f"(load average {', '.join(f'{x:.1f}' for x in load)} at start, after the supernet, at the end)"
    )
    return out


def speed(seed: int = 0) -> None:
    """Each speed-up of the one-shot strategy against what it replaced, interleaved in one
    process (best of 2): a supernet epoch with architecture steps with the fused mixture
    and weight-free architecture gradients vs the kind-by-kind mixture and a full backward
    pass; the derivation reusing the unchanged blocks and measuring kinds only where a
    placement can be kept vs a whole validation pass per perturbation."""
    import time
    from unittest import mock

    import torch

    from resnas.data import load_data
    from resnas.oneshot import MixedShortcut, allowed_counts, build_supernet, importance
    from resnas.oneshot._space import base_candidate
    from resnas.oneshot._train import train_supernet
    from resnas.train import evaluate

    space = space_for(seed)
    cfg = base_candidate(space).train
    data = load_data(space.spec.data, seed)
    one = space.spec.search.oneshot.model_copy(update={"epochs": 1, "warmup": 0})
    cpu = torch.device("cpu")

    def epoch(old: bool) -> tuple[float, torch.nn.Module]:
        net = build_supernet(space, seed)
        if not old:
            return train_supernet(net, data, cfg, one, seed=seed, device=cpu).seconds, net
        backward = torch.Tensor.backward

        def full(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
            return backward(self, gradient, retain_graph, create_graph)  # every leaf's gradient

        with (
            mock.patch.object(MixedShortcut, "forward", MixedShortcut.reference),
            mock.patch.object(torch.Tensor, "backward", full),
        ):
            return train_supernet(net, data, cfg, one, seed=seed, device=cpu).seconds, net

    def whole_passes(net) -> int:
        evaluate(net, data.x_val, data.y_val)
        passes = 1
        for m in net.mixed:
            for removed in [list(m.ops)] + ([[k] for k in m.ops] if len(m.ops) > 1 else []):
                m.removed = frozenset(removed)
                evaluate(net, data.x_val, data.y_val)
                passes += 1
            m.removed = frozenset()
        return passes

    times: dict[str, list[float]] = {}
    counts = None
    for _ in range(2):
        for name, old in (("supernet epoch, before", True), ("supernet epoch, now", False)):
            seconds, net = epoch(old)
            times.setdefault(name, []).append(seconds)
        counts = allowed_counts(space, len(net.options))
        start = time.perf_counter()
        passes_old = whole_passes(net)
        times.setdefault("derivation, before", []).append(time.perf_counter() - start)
        start = time.perf_counter()
        passes_new = importance(net, data.x_val, data.y_val, counts=counts).evaluations
        times.setdefault("derivation, now", []).append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    print(f"load average {os.getloadavg()[0]:.1f}; best of 2, interleaved, 1 thread")
    for key in ("supernet epoch", "derivation"):
        extra = f" ({passes_old} -> {passes_new} passes, after 1 supernet epoch)" if key == "derivation" else ""
        print(
            f"{key}: {best[f'{key}, before']:.2f} s -> {best[f'{key}, now']:.2f} s "
            f"(x{best[f'{key}, before'] / best[f'{key}, now']:.2f}){extra}"
        )


def main(argv: list[str] | None = None) -> int:
    global TASK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["baselines", "oneshot", "report", "timing", "speed"])
    parser.add_argument("--task", choices=list(TASKS), default=TASK, help="adaptive: search_spaces/adaptive.yaml")
    parser.add_argument("--db", default=None, help="SQLite file of the searches (default: <task>.db beside this file)")
    parser.add_argument("--oneshot-db", default=None, help="SQLite file of the one-shot runs")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="baselines: the black-box samplers to run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=None, help="directory of per-seed ablation results")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="the seeds to run, e.g. 0,2")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    TASK = args.task
    url = f"sqlite:///{args.db or HERE / f'{TASK}.db'}"
    URLS["baselines"] = url
    URLS["oneshot"] = f"sqlite:///{args.oneshot_db or HERE / f'{TASK}-oneshot.db'}"
    args.results = args.results or str(HERE / ("ablations" if TASK == "headline" else f"ablations-{TASK}"))
    if args.part == "baselines":
        run_baselines(url, tuple(args.samplers.split(",")), tuple(int(x) for x in args.seeds.split(",")))
    elif args.part == "oneshot":
        Path(args.results).mkdir(exist_ok=True)
        run_oneshot(URLS["oneshot"], Path(args.results), tuple(int(x) for x in args.seeds.split(",")))
    elif args.part == "speed":
        speed()
    elif args.part == "timing":
        file = HERE / f"timing-{TASK}.json"
        done = json.loads(file.read_text()) if file.exists() else {}
        for seed in (int(x) for x in args.seeds.split(",")):
            done[str(seed)] = timing(seed)
            file.write_text(json.dumps(done, indent=1, sort_keys=True) + "\n")
    else:
        report(url, Path(args.results))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
