"""The Ray Tune backend: same study, same records; a real two-node cluster; ASHA; retries; resume."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile

import optuna
import pandas as pd
import pytest
from helpers import ROOT, START_S, TINY, TRIAL_S, complete, load, resnas_cmd, sleepy_env, sleepy_spec, wait_until

pytest.importorskip("ray.tune", reason="Ray Tune is not installed (pip install 'resnas[ray]')")

pytestmark = pytest.mark.slow
TrialState = optuna.trial.TrialState
DIGITS = ROOT / "search_spaces" / "digits_cnn.yaml"


def test_ray_study_works_with_leaderboard_and_export(cli, tmp_path):
    proc = cli("search", DIGITS, "--backend", "ray", "--trials", "6", "--study", "r1", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # A line per trial as it finishes: printed along the way, so their elapsed times differ.
    lines = re.findall(r"^trial (\d+) COMPLETE in [\d.]+ s: .* elapsed (\S+), eta", proc.stdout, re.M)
    assert sorted(int(n) for n, _ in lines) == list(range(6)), proc.stdout
    assert len({elapsed for _, elapsed in lines}) > 1, proc.stdout
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


@pytest.mark.parametrize("sampler", [optuna.samplers.NSGAIISampler, optuna.samplers.TPESampler])
def test_the_searcher_pickles_as_tune_pickles_it(tmp_path, sampler):
    """Tune pickles its searcher when a run starts and at checkpoints; Optuna 5's studies and
    samplers hold thread locks. What is pickled leaves them out: the study resumes from its database."""
    import pickle

    from resnas import parse_space
    from resnas.search._ray import ResnasOptunaSearch, _TrialLog
    from resnas.search._storage import open_storage

    def searcher() -> ResnasOptunaSearch:
        return ResnasOptunaSearch(
            parse_space(TINY.read_text()),
            _TrialLog(),
            "none",
            metric="val_accuracy",
            mode="max",
            sampler=sampler(seed=0),
            study_name="pickled",
            storage=open_storage(f"sqlite:///{tmp_path / 'p.db'}", heartbeat=False),
        )

    first = searcher()
    assert first.suggest("t1")  # a trial drawn: the study and its trials exist
    state = pickle.loads(pickle.dumps(first))
    assert state.stopper == "none" and state.log is not None
    first.save(str(tmp_path / "searcher.pkl"))
    again = searcher()
    again.restore(str(tmp_path / "searcher.pkl"))
    assert again._ot_study.study_name == "pickled" and again.suggest("t2")
    assert len(again._ot_study.trials) == 2


def test_asha_stops_weak_trials_and_records_their_epochs(cli, tmp_path):
    spec = tmp_path / "tiny.yaml"  # searchable epochs: a trial that trained all of its own is complete
    spec.write_text(
        TINY.read_text()
        .replace("epochs: 4", "epochs: {int: [3, 4]}")
        .replace("seed: 0}", "seed: 0, pruner: hyperband}")
    )
    proc = cli("search", spec, "--backend", "ray", "--trials", "6", timeout=START_S + 6 * TRIAL_S)
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
    proc = cli("search", spec, "--backend", "ray", "--trials", "4", timeout=START_S + 4 * TRIAL_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = complete(load(tmp_path))
    assert len(done) == 4, [(t.state, t.user_attrs.get("stopped_by")) for t in load(tmp_path).trials]
    assert all(t.user_attrs["epochs"] == t.user_attrs["train"]["epochs"] for t in done)
    assert all(t.user_attrs["owner"]["backend"] == "ray" for t in done)


def test_failing_trial_is_retried_then_recorded(cli, tmp_path):
    spec = tmp_path / "flaky.yaml"
    # The loader passes the search's check, then fails twice: the first trial raises in its worker, is
    # retried once, raises again and is recorded FAIL; the search goes on to the requested total.
    spec.write_text(
        TINY.read_text().replace(
            "{dataset: digits, limit: 500}",
            "{dataset: 'helpers:flaky_digits', shape: [1, 8, 8], classes: 10, limit: 500}",
        )
    )
    env = {"RESNAS_ALLOW_CODE": "1", "RESNAS_TEST_FLAKY": str(tmp_path / "calls"), "PYTHONPATH": str(ROOT / "tests")}
    args = ("search", spec, "--backend", "ray", "--trials", "4", "--max-failures", "1", "--max-concurrent", "1")
    proc = cli(*args, timeout=START_S + 6 * TRIAL_S, env=env)  # 4 trials and 2 failed attempts
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = load(tmp_path)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1
    assert failed[0].user_attrs["fail_reason"] == "error", failed[0].user_attrs.get("fail_detail")
    # The exception's type and message, as the optuna backend records them.
    assert failed[0].user_attrs["fail_detail"] == (
        "DataError: data.dataset: helpers:flaky_digits raised RuntimeError: the flaky loader failed (call 3)"
    )
    assert failed[0].user_attrs["ray_failures"] == 2  # the first attempt and one retry
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 4


def test_killed_driver_resumes_to_the_total(cli, spawn, tmp_path):
    spec = sleepy_spec(tmp_path)  # the first run's trials sleep in their data function; the rerun's load at once
    driver = spawn(
        resnas_cmd("search", spec, "--backend", "ray", "--trials", "3"),
        cwd=tmp_path,
        env=sleepy_env(600),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    running = (TrialState.RUNNING,)
    wait_until("a Ray trial", lambda: load(tmp_path).get_trials(states=running), START_S + TRIAL_S)
    driver.kill_all()  # the driver, the local Ray it started and that Ray's workers, by pid
    driver.wait()
    done = cli("search", spec, "--backend", "ray", "--trials", "3", env=sleepy_env(0), timeout=START_S + 3 * TRIAL_S)
    assert done.returncode == 0, done.stderr[-2000:]
    study = load(tmp_path)
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))
    assert not study.get_trials(states=running)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 3
    orphans = [t for t in study.trials if t.state == TrialState.FAIL]
    assert orphans and {t.user_attrs["fail_reason"] for t in orphans} == {"driver lost"}
    retried = {t.user_attrs.get("retry_of") for t in study.trials}
    assert {t.number for t in orphans} <= retried


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(spawn):
    """A real two-node Ray cluster on loopback addresses, with token authentication.

    Ray turns --node-ip-address 127.0.0.1 into the machine's outward address; other
    loopback addresses (127.0.0.2, 127.0.0.3) it keeps. Ports are free ones, and each node
    keeps its files (and the cluster's address) in a directory of its own, so that a Ray of
    another user on this machine neither collides with this one nor joins it. Teardown
    stops the nodes' processes by pid (``spawn``), never with ``ray stop``.
    Yields (environment, head address).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--num-cpus", "1", "--disable-usage-stats"]
    head = f"127.0.0.2:{free_port('127.0.0.2')}"
    dirs = [tempfile.mkdtemp(prefix="ray-", dir="/tmp") for _ in range(2)]  # short: socket paths are limited
    nodes = (
        [
            *ray,
            "--head",
            "--node-ip-address",
            "127.0.0.2",
            "--port",
            head.split(":")[1],
            "--include-dashboard",
            "false",
        ],
        [*ray, "--address", head, "--node-ip-address", "127.0.0.3"],
    )
    try:
        for args, temp in zip(nodes, dirs):
            node = spawn(
                [*args, "--temp-dir", temp], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            out, _ = node.communicate(timeout=START_S)  # `ray start` returns once its node is up
            assert node.returncode == 0, out[-2000:]
        yield env, head
    finally:
        for temp in dirs:
            shutil.rmtree(temp, ignore_errors=True)


def test_two_node_cluster_runs_trials_on_both_nodes(cli, ray_cluster, tmp_path):
    env, head = ray_cluster
    args = ("search", TINY, "--backend", "ray", "--trials", "4", "--address", head, "--cpus-per-trial", "1")
    proc = cli(*args, env=env, timeout=START_S + 4 * TRIAL_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = load(tmp_path)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert len({t.user_attrs["node"] for t in finished}) == 2, "trials ran on both nodes"
    assert {t.user_attrs["node_ip"] for t in finished} == {"127.0.0.2", "127.0.0.3"}
