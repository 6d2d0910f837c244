"""Several workers on one study: SQLite with --jobs 4, and two processes on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import uuid

import optuna
import pytest
from helpers import PG_URL, START_S, TINY, TRIAL_S, complete, load, postgres_up, resnas_cmd


@pytest.mark.slow
def test_four_workers_on_one_sqlite_file(cli, tmp_path):
    proc = cli("search", TINY, "--trials", "20", "--jobs", "4")
    assert proc.returncode == 0, proc.stderr
    assert "database is locked" not in proc.stdout + proc.stderr
    study = load(tmp_path)
    done = complete(study)
    assert len(done) == 20
    assert not study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len({t.user_attrs["pid"] for t in done}) == 4, "every worker process finished trials"
    assert not [t.number for t in done if "repeat_of" in t.user_attrs], "workers proposed the same candidates"
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))


@pytest.mark.slow
@pytest.mark.skipif(not postgres_up(), reason="no PostgreSQL server on 127.0.0.1:5432")
def test_two_processes_share_a_postgres_study(spawn, tmp_path):
    name = f"tiny_{uuid.uuid4().hex[:8]}"
    args = resnas_cmd("search", TINY, "--storage", PG_URL, "--study", name, "--trials", "20")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        spawn(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=START_S + 20 * TRIAL_S) for p in procs]  # 20 trials between them
    try:
        for p, (out, err) in zip(procs, outputs):
            assert p.returncode == 0, err
            assert "database is locked" not in out + err
        study = optuna.load_study(study_name=name, storage=PG_URL)
        done = complete(study)
        assert len(done) == 20
        assert {t.user_attrs["pid"] for t in done} == {p.pid for p in procs}
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)
