"""``resnas search`` through the CLI: records, resume, a killed worker, a changed spec."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import optuna
import pandas as pd
from helpers import START_S, TINY, TRIAL_S, complete, load, resnas_cmd, sleepy_env, sleepy_spec, wait_until

from resnas import Architecture
from resnas.search import stored_space

METRICS = {
    "val_accuracy",
    "val_loss",
    "train_loss",
    "train_seconds",
    "train_flops",
    "params",
    "peak_memory_mb",
    "latency_ms",
}


def test_small_search_records_every_trial(cli, tmp_path):
    proc = cli("search", TINY, "--trials", "4")
    assert proc.returncode == 0, proc.stderr
    assert "leaderboard: tiny" in proc.stdout
    study = load(tmp_path)
    done = complete(study)
    assert len(done) == 4
    for t in done:
        arch = Architecture.from_dict(t.user_attrs["architecture"])
        assert arch.fingerprint == t.user_attrs["fingerprint"]
        assert set(t.user_attrs["metrics"]) >= METRICS
        assert all(t.user_attrs["metrics"][m] >= 0 for m in METRICS)
        assert t.user_attrs["epochs"] == 4
        assert t.user_attrs["device"] == "cpu"
        assert {"torch", "optuna", "resnas"} <= set(t.user_attrs["versions"])
        assert isinstance(t.user_attrs["seed"], int) and t.user_attrs["host"]
    assert stored_space(study).text == TINY.read_text()
    # A plain Optuna study: metric names, and a CSV leaderboard with one row per finished trial.
    assert study.metric_names == ["val_accuracy"]
    proc = cli("leaderboard", "--study", "tiny", "--csv", "board.csv")
    assert proc.returncode == 0, proc.stderr
    board = pd.read_csv(tmp_path / "board.csv")
    assert len(board) == 4 and list(board["rank"]) == [1, 2, 3, 4]
    assert board["val_accuracy"].is_monotonic_decreasing
    proc = cli("studies")
    assert proc.returncode == 0 and "tiny" in proc.stdout


def test_resume_continues_without_retraining(cli, tmp_path):
    assert cli("search", TINY, "--trials", "4").returncode == 0
    first = {t.number: t.datetime_complete for t in complete(load(tmp_path))}
    proc = cli("search", TINY, "--trials", "7")
    assert proc.returncode == 0, proc.stderr
    study = load(tmp_path)
    assert len(complete(study)) == 7 and len(study.trials) == 7
    assert {t.number: t.datetime_complete for t in complete(study) if t.number in first} == first
    # Resume from the database alone: no spec file.
    proc = cli("search", "--study", "tiny", "--trials", "8")
    assert proc.returncode == 0, proc.stderr
    assert len(complete(load(tmp_path))) == 8


def test_changed_spec_is_refused_and_study_untouched(cli, tmp_path):
    assert cli("search", TINY, "--trials", "2").returncode == 0
    before = [(t.number, t.state, t.values, t.user_attrs) for t in load(tmp_path).trials]
    changed = tmp_path / "tiny.yaml"
    changed.write_text(TINY.read_text().replace("epochs: 4", "epochs: 3").replace("channels: 8}", "channels: 16}"))
    proc = cli("search", changed, "--trials", "3")
    assert proc.returncode == 2
    assert "train.epochs" in proc.stderr and "network.stem.channels" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert [(t.number, t.state, t.values, t.user_attrs) for t in load(tmp_path).trials] == before
    # The same spec with only a different trial count is the same study.
    assert cli("search", TINY, "--trials", "3").returncode == 0


def wait_for_running(tmp_path, timeout: float = START_S) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            running = load(tmp_path).get_trials(states=(optuna.trial.TrialState.RUNNING,))
        except Exception:
            continue
        if running and running[0].user_attrs.get("fingerprint"):
            return running[0].number
    raise AssertionError(f"no trial started within {timeout:g} s")


def slow_spec(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.read_text().replace("epochs: 4", "epochs: 60").replace("limit: 500", "limit: 1000"))
    return spec


def test_killed_worker_trial_fails_and_is_retried(cli, spawn, tmp_path):
    spec = sleepy_spec(tmp_path)  # the first run's trial hangs in its data function; the rerun's loads at once
    proc = spawn(
        resnas_cmd("search", spec, "--trials", "2"),
        cwd=tmp_path,
        env=sleepy_env(600),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = wait_for_running(tmp_path)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    params = load(tmp_path).trials[killed].params
    # No wait for a heartbeat to go stale: the trial's owner record names a process that is gone.
    done = cli("search", spec, "--trials", "2", env=sleepy_env(0))
    assert done.returncode == 0, done.stderr
    study = load(tmp_path)
    states = {t.number: t.state for t in study.trials}
    assert states[killed] == optuna.trial.TrialState.FAIL
    assert study.trials[killed].user_attrs["fail_reason"] == "worker lost"
    assert str(proc.pid) in study.trials[killed].user_attrs["fail_detail"]
    assert optuna.trial.TrialState.RUNNING not in states.values()
    assert len(complete(study)) == 2
    numbers = [t.number for t in study.trials]
    assert numbers == sorted(set(numbers))
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == killed]
    assert retried and retried[0].params == params and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert "fail_reason" not in retried[0].user_attrs, "a retry copies parameters, not the failure record"


def test_sigterm_ends_the_trial_cleanly_and_requeues_it(cli, spawn, tmp_path):
    spec = slow_spec(tmp_path)
    proc = spawn(
        resnas_cmd("search", spec, "--trials", "2"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stopped = wait_for_running(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    study = load(tmp_path)
    trial = study.trials[stopped]
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["fail_reason"] == "interrupted"
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [trial.params]


def test_same_seed_same_trials(cli, tmp_path):
    def run(sub: str) -> list:
        (tmp_path / sub).mkdir()
        proc = subprocess.run(
            resnas_cmd("search", TINY, "--trials", "3", "--jobs", "1"),
            cwd=tmp_path / sub,
            capture_output=True,
            text=True,
            timeout=START_S + 3 * TRIAL_S,
        )
        assert proc.returncode == 0, proc.stderr
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / sub / 'resnas.db'}")
        out = []
        for t in study.trials:
            m = {k: v for k, v in t.user_attrs["metrics"].items() if k not in ("train_seconds", "latency_ms")}
            out.append((t.params, t.values, json.dumps(m, sort_keys=True)))
        return out

    assert run("a") == run("b")


def test_sigterm_stops_every_worker_of_a_jobs_run(spawn, tmp_path):
    spec = slow_spec(tmp_path)
    proc = spawn(
        resnas_cmd("search", spec, "--trials", "4", "--jobs", "2"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = (optuna.trial.TrialState.RUNNING,)
    wait_until("both workers inside a trial", lambda: len(load(tmp_path).get_trials(states=running)) == 2, START_S)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    study = load(tmp_path)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    stopped = [t for t in study.trials if t.user_attrs.get("fail_reason") == "interrupted"]
    assert len(stopped) == 2
    queued = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert sorted(t.user_attrs["retry_of"] for t in queued) == sorted(t.number for t in stopped)


def test_two_signals_requeue_every_trial_and_exit_130(spawn, tmp_path):
    """TERM, TERM: with --jobs 2 and in one process, every running trial ends FAIL
    (interrupted) and is queued again, nothing is left RUNNING, and the exit code is 130."""
    spec = sleepy_spec(tmp_path)
    for jobs, study_name in ((2, "jobs"), (1, "single")):
        proc = spawn(
            resnas_cmd("search", spec, "--trials", "4", "--jobs", jobs, "--study", study_name),
            cwd=tmp_path,
            env=sleepy_env(600),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        running = (optuna.trial.TrialState.RUNNING,)
        wait_until(
            f"{jobs} worker(s) inside a trial",
            lambda: len(load(tmp_path, study_name).get_trials(states=running)) == jobs,  # noqa: B023
            START_S,
        )
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        study = load(tmp_path, study_name)
        assert not study.get_trials(states=running)
        stopped = [t for t in study.trials if t.user_attrs.get("fail_reason") == "interrupted"]
        assert len(stopped) == jobs and all(t.state == optuna.trial.TrialState.FAIL for t in stopped)
        queued = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
        assert sorted(t.user_attrs["retry_of"] for t in queued) == sorted(t.number for t in stopped)
