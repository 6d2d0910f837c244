"""Train every architecture of ``space.yaml`` once and write ``table.csv`` (one row each).

The search-efficiency replay (``replay.py``) looks trials up in this table instead of
training. Each architecture is trained once, with seed 0, on one CPU thread; rows already
in the CSV are kept, so an interrupted run continues. Run (about 20 minutes of CPU):

    nice -n 10 python experiments/search_efficiency/make_table.py
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import time
from pathlib import Path

import torch

from resnas import load_space, sample
from resnas.search import measure_and_train
from resnas.space import FixedSuggester
from resnas.space._values import discrete_values

HERE = Path(__file__).resolve().parent
FIELDS = ["params_json", "fingerprint", "connections", "val_accuracy", "train_flops", "params", "train_seconds"]


def placement_names(space, depth: int) -> list[str]:
    """The connection parameters a sample with this second-stage depth is asked."""

    class Off(FixedSuggester):
        def suggest_categorical(self, name, choices):
            self.params[name] = "none"
            return "none"

    probe = Off({"network.stages[1].depth": depth})
    sample(space, probe)
    return [n for n in probe.params if n.startswith("residual.")]


def every_candidate(space):
    """Parameter dicts of every architecture of the space (depth x on/off per placement)."""
    for depth in discrete_values(space.spec.network.stages[1].depth):
        names = placement_names(space, depth)
        for bits in itertools.product(("none", "identity"), repeat=len(names)):
            yield {"network.stages[1].depth": depth, **dict(zip(names, bits))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "table.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = load_space(HERE / "space.yaml")
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {row["params_json"] for row in csv.DictReader(f)}
    new = not done
    start, wall = time.process_time(), time.time()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with open(args.out, "a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        if new:
            writer.writeheader()
        for params in every_candidate(space):
            key = json.dumps(params, sort_keys=True)
            if key in done:
                continue
            candidate = sample(space, FixedSuggester(params))
            metrics, _, _ = measure_and_train(space, candidate, 0, torch.device("cpu"))
            writer.writerow(
                {
                    "params_json": key,
                    "fingerprint": candidate.fingerprint,
                    "connections": len(candidate.architecture.connections),
                    "val_accuracy": round(metrics["val_accuracy"], 5),
                    "train_flops": int(metrics["train_flops"]),
                    "params": int(metrics["params"]),
                    "train_seconds": round(metrics["train_seconds"], 3),
                }
            )
            f.flush()
    print(f"CPU time of this run: {time.process_time() - start:.0f} s, wall {time.time() - wall:.0f} s")
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
