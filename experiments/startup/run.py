"""Start-up and per-trial overhead of ``resnas search`` as a study grows (0, 2,000, 10,000 trials),
the leaderboard's time, and the search's overhead against a plain Optuna loop.

Start-up: each study is filled with copies of one real finished trial (its full record:
architecture, metrics, costs), then ``resnas search --trials K+M`` resumes it and trains M
more tiny trials (1 epoch of 100 digits). Per study size:

- start-up: seconds from launching the command to the first new trial starting;
- per trial: wall seconds per new trial minus the trial's own train_seconds;
- leaderboard, studies: seconds for those commands;

each also as the difference from the empty study measured in the same run. With
``--sampler tpe`` the resumed search uses TPE, which reads every finished trial before it
proposes one: that read is part of the first trial, not of the start-up before it.

Overhead: the same candidates (the parameters of a resnas search, queued in a plain study),
the same data and the same training function (``resnas.train.train``), in a plain
``study.optimize`` loop on SQLite and in ``resnas.search.search`` in this process, in
interleaved pairs. Overhead per trial: (resnas wall - plain wall) / trials, and the same in
steady state (from the first trial's start to the last one's end).

    python experiments/startup/run.py [--sizes 0 2000 10000] [--new 3] [--overhead-trials 10]

The benchmark suite imports :func:`startup` and :func:`overhead`; both return dicts.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[2]
TINY = (ROOT / "tests" / "data" / "tiny.yaml").read_text()
SPEC = TINY.replace("epochs: 4", "epochs: 1").replace("limit: 500", "limit: 100")
# About one second per trial on one core: epochs of 500 digits.
OVERHEAD_SPEC = TINY.replace("epochs: 4", "epochs: 6").replace("name: tiny", "name: overhead")


def load() -> float:
    return os.getloadavg()[0]


def resnas(*args: object, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "resnas", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"resnas {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start, proc


def fill(directory: Path, size: int, sampler: str = "random") -> None:
    """A study of ``size`` finished trials, each a copy of one real trial's record (rows copied in
    SQL: adding 10,000 trials through Optuna would take longer than the measurement)."""
    (directory / "tiny.yaml").write_text(SPEC.replace("sampler: random", f"sampler: {sampler}"))
    resnas("search", "tiny.yaml", "--trials", 1, cwd=directory)
    db = directory / "resnas.db"
    if size == 0:
        optuna.delete_study(study_name="tiny", storage=f"sqlite:///{db}")
        return
    copies(db, size)


def copies(db: Path, size: int) -> None:
    """Fill the one study in ``db`` up to ``size`` finished trials with copies of its trial 0."""
    with sqlite3.connect(db) as conn:
        (tid, study_id, start, end) = conn.execute(
            "SELECT trial_id, study_id, datetime_start, datetime_complete FROM trials WHERE number = 0"
        ).fetchone()
        attrs = conn.execute(  # not its baseline label: one trial is the baseline
            "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = ? AND key != 'baseline'", (tid,)
        ).fetchall()
        params = conn.execute(
            "SELECT param_name, param_value, distribution_json FROM trial_params WHERE trial_id = ?", (tid,)
        ).fetchall()
        (value,) = conn.execute("SELECT value FROM trial_values WHERE trial_id = ?", (tid,)).fetchone()
        (last,) = conn.execute("SELECT MAX(number) FROM trials WHERE study_id = ?", (study_id,)).fetchone()
        for number in range(last + 1, last + size):
            cur = conn.execute(
                "INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) "
                "VALUES (?, ?, 'COMPLETE', ?, ?)",
                (number, study_id, start, end),
            )
            new = cur.lastrowid
            conn.executemany(
                "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
                [(new, k, v) for k, v in attrs],
            )
            conn.executemany(
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES (?, ?, ?, ?)",
                [(new, *row) for row in params],
            )
            spread = value * (0.5 + 0.5 * ((number * 7919) % 1000) / 1000)
            conn.execute(
                "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, 0, ?, 'FINITE')",
                (new, spread),
            )


def measure(directory: Path, size: int, new: int) -> dict[str, float]:
    launched = time.time()
    wall, _ = resnas("search", "tiny.yaml", "--trials", size + new, cwd=directory)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{directory / 'resnas.db'}")
    fresh = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.datetime_start and t.datetime_start.timestamp() >= launched
    ]
    first = min(t.datetime_start.timestamp() for t in fresh)
    last = max(t.datetime_complete.timestamp() for t in fresh)
    trained = sum(t.user_attrs["metrics"]["train_seconds"] for t in fresh)
    board, _ = resnas("leaderboard", "--study", "tiny", "--top", 3, cwd=directory)
    listing, _ = resnas("studies", cwd=directory)
    return {
        "start-up": first - launched,
        "per trial": (last - first - trained) / max(1, len(fresh) - 1),
        "leaderboard": board,
        "studies": listing,
        "search": wall,
        "load": load(),
    }


def startup(sizes: tuple[int, ...] = (0, 2000, 10000), new: int = 3, sampler: str = "random") -> dict[int, dict]:
    """{study size: {figure: seconds, ..., 'load': load average}} with ``+name`` differences from
    the first size (the baseline, measured in the same run)."""
    rows: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            directory = Path(tmp) / str(size)
            directory.mkdir()
            fill(directory, size, sampler)
            rows[size] = measure(directory, size, new)
    base = rows[sizes[0]]
    for row in rows.values():
        row.update({f"+{k}": row[k] - base[k] for k in list(row) if k != "load"})
    return rows


# --- overhead against a plain Optuna loop ---------------------------------------------------


def _plain(directory: Path, space, params: list[dict]) -> dict[str, float]:
    """The same candidates, data and training function in a plain ``study.optimize`` loop."""
    import torch

    from resnas.data import load_data
    from resnas.nn import build
    from resnas.space import sample
    from resnas.train import train

    began = time.perf_counter()
    study = optuna.create_study(study_name="plain", storage=f"sqlite:///{directory / 'plain.db'}", direction="maximize")
    for p in params:
        study.enqueue_trial(p)

    def objective(trial: optuna.Trial) -> float:
        candidate = sample(space, trial)
        seed = space.spec.search.seed + trial.number
        data = load_data(space.spec.data, space.spec.search.seed)
        torch.manual_seed(seed)
        model = build(candidate.architecture)
        result = train(model, data, candidate.train, seed=seed, device=torch.device("cpu"))
        return result.metrics["val_accuracy"]

    study.optimize(objective, n_trials=len(params))
    return _walls(study, began)


def _walls(study: optuna.Study, began: float) -> dict[str, float]:
    ended = time.perf_counter()
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    return {"wall": ended - began, "steady": (last - first).total_seconds(), "trials": len(trials)}


def _resnas(directory: Path, space, trials: int) -> tuple[dict[str, float], list[dict]]:
    import resnas.search

    began = time.perf_counter()
    study = resnas.search.search(space, storage=f"sqlite:///{directory / 'resnas.db'}", trials=trials, device="cpu")
    walls = _walls(study, began)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    walls["trained"] = sum(t.user_attrs["metrics"]["train_seconds"] for t in done)
    return walls, [t.params for t in sorted(done, key=lambda t: t.number)]


def overhead(trials: int = 10, pairs: int = 2) -> dict[str, float]:
    """resnas search vs a plain Optuna loop over the same candidates, in this process, in
    interleaved pairs: overhead per trial (all of it, and in steady state) as seconds and as a
    fraction of the plain loop's mean trial, with the load average."""
    from resnas.search._study import _HANDLES
    from resnas.space import parse_space

    space = parse_space(OVERHEAD_SPEC, "overhead.yaml")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    total, steady, plain_trial, loads = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        # Warm the process (imports, the data cache) once, outside the figures.
        warm = Path(tmp) / "warm"
        warm.mkdir()
        _, params = _resnas(warm, space, 2)
        _plain(warm, space, params)
        for i in range(pairs):
            a, b = Path(tmp) / f"r{i}", Path(tmp) / f"p{i}"
            a.mkdir()
            b.mkdir()
            _HANDLES.clear()
            ours, params = _resnas(a, space, trials)
            theirs = _plain(b, space, params)
            n = theirs["trials"]
            total.append((ours["wall"] - theirs["wall"]) / n)
            steady.append((ours["steady"] - theirs["steady"]) / n)
            plain_trial.append(theirs["steady"] / n)
            loads.append(load())
    per_trial = statistics.median(plain_trial)
    return {
        "trials": trials,
        "plain trial s": per_trial,
        "overhead per trial s": statistics.median(total),
        "steady overhead per trial s": statistics.median(steady),
        "overhead fraction": statistics.median(total) / per_trial,
        "load": statistics.mean(loads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[0, 2000, 10000], help="none: skip start-up")
    parser.add_argument("--new", type=int, default=3, help="trials trained on top of each study")
    parser.add_argument("--sampler", default="random", help="the resumed search's sampler (random, tpe)")
    parser.add_argument("--overhead-trials", type=int, default=10, help="0: skip the plain-loop comparison")
    parser.add_argument("--pairs", type=int, default=2, help="interleaved resnas/plain pairs")
    args = parser.parse_args()
    if args.sizes:
        rows = startup(tuple(args.sizes), args.new, args.sampler)
        names = ["start-up", "per trial", "leaderboard", "studies", "search"]
        print(f"| trials | {' | '.join(names)} | load |")
        print(f"|---:|{'---:|' * (len(names) + 1)}")
        for i, (size, row) in enumerate(rows.items()):
            cells = [f"{row[k]:.2f} s" + (f" (+{row['+' + k]:.2f})" if i else "") for k in names]
            print(f"| {size:,} | {' | '.join(cells)} | {row['load']:.1f} |")
    if args.overhead_trials:
        o = overhead(args.overhead_trials, args.pairs)
        print(
            f"\noverhead vs a plain Optuna loop, {o['trials']} trials of {o['plain trial s']:.2f} s: "
            f"{o['overhead per trial s'] * 1000:.0f} ms per trial ({o['overhead fraction']:.1%} of a trial), "
            f"steady state {o['steady overhead per trial s'] * 1000:.0f} ms per trial; load {o['load']:.1f}"
        )


if __name__ == "__main__":
    main()
