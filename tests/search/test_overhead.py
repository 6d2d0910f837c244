"""What a search and the reports cost beyond training: attribute writes per trial, what a
resumed search and the leaderboard read from a large study, FLOP counting, Pareto ranks."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import optuna
import pytest
import torch
from helpers import PG_URL, ROOT, TINY, postgres_up
from torch.utils.flop_counter import FlopCounterMode

from resnas.costs import flops_per_sample
from resnas.nn import build
from resnas.report import pareto_ranks
from resnas.scores import SCORES
from resnas.search import search
from resnas.search._storage import ResnasStorage, lean, open_storage, params_written_once, set_trial_attrs
from resnas.space import load_space, sample


def _startup_module():
    spec = importlib.util.spec_from_file_location("startup_run", ROOT / "experiments" / "startup" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec(tmp_path, epochs: int = 2):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.read_text().replace("epochs: 4", f"epochs: {epochs}").replace("limit: 500", "limit: 100"))
    return load_space(str(path))


class Calls:
    """Counts calls of storage methods (on the class: every storage of the process)."""

    def __init__(self, monkeypatch, *names: str):
        self.counts = dict.fromkeys(names, 0)
        for name in names:
            original = getattr(ResnasStorage, name)

            def counted(self_, *args, _name=name, _original=original, **kwargs):
                self.counts[_name] += 1
                return _original(self_, *args, **kwargs)

            monkeypatch.setattr(ResnasStorage, name, counted)


def test_a_trial_writes_its_attributes_once_per_phase(tmp_path, monkeypatch):
    space = _spec(tmp_path, epochs=3)
    calls = Calls(monkeypatch, "set_trial_user_attr", "set_trial_user_attrs")
    study = search(space, storage=f"sqlite:///{tmp_path / 'r.db'}", trials=3, device="cpu")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 3
    # start (owner, candidate) and end (diagnostics, history, metrics): two writes, none per epoch
    assert calls.counts["set_trial_user_attr"] == 0
    assert calls.counts["set_trial_user_attrs"] <= 2 * 3
    for t in done:
        if "repeat_of" in t.user_attrs:
            continue
        assert len(t.user_attrs["history"]) == t.user_attrs["epochs"] == 3
        assert {"owner", "architecture", "metrics", "scores", "finished"} <= set(t.user_attrs)


def test_a_trial_reads_its_twins_and_the_lost_trials_once_and_the_best_is_read_once(tmp_path, monkeypatch):
    # The twin check (an earlier result to copy, a running twin to wait for) is one query a
    # trial; so is the stale-trial check (the worker's, not Optuna's again a moment later); the
    # progress line reads the best trial once and then follows the trials it prints.
    space = _spec(tmp_path, epochs=1)
    calls = Calls(monkeypatch, "trials_with_attr", "best_first_value", "lost_trials")
    study = search(space, storage=f"sqlite:///{tmp_path / 'r.db'}", trials=4, device="cpu")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4
    assert calls.counts["trials_with_attr"] == 4
    assert calls.counts["best_first_value"] == 1
    assert calls.counts["lost_trials"] == 4 + 1  # before each trial, and before the worker sees it is done


def test_diagnostics_off_records_no_scores_and_resumes_the_same_study(tmp_path, monkeypatch):
    import resnas.screening

    calls = []
    original = resnas.screening.candidate_diagnostics
    monkeypatch.setattr(resnas.screening, "candidate_diagnostics", lambda *a: calls.append(1) or original(*a))
    url = f"sqlite:///{tmp_path / 'd.db'}"
    space = _spec(tmp_path, epochs=1)
    text = (tmp_path / "tiny.yaml").read_text()
    off = tmp_path / "off.yaml"
    off.write_text(text.replace("sampler: random,", "sampler: random, diagnostics: false,"))
    study = search(load_space(str(off)), storage=url, trials=2, device="cpu")
    assert calls == []
    for t in study.trials:
        assert "scores" not in t.user_attrs and "grad_profile" not in t.user_attrs
        assert t.user_attrs["placements"] == "none" or "→" in t.user_attrs["placements"]
        assert len(t.user_attrs["history"]) == 1
    study = search(space, storage=url, trials=6, device="cpu")  # diagnostics on again: the same study goes on
    assert len(study.trials) == 6
    trained = [t for t in study.trials[2:] if "repeat_of" not in t.user_attrs]
    assert trained and len(calls) == len(trained)
    assert all(set(t.user_attrs["scores"]) == set(SCORES) for t in trained)


@pytest.fixture(params=["sqlite", "postgresql"])
def new_study(request, tmp_path):
    """``new_study(heartbeat=False)``: a new study and its storage, on SQLite and on PostgreSQL
    (skipped when no server is up); a PostgreSQL study is deleted afterwards."""
    if request.param == "postgresql" and not postgres_up():
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    url = f"sqlite:///{tmp_path / 'n.db'}" if request.param == "sqlite" else PG_URL
    made = []

    def make(heartbeat: bool = False):
        storage = open_storage(url, heartbeat=heartbeat)
        study = optuna.create_study(study_name=f"new-{tmp_path.name}", storage=lean(storage), load_if_exists=True)
        made.append(storage)
        return storage, study

    yield make
    if request.param == "postgresql" and made:
        optuna.delete_study(study_name=f"new-{tmp_path.name}", storage=made[0])


def test_several_attributes_are_one_upsert_that_overwrites_and_refuses_a_finished_trial(new_study):
    storage, study = new_study()
    trial = study.ask()
    set_trial_attrs(trial, {"a": 1, "b": {"x": [1.5, None]}, "c": "text"})
    set_trial_attrs(trial, {"a": 2, "d": True})  # "a" again: overwritten, not duplicated
    set_trial_attrs(trial, {})
    stored = storage.get_trial(trial._trial_id).user_attrs
    assert stored == {"a": 2, "b": {"x": [1.5, None]}, "c": "text", "d": True}
    assert trial.user_attrs == stored
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError, match="finished"):
        storage.set_trial_user_attrs(trial._trial_id, {"late": 1})
    assert "late" not in storage.get_trial(trial._trial_id).user_attrs


def test_a_trials_parameters_are_one_write_that_optuna_reads_back(tmp_path, monkeypatch):
    storage = open_storage(f"sqlite:///{tmp_path / 'p.db'}", heartbeat=False)
    study = optuna.create_study(storage=lean(storage), sampler=optuna.samplers.RandomSampler(seed=0))
    calls = Calls(monkeypatch, "_write_params")
    trial = study.ask()
    with params_written_once(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        n = trial.suggest_int("n", 1, 9)
        assert trial.suggest_float("x", 0.0, 1.0) == x  # read back from the trial, not the storage
        assert storage.get_trial(trial._trial_id).params == {}  # nothing written yet
    assert calls.counts["_write_params"] == 1
    assert storage.get_trial(trial._trial_id).params == {"x": x, "n": n}
    other = study.ask()
    with pytest.raises(ValueError, match="ncompatible|annot set different distribution"):
        with params_written_once(other):
            other.suggest_categorical("x", ["a", "b"])  # "x" was a float in this study
    assert storage.get_trial(other._trial_id).params == {}
    study.tell(trial, 1.0)
    assert study.trials[0].params == {"x": x, "n": n}


def test_trial_counts_is_one_query_that_counts_as_is_finished_does(new_study):
    from resnas.search._names import CONFIRMS, FINISHED
    from resnas.search._progress import is_finished

    storage, study = new_study()
    S = optuna.trial.TrialState
    plan = [
        (S.COMPLETE, {}),
        (S.COMPLETE, {CONFIRMS: 0}),  # a confirmation run: never counted finished
        (S.PRUNED, {FINISHED: True}),  # stopped early by the pruner: finished
        (S.PRUNED, {}),  # a timeout: not finished
        (S.PRUNED, {FINISHED: False}),
        (S.FAIL, {FINISHED: True}),
        (S.RUNNING, {}),
        (S.RUNNING, {}),
    ]
    for state, attrs in plan:
        trial = study.ask()
        set_trial_attrs(trial, attrs)
        if state == S.COMPLETE:
            study.tell(trial, 1.0)
        elif state != S.RUNNING:
            study.tell(trial, state=state)
    study.enqueue_trial({})
    import sqlalchemy

    statements = []
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    got = storage.trial_counts(study._study_id, FINISHED, CONFIRMS)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    trials = storage.get_all_trials(study._study_id)
    assert got.finished == sum(is_finished(t) for t in trials) == 2
    assert (got.running, got.total) == (2, 9)
    assert got.by_state == {S.COMPLETE: 2, S.PRUNED: 3, S.FAIL: 1, S.RUNNING: 2, S.WAITING: 1}


@pytest.fixture
def away_from_utc(monkeypatch):
    """The process in a time zone that is not UTC (Optuna stores UTC and gives local times)."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_trial_is_read_as_optunas_get_trial_reads_it_in_every_state(new_study, away_from_utc):
    """ResnasStorage.get_trial and get_all_trials of unfinished trials (plain statements) give
    Optuna's FrozenTrials field by field: every state, every kind of parameter, infinite and NaN
    values, several objectives, start and end times in local time."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    storage, study = new_study()
    multi = optuna.create_study(storage=lean(storage), directions=["maximize", "minimize"])  # a new name
    S = optuna.trial.TrialState
    ids = []
    for i, (state, value) in enumerate(
        [(S.COMPLETE, 0.5), (S.COMPLETE, float("inf")), (S.PRUNED, None), (S.FAIL, None), (S.RUNNING, None)]
    ):
        trial = study.ask(
            {
                "lr": FloatDistribution(1e-4, 1.0, log=True),
                "depth": IntDistribution(1, 9, step=2),
                "kind": CategoricalDistribution(["identity", None, True, 3]),
            }
        )
        set_trial_attrs(trial, {"architecture": {"blocks": [1, 2], "i": i}, "note": None})
        trial.storage.set_trial_system_attr(trial._trial_id, "sys", [i, "x"])
        for step, v in enumerate([0.25, float("nan"), float("-inf"), float("inf")][: i + 1]):
            trial.report(v, step)
        if state == S.COMPLETE:
            study.tell(trial, value)
        elif state != S.RUNNING:
            study.tell(trial, state=state)
        ids.append(trial._trial_id)
    study.enqueue_trial({"lr": 0.01}, user_attrs={"retry_of": 0})
    ids.append(study.trials[-1]._trial_id)

    def same_as_optunas(trial_id: int) -> optuna.trial.FrozenTrial:
        ours = storage.get_trial(trial_id)
        theirs = optuna.storages.RDBStorage.get_trial(storage, trial_id)
        assert vars(ours).keys() == vars(theirs).keys()
        for field, value in vars(theirs).items():
            assert repr(vars(ours)[field]) == repr(value), (trial_id, field)  # repr: NaN equals NaN
        return ours

    try:
        both = multi.ask()
        multi.tell(both, [1.0, float("-inf")])
        assert same_as_optunas(both._trial_id).values == [1.0, float("-inf")]
    finally:
        optuna.delete_study(study_name=multi.study_name, storage=storage)
    states = {same_as_optunas(trial_id).state for trial_id in ids}
    assert states == {S.COMPLETE, S.PRUNED, S.FAIL, S.RUNNING, S.WAITING}
    study.enqueue_trial({"lr": 0.02})
    for wanted in [(S.WAITING,), (S.RUNNING,), (S.RUNNING, S.WAITING), (S.COMPLETE,), None]:
        ours = storage.get_all_trials(study._study_id, states=wanted)
        theirs = optuna.storages.RDBStorage.get_all_trials(storage, study._study_id, states=wanted)
        assert [repr(t) for t in ours] == [repr(t) for t in theirs] and ours, wanted
    assert [t.state for t in storage.get_all_trials(study._study_id, states=(S.WAITING,))] == [S.WAITING] * 2
    with pytest.raises(KeyError):
        storage.get_all_trials(study._study_id + 1000, states=(S.WAITING,))
    with pytest.raises(KeyError):
        storage.get_trial(max(ids) + 1000)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_heartbeat_is_one_upsert_on_the_databases_clock_that_the_stale_check_reads(new_study):
    import datetime

    import sqlalchemy
    from optuna.storages._rdb import models

    storage, study = new_study(heartbeat=True)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    storage.record_heartbeat(trial._trial_id)  # again: updated, not a second row
    H = models.TrialHeartbeatModel
    with storage.engine.connect() as conn:
        rows = conn.execute(sqlalchemy.select(H.heartbeat).where(H.trial_id == trial._trial_id)).all()
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
    assert len(rows) == 1
    beat = rows[0][0]
    assert abs((now.replace(tzinfo=None) - beat.replace(tzinfo=None)).total_seconds()) < 5
    assert trial._trial_id not in storage._get_stale_trial_ids(study._study_id)  # fresh: not stale
    with storage.engine.begin() as conn:  # an old beat: the stale check finds the trial
        old = beat - datetime.timedelta(hours=1)
        conn.execute(sqlalchemy.update(H).where(H.trial_id == trial._trial_id).values(heartbeat=old))
    assert trial._trial_id in storage._get_stale_trial_ids(study._study_id)


@pytest.mark.slow
def test_resumed_search_and_leaderboard_do_not_load_the_finished_trials(tmp_path, monkeypatch, run_cli):
    space = _spec(tmp_path, epochs=1)
    url = f"sqlite:///{tmp_path / 'resnas.db'}"
    search(space, storage=url, trials=1, device="cpu")
    _startup_module().copies(tmp_path / "resnas.db", 400)
    built = Calls(monkeypatch, "_build_frozen_trial_from_trial_model")
    search(space, storage=url, trials=402, device="cpu")
    # the two new trials and a few reads of them, not the 400 finished ones
    assert built.counts["_build_frozen_trial_from_trial_model"] < 50
    before = built.counts["_build_frozen_trial_from_trial_model"]
    code, out, err = run_cli("leaderboard", "--storage", url, "--top", "5")
    assert code == 0, err
    assert "… 397 more, see `resnas leaderboard`" in out
    assert built.counts["_build_frozen_trial_from_trial_model"] == before  # read in plain SQL
    code, out, err = run_cli("studies", "--storage", url)
    assert code == 0 and "402" in out, err
    assert built.counts["_build_frozen_trial_from_trial_model"] == before


@pytest.mark.parametrize(
    "spec",
    [
        "tests/data/tiny.yaml",
        "search_spaces/resnext_digits.yaml",
        "search_spaces/mlp_tabular.yaml",
        "search_spaces/mnist1d_conv1d.yaml",
        "search_spaces/mnist1d_transformer.yaml",
    ],
)
def test_flops_are_those_of_torch_flop_counter(spec):
    space = load_space(str(ROOT / spec))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    from resnas.data import load_data

    shape = tuple(load_data(space.spec.data, 0).x_train.shape[1:])
    for _ in range(2):
        model = build(sample(space, study.ask()).architecture)
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(2, *shape)).sum().backward()
        model.zero_grad(set_to_none=True)
        assert flops_per_sample(model, shape) == counter.get_total_flops() // 2 > 0


def _dominance_ranks(values: np.ndarray, maximize: list[bool]) -> list[int]:
    signed = np.where(maximize, -values, values)
    ranks, left, rank = [0] * len(signed), set(range(len(signed))), 0
    while left:
        rank += 1
        front = [
            i for i in left if not any((signed[j] <= signed[i]).all() and (signed[j] < signed[i]).any() for j in left)
        ]
        for i in front:
            ranks[i] = rank
        left -= set(front)
    return ranks


def test_pareto_ranks_are_non_dominated_fronts():
    rng = np.random.default_rng(0)
    for n, k in itertools.product((1, 7, 60), (2, 3)):
        values = rng.integers(0, 5, size=(n, k)).astype(float)  # ties on purpose
        values[0, 0] = -np.inf
        maximize = [True] + [False] * (k - 1)
        assert list(pareto_ranks(values, maximize)) == _dominance_ranks(values, maximize)


def test_digits_are_scikit_learns_read_without_importing_it():
    """The digits a process loads are scikit-learn's ``load_digits`` to the bit, scaled to
    [0, 1], and loading them does not import scikit-learn (about a second of every start)."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from resnas.data import _digits

    x, y = _digits()
    want_x, want_y = load_digits(return_X_y=True)
    assert x.dtype == np.float64 and x.shape == (1797, 1, 8, 8)
    assert np.array_equal(x, (want_x / 16.0).reshape(-1, 1, 8, 8)) and np.array_equal(y, want_y)
    code = (
        "import sys; from resnas.data import load_data; from resnas.space._model import DataSpec; "
        "d = load_data(DataSpec(dataset='digits'), 0); print(len(d.x_train), 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 1000 and out[1] == "False"
