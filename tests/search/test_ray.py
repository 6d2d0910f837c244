"""The Ray Tune backend: same study, same records; a real two-node cluster; ASHA; retries; resume."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from helpers import ROOT, TINY, complete, load, resnas_cmd

pytest.importorskip("ray.tune", reason="Ray Tune is not installed (pip install 'resnas[ray]')")

pytestmark = pytest.mark.slow
TrialState = optuna.trial.TrialState
DIGITS = ROOT / "search_spaces" / "digits_cnn.yaml"


def test_ray_study_works_with_leaderboard_and_export(cli, tmp_path):
    proc = cli("search", DIGITS, "--backend", "ray", "--trials", "6", "--study", "r1", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = load(tmp_path, "r1")
    done = complete(study)
    assert len(done) == 6
    for t in done:
        assert {
            "architecture",
            "fingerprint",
            "metrics",
            "train",
            "seed",
            "versions",
            "node",
            "device",
            "torch_threads",
        } <= set(t.user_attrs)
        assert t.user_attrs["epochs"] == 8 and t.user_attrs["metrics"]["train_flops"] > 0
    proc = cli("leaderboard", "--study", "r1", "--csv", "board.csv")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "board.csv")) == 6
    proc = cli("export", "--study", "r1", "-o", "best.py")
    assert proc.returncode == 0, proc.stderr
    assert "class R1Net(nn.Module)" in (tmp_path / "best.py").read_text()


def test_asha_stops_weak_trials_and_records_their_epochs(cli, tmp_path):
    spec = tmp_path / "tiny.yaml"  # searchable epochs: a trial that trained all of its own is complete
    spec.write_text(
        TINY.read_text()
        .replace("epochs: 4", "epochs: {int: [3, 4]}")
        .replace("seed: 0}", "seed: 0, pruner: hyperband}")
    )
    proc = cli("search", spec, "--backend", "ray", "--trials", "6", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = load(tmp_path)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    own = {t.number: t.user_attrs["train"]["epochs"] for t in finished}
    assert sum(t.user_attrs["epochs"] for t in finished) < sum(own.values())
    stopped = [t for t in finished if t.state == TrialState.PRUNED]
    assert stopped and all(t.user_attrs["epochs"] < own[t.number] for t in stopped)
    assert all(t.user_attrs["stopped_by"] == "asha" for t in stopped)
    assert all(t.user_attrs["epochs"] == own[t.number] for t in finished if t.state == TrialState.COMPLETE)
    board = pd.read_csv(tmp_path / "b.csv") if cli("leaderboard", "--csv", "b.csv").returncode == 0 else None
    assert board is not None
    states = list(board["state"])
    assert states == sorted(states, key=lambda s: s != "COMPLETE"), "early-stopped trials rank below complete ones"


def test_pruner_none_trains_every_trial_all_its_epochs(cli, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.read_text().replace("epochs: 4", "epochs: {int: [2, 4]}"))
    proc = cli("search", spec, "--backend", "ray", "--trials", "4", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = complete(load(tmp_path))
    assert len(done) == 4, [(t.state, t.user_attrs.get("stopped_by")) for t in load(tmp_path).trials]
    assert all(t.user_attrs["epochs"] == t.user_attrs["train"]["epochs"] for t in done)
    assert all(t.user_attrs["owner"]["backend"] == "ray" for t in done)


def test_failing_trial_is_retried_then_recorded(cli, tmp_path):
    spec = tmp_path / "flaky.yaml"
    # The loader fails on its first two calls: the first trial raises in its worker, is retried once,
    # raises again and is recorded FAIL; the search goes on to the requested total.
    spec.write_text(
        TINY.read_text().replace(
            "{dataset: digits, limit: 500}",
            "{dataset: 'helpers:flaky_digits', shape: [1, 8, 8], classes: 10, limit: 500}",
        )
    )
    env = {"RESNAS_ALLOW_CODE": "1", "RESNAS_TEST_FLAKY": str(tmp_path / "calls"), "PYTHONPATH": str(ROOT / "tests")}
    args = ("search", spec, "--backend", "ray", "--trials", "4", "--max-failures", "1", "--max-concurrent", "1")
    proc = cli(*args, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = load(tmp_path)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1
    assert failed[0].user_attrs["fail_reason"] == "error", failed[0].user_attrs.get("fail_detail")
    # The exception's type and message, as the optuna backend records them.
    assert failed[0].user_attrs["fail_detail"] == "RuntimeError: the flaky loader failed (call 2)"
    assert failed[0].user_attrs["ray_failures"] == 2  # the first attempt and one retry
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 4


def test_killed_driver_resumes_to_the_total(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.read_text().replace("epochs: 4", "epochs: 40"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = resnas_cmd("search", spec, "--backend", "ray", "--trials", "3")
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(1)
            try:
                if load(tmp_path).get_trials(states=(TrialState.RUNNING,)):
                    break
            except Exception:
                continue
        else:
            raise AssertionError("no Ray trial started")
        time.sleep(3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    study = load(tmp_path)
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 3
    orphans = [t for t in study.trials if t.state == TrialState.FAIL]
    assert orphans
    retried = {t.user_attrs.get("retry_of") for t in study.trials}
    assert {t.number for t in orphans} <= retried


@pytest.fixture
def ray_cluster(tmp_path):
    """A real two-node Ray cluster on loopback addresses, with token authentication.

    Ray turns --node-ip-address 127.0.0.1 into the machine's outward address; other
    loopback addresses (127.0.0.2, 127.0.0.3) it keeps. The head listens on 6390 (Redis
    has 6379).
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [
                *ray,
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.2",
                "--port",
                "6390",
                "--include-dashboard",
                "false",
                *common,
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [*ray, "start", "--address", "127.0.0.2:6390", "--node-ip-address", "127.0.0.3", *common],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield env
    finally:
        subprocess.run([*ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_two_node_cluster_runs_trials_on_both_nodes(ray_cluster, tmp_path):
    proc = subprocess.run(
        resnas_cmd(
            "search", TINY, "--backend", "ray", "--trials", "4", "--address", "127.0.0.2:6390", "--cpus-per-trial", "1"
        ),
        cwd=tmp_path,
        env=ray_cluster,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = load(tmp_path)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert len({t.user_attrs["node"] for t in finished}) == 2, "trials ran on both nodes"
    assert {t.user_attrs["node_ip"] for t in finished} == {"127.0.0.2", "127.0.0.3"}
