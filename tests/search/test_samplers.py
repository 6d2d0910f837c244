"""Every sampler and pruner the language names runs a search to its count."""

from __future__ import annotations

import optuna
import pytest
from helpers import TINY

from resnas import parse_space
from resnas.search import is_finished, search

TrialState = optuna.trial.TrialState


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc", "auto", "evolution"])
def test_samplers(tmp_path, sampler):
    text = TINY.read_text().replace("sampler: random", f"sampler: {sampler}")
    study = search(parse_space(text), storage=f"sqlite:///{tmp_path / 'r.db'}", trials=3)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3


def test_nsga2_with_two_objectives(tmp_path):
    text = TINY.read_text().replace("sampler: random", "sampler: nsga2")
    text += "objectives:\n  - {metric: val_accuracy, direction: maximize}\n  - {metric: params, direction: minimize}\n"
    study = search(parse_space(text), storage=f"sqlite:///{tmp_path / 'r.db'}", trials=3)
    assert study.metric_names == ["val_accuracy", "params"]
    assert all(len(t.values) == 2 for t in study.get_trials(states=(TrialState.COMPLETE,)))


def test_grid_covers_every_combination(tmp_path):
    text = TINY.read_text().replace("sampler: random", "sampler: grid")
    text = text.replace("count: {int: [0, 2]}", "count: all").replace(
        "kinds: [identity, projection]", "kinds: [identity]"
    )
    text = text.replace("lr: {float: [0.05, 0.2], log: true}", "lr: {choice: [0.05, 0.1]}")
    study = search(parse_space(text), storage=f"sqlite:///{tmp_path / 'r.db'}", trials=6)
    combos = {(t.params["network.stages[0].depth"], t.params["train.lr"]) for t in study.trials}
    assert len(combos) == 6 and len(study.trials) == 6


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_pruners_stop_trials_and_they_count_as_finished(tmp_path, pruner):
    text = TINY.read_text().replace(
        "search: {trials: 4, sampler: random, seed: 0}",
        f"search: {{trials: 10, sampler: random, seed: 0, pruner: {pruner}}}",
    )
    text = text.replace("epochs: 4", "epochs: 6")
    study = search(parse_space(text), storage=f"sqlite:///{tmp_path / 'r.db'}", trials=10)
    assert sum(is_finished(t) for t in study.trials) == 10
    for t in study.get_trials(states=(TrialState.PRUNED,)):
        assert t.user_attrs["epochs"] < 6 and "fail_reason" not in t.user_attrs
