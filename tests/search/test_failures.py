"""Failure is data: NaN losses, out-of-memory, timeouts and raising user code end trials, not searches."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from helpers import TINY

import resnas.search._objective as objective_module
from resnas import load_space, parse_space
from resnas.errors import ResnasError
from resnas.report import leaderboard
from resnas.search import search

TrialState = optuna.trial.TrialState


class Sabotaged(torch.nn.Module):
    """Wraps a network: NaN outputs from the second epoch on, or an out-of-memory error."""

    def __init__(self, inner: torch.nn.Module, mode: str, steps_per_epoch: int):
        super().__init__()
        self.inner, self.mode, self.steps, self.calls = inner, mode, steps_per_epoch, 0

    def forward(self, x):
        if self.training and x.shape[0] > 2:
            self.calls += 1
            if self.mode == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            if self.mode == "nan" and self.calls > self.steps:
                return self.inner(x) * float("nan")
        return self.inner(x)


def test_nan_and_oom_trials_fail_with_reasons_and_search_reaches_count(tmp_path, monkeypatch):
    real_build = objective_module.build
    modes = iter(["nan", "oom"])  # each trial builds once (measured, then trained)

    def build(arch):
        mode = next(modes, None)
        # the step-memory measurement is one forward pass before the training steps
        return Sabotaged(real_build(arch), mode, steps_per_epoch=11) if mode else real_build(arch)

    monkeypatch.setattr(objective_module, "build", build)
    study = search(load_space(TINY), storage=f"sqlite:///{tmp_path / 'r.db'}", trials=3)
    by_reason = {t.user_attrs.get("fail_reason"): t for t in study.trials if t.state != TrialState.COMPLETE}
    assert set(by_reason) == {"nonfinite", "oom"}
    assert by_reason["nonfinite"].state in (TrialState.FAIL, TrialState.PRUNED)
    assert by_reason["nonfinite"].user_attrs["epochs"] == 2
    assert by_reason["oom"].state in (TrialState.FAIL, TrialState.PRUNED)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    board = leaderboard(study)
    assert len(board) == 3 and board["val_accuracy"].map(math.isfinite).all()


def test_infinite_metric_is_never_best(tmp_path, monkeypatch):
    real = objective_module.measure_and_train
    calls = iter(range(100))

    def fake(*args, **kwargs):
        metrics, epochs, model = real(*args, **kwargs)
        if next(calls) == 0:
            metrics["val_accuracy"] = float("inf")
        return metrics, epochs, model

    monkeypatch.setattr(objective_module, "measure_and_train", fake)
    study = search(load_space(TINY), storage=f"sqlite:///{tmp_path / 'r.db'}", trials=2)
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["fail_reason"] == "nonfinite"
    assert math.isfinite(study.best_value)


def test_timeout_prunes_and_stops_a_hopeless_search(tmp_path):
    with pytest.raises(ResnasError, match="failed in a row"):
        search(load_space(TINY), storage=f"sqlite:///{tmp_path / 'r.db'}", trials=1, trial_timeout=1e-6)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'r.db'}")
    assert {t.state for t in study.trials} == {TrialState.PRUNED}
    assert {t.user_attrs["fail_reason"] for t in study.trials} == {"timeout"}


def test_user_data_error_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNAS_ALLOW_CODE", "1")
    text = TINY.read_text().replace(
        "{dataset: digits, limit: 500}", "{dataset: 'helpers:raising_data', shape: [1, 8, 8], classes: 10}"
    )
    with pytest.raises(ResnasError, match="the user's loader broke"):
        search(parse_space(text), storage=f"sqlite:///{tmp_path / 'r.db'}", trials=1)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'r.db'}")
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["fail_reason"] == "error"
    assert "the user's loader broke" in study.trials[0].user_attrs["fail_detail"]


def test_repeated_architecture_is_not_trained_again(tmp_path, monkeypatch):
    text = TINY.read_text().replace("lr: {float: [0.05, 0.2], log: true}", "lr: 0.1")
    text = text.replace("depth: {int: [1, 3]}", "depth: 1").replace("count: {int: [0, 2]}", "count: {int: [0, 1]}")
    trained = []
    real = objective_module.measure_and_train
    monkeypatch.setattr(objective_module, "measure_and_train", lambda *a, **k: trained.append(1) or real(*a, **k))
    study = search(parse_space(text), storage=f"sqlite:///{tmp_path / 'r.db'}", trials=6)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 6
    repeats = [t for t in done if "repeat_of" in t.user_attrs]
    assert len(repeats) == 6 - len(trained) and repeats
    for t in repeats:
        assert t.values == study.trials[t.user_attrs["repeat_of"]].values
