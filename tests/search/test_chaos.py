"""Chaos: kill -9 of busy workers and of their parent, a killed Ray driver, a trial a plain
``study.ask()`` left RUNNING. Every rerun ends with exactly N finished trials, nothing
RUNNING, every FAIL with a reason, and retried trials that copied parameters only.

Trials here load their data through a function that sleeps (``helpers.sleepy_digits``) while
the chaos goes on, so a worker is always caught busy; the reruns load at once. Waits
derive from what is awaited (START_S to start a process, TRIAL_S for a tiny trial, STOP_S for a
worker to stop its trial). Every process a test starts runs in a session of its own and is
killed by pid at the end (``spawn``): other users' processes on the machine are never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess

import optuna
import pytest
from helpers import START_S, STOP_S, TRIAL_S, complete, load, resnas_cmd, sleepy_env, sleepy_spec, wait_until

from resnas.search._storage import process_alive

pytestmark = pytest.mark.slow
TrialState = optuna.trial.TrialState
N = 4


def busy_pids(tmp_path, backend: str = "optuna") -> list[int]:
    running = load(tmp_path).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    owners = [t.user_attrs["owner"] for t in running if t.user_attrs.get("owner", {}).get("backend") == backend]
    return [o["pid"] for o in owners if process_alive(o["pid"], o["process_start"])]


def assert_clean_finish(tmp_path, proc: subprocess.CompletedProcess) -> optuna.Study:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    study = load(tmp_path)
    assert len(complete(study)) == N
    assert not study.get_trials(states=(TrialState.RUNNING,))
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))
    for t in study.get_trials(states=(TrialState.FAIL,)):
        assert t.user_attrs.get("fail_reason") and t.user_attrs.get("fail_detail"), (t.number, t.user_attrs)
    for t in complete(study):
        assert "fail_reason" not in t.user_attrs and "fail_detail" not in t.user_attrs, (t.number, t.user_attrs)
    return study


def kill_a_busy_worker_then_the_parent(spawn, tmp_path, spec) -> int:
    """Start ``--jobs 2``; kill -9 one worker inside a trial, then the parent. Returns the killed pid."""
    parent = spawn(
        resnas_cmd("search", spec, "--trials", N, "--jobs", "2"),
        cwd=tmp_path,
        env=sleepy_env(600),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pids = wait_until("both workers inside a trial", lambda: len(busy_pids(tmp_path)) == 2, START_S + TRIAL_S)
        pids = busy_pids(tmp_path)
        os.kill(pids[0], signal.SIGKILL)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        # The surviving worker is told by the kernel that its parent died: it stops its trial.
        wait_until(
            f"worker {pids[1]} to stop its trial and end with its parent", lambda: not process_alive(pids[1]), STOP_S
        )
    finally:
        parent.kill_all()
    return pids[0]


def test_killed_workers_parents_and_plain_asks_end_with_exactly_n(cli, spawn, tmp_path):
    spec = sleepy_spec(tmp_path)
    killed = [kill_a_busy_worker_then_the_parent(spawn, tmp_path, spec) for _ in range(2)]
    study = load(tmp_path)
    asked = study.ask()  # a user's script that died between ask() and tell()
    # A RUNNING trial with no owner and no heartbeat is failed once it is older than the grace; a trial
    # the rerun itself just created is that until its worker records itself, a moment later, however
    # loaded the machine: 10 s covers that moment, and the asked trial is failed once that old.
    rerun = cli("search", spec, "--trials", N, "--jobs", "2", env=sleepy_env(0, RESNAS_GRACE_SECONDS="10"))
    study = assert_clean_finish(tmp_path, rerun)
    by_reason: dict[str, list] = {}
    for t in study.get_trials(states=(TrialState.FAIL,)):
        by_reason.setdefault(t.user_attrs["fail_reason"], []).append(t)
    lost = {t.user_attrs["owner"]["pid"] for t in by_reason["worker lost"] if "owner" in t.user_attrs}
    assert set(killed) <= lost
    assert any("no owner" in t.user_attrs["fail_detail"] for t in by_reason["worker lost"])
    assert study.trials[asked.number].state == TrialState.FAIL
    assert len(by_reason.get("interrupted", [])) == 2, "each surviving worker stopped its trial when the parent died"
    retried = {t.user_attrs["retry_of"] for t in study.trials if "retry_of" in t.user_attrs}
    failed = study.get_trials(states=(TrialState.FAIL,))
    requeueable = {t.number for t in failed if t.params or t.system_attrs.get("fixed_params")}
    assert requeueable <= retried, "every failed trial was queued again"


def test_killed_ray_driver_is_resumed_by_the_optuna_backend(cli, spawn, tmp_path):
    pytest.importorskip("ray.tune", reason="Ray Tune is not installed (pip install 'resnas[ray]')")
    spec = sleepy_spec(tmp_path)
    driver = spawn(
        resnas_cmd("search", spec, "--backend", "ray", "--trials", N),
        cwd=tmp_path,
        env=sleepy_env(600),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until("a Ray trial", lambda: busy_pids(tmp_path, "ray"), START_S + TRIAL_S)
    finally:
        driver.kill_all()  # the driver, the local Ray it started and its workers, by pid
        driver.wait()
    rerun = cli("search", spec, "--trials", N, env=sleepy_env(0))
    study = assert_clean_finish(tmp_path, rerun)
    orphans = study.get_trials(states=(TrialState.FAIL,))
    assert orphans and {t.user_attrs["fail_reason"] for t in orphans} == {"driver lost"}
    assert {t.number for t in orphans} <= {t.user_attrs.get("retry_of") for t in study.trials}
