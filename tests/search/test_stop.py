"""A stop with --jobs ends the same way however the workers end: every trial FAIL and queued, exit 130."""

from __future__ import annotations

import os
import signal
import subprocess

import optuna
import pytest
from helpers import START_S, load, resnas_cmd, sleepy_env, sleepy_spec, wait_until

TrialState = optuna.trial.TrialState


@pytest.mark.slow
def test_workers_killed_during_a_stop_leave_no_trial_running(spawn, tmp_path):
    proc = spawn(
        resnas_cmd("search", sleepy_spec(tmp_path), "--trials", "4", "--jobs", "2"),
        cwd=tmp_path,
        env=sleepy_env(600),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = wait_until(
        "both workers inside a trial, its owner recorded",
        lambda: (
            (r := load(tmp_path).get_trials(states=(TrialState.RUNNING,)))
            and len(r) == 2
            and all("owner" in t.user_attrs for t in r)
            and r
        ),
        START_S,
    )
    # The parent is asked to stop, and its workers die before they hear of it (killed, as a
    # worker slower than the parent's patience would be): none of them writes its record.
    proc.send_signal(signal.SIGTERM)
    for t in running:
        os.kill(t.user_attrs["owner"]["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    study = load(tmp_path)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    stopped = [t for t in study.trials if t.number in {r.number for r in running}]
    assert all(t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted" for t in stopped)
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.user_attrs["retry_of"] for t in queued) == sorted(t.number for t in running)
