"""Start-up and per-trial overhead of ``resnas search`` as a study grows: 0, 2,000, 10,000 trials.

Each study is filled with copies of one real finished trial (its full record: architecture,
metrics, costs), then ``resnas search --trials K+M`` resumes it and trains M more tiny
trials (1 epoch of 100 digits). Figures, per study size:

- start-up: seconds from launching the command to the first new trial starting;
- per trial: wall seconds per new trial minus the trial's own train_seconds;
- leaderboard, studies: seconds for those commands;

each also as the difference from the empty study measured in the same run.

    python experiments/startup/run.py [--sizes 0 2000 10000] [--new 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[2]
TINY = (ROOT / "tests" / "data" / "tiny.yaml").read_text()
SPEC = TINY.replace("epochs: 4", "epochs: 1").replace("limit: 500", "limit: 100")


def resnas(*args: object, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "resnas", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"resnas {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start, proc


def fill(directory: Path, size: int) -> None:
    """A study of ``size`` finished trials, each a copy of one real trial's record (rows copied in
    SQL: adding 10,000 trials through Optuna would take longer than the measurement)."""
    (directory / "tiny.yaml").write_text(SPEC)
    resnas("search", "tiny.yaml", "--trials", 1, cwd=directory)
    db = directory / "resnas.db"
    if size == 0:
        optuna.delete_study(study_name="tiny", storage=f"sqlite:///{db}")
        return
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
    fresh = [t for t in study.trials if t.datetime_start and t.datetime_start.timestamp() >= launched]
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 2000, 10000])
    parser.add_argument("--new", type=int, default=3, help="trials trained on top of each study")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            directory = Path(tmp) / str(size)
            directory.mkdir()
            fill(directory, size)
            rows[size] = measure(directory, size, args.new)
    base = rows[args.sizes[0]]
    print(f"| trials | {' | '.join(base)} |")
    print(f"|---:|{'---:|' * len(base)}")
    for size, row in rows.items():
        cells = [f"{v:.2f} s (+{v - base[k]:.2f})" if size != args.sizes[0] else f"{v:.2f} s" for k, v in row.items()]
        print(f"| {size:,} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
