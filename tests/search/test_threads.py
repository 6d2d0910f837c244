"""Torch threads: set per worker, recorded per trial; a trial reproduced in a fresh process is bit-exact."""

from __future__ import annotations

import re

import pytest
from helpers import TINY

from resnas.search._backend import cores, worker_threads

VAL = ("val_accuracy", "val_loss", "train_loss")


def test_workers_share_the_cores():
    assert worker_threads(None, 1) is None  # one process keeps torch's default
    assert worker_threads(None, 2) == max(1, cores() // 2)
    assert worker_threads(None, 4 * cores()) == 1
    assert worker_threads(3, 2) == 3


@pytest.mark.slow
def test_same_trial_same_threads_same_metrics_in_fresh_processes(cli, tmp_path):
    # Two workers share the cores: each trial records the torch threads it ran with.
    proc = cli("search", TINY, "--trials", "2", "--jobs", "2", "--storage", "sqlite:///a.db")
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = {t.number: t for t in load_db(tmp_path / "a.db").trials}
    threads = {t.user_attrs["torch_threads"] for t in first.values()}
    assert threads == {max(1, cores() // 2)}, threads
    assert all(t.user_attrs["interop_threads"] >= 1 for t in first.values())
    # The same trials (same spec, seeds, thread count) in another fresh process, told the recorded
    # count while OMP_NUM_THREADS says otherwise: the same metrics, bit for bit.
    n = threads.pop()
    env = {"OMP_NUM_THREADS": str(n + 1)}
    # Trial 0 is the queued baseline, the same candidate in every study of this spec.
    proc = cli("search", TINY, "--trials", "1", "--threads", n, "--storage", "sqlite:///b.db", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (again,) = load_db(tmp_path / "b.db").trials
    assert again.user_attrs["torch_threads"] == n and again.params == first[0].params
    assert {k: again.user_attrs["metrics"][k] for k in VAL} == {k: first[0].user_attrs["metrics"][k] for k in VAL}
    # export --weights retrains a trial in a fresh process under its recorded threads and seed.
    proc = cli("export", "--storage", "sqlite:///a.db", "--trial", "1", "-o", "n.py", "--weights", "w.st", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("retrained"))
    assert f"{n} torch threads" in line and line.endswith("(as recorded)"), line
    again = dict(re.findall(r"(val_accuracy|val_loss|train_loss) (\S+?)[,( ]", line))
    assert {k: float(v) for k, v in again.items()} == {k: first[1].user_attrs["metrics"][k] for k in VAL}


def load_db(path):
    import optuna

    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{path}")
