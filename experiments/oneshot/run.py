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
import json
import os
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
TRIALS = 24
SAMPLERS = ("random", "tpe")
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
    raw["search"].update(seed=seed, sampler=sampler)
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


def run_oneshot(url: str, results: Path) -> None:
    """The strategy (perturbation selection) per seed, then the ablations on the same supernet:
    the magnitude-selected architecture and the perturbation one without count limits."""
    import optuna
    import torch

    from resnas.arch import Architecture, Connection
    from resnas.oneshot import run_oneshot as strategy
    from resnas.oneshot._derive import choose_count
    from resnas.search import measure_and_train
    from resnas.space import Candidate

    done = json.loads(results.read_text()) if results.exists() else {}
    for seed in SEEDS:
        study = strategy(space_for(seed), url, f"oneshot-s{seed}")
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
        record = done.setdefault(str(seed), {})
        space = space_for(seed)
        for name, arch in arches.items():
            if name in record:
                continue
            metrics, _, _ = measure_and_train(
                space, Candidate(arch, sup.user_attrs["train"]), derived.user_attrs["seed"], torch.device("cpu")
            )
            record[name] = {"val_accuracy": metrics["val_accuracy"], "connections": len(arch.connections)}
            results.write_text(json.dumps(done, indent=1, sort_keys=True))
        assert derived.state == optuna.trial.TrialState.COMPLETE


def report(url: str, results: Path) -> None:
    raise NotImplementedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["baselines", "oneshot", "report"])
    parser.add_argument("--db", default=str(HERE / "results.db"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=str(HERE / "ablations.json"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    url = f"sqlite:///{args.db}"
    if args.part == "baselines":
        run_baselines(url)
    elif args.part == "oneshot":
        run_oneshot(url, Path(args.results))
    else:
        report(url, Path(args.results))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
