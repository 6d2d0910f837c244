"""One-shot vs black-box search on the headline task (see README.md beside this file).

    python experiments/oneshot/run.py baselines   # random and TPE searches, 24 trials x 3 seeds
    python experiments/oneshot/run.py oneshot     # the one-shot strategy, 3 seeds (+ ablations)
    python experiments/oneshot/run.py report      # the table and the plot, from the database

Every run is a resnas study in one SQLite database (``--db``), so a killed run resumes
with the same command and the figures are read back from the storage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
TRIALS = 24
SAMPLERS = ("random", "tpe")


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


def run_oneshot(url: str) -> None:
    raise NotImplementedError


def report(url: str) -> None:
    raise NotImplementedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["baselines", "oneshot", "report"])
    parser.add_argument("--db", default=str(HERE / "results.db"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    url = f"sqlite:///{args.db}"
    if args.part == "baselines":
        run_baselines(url)
    elif args.part == "oneshot":
        run_oneshot(url)
    else:
        report(url)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
