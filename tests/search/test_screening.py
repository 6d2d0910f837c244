"""Screening and what every trial records before training."""

from __future__ import annotations

import re

import optuna
import pytest
from helpers import TINY

from resnas import parse_space
from resnas.errors import SpecError
from resnas.scores import SCORES
from resnas.search import search
from resnas.space._model import ScreenSpec

SCREENED = (
    TINY.read_text()
    .replace(
        "search: {trials: 4, sampler: random, seed: 0}",
        "objectives: [{metric: val_accuracy, direction: maximize}, {metric: params, direction: minimize}]\n"
        "search: {trials: 2, sampler: random, seed: 0, baselines: false, screen: {score: synflow, pool: 3, keep: 1}}",
    )
    .replace("epochs: 4", "epochs: 2")
    .replace("limit: 500", "limit: 200")
)


@pytest.mark.slow
def test_screened_search_trains_the_best_of_each_pool(tmp_path, run_cli):
    space = parse_space(SCREENED, "screened.yaml")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = search(space, storage=url)
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    out = [t for t in trials if "screened_out" in t.user_attrs]
    assert len(done) == 2 and len(out) == 4 and len(trials) == 6
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in out)
    for first in (0, 3):  # one worker: each pool is three consecutive trials; the best of it is trained
        pool = trials[first : first + 3]
        best = max(pool, key=lambda t: t.user_attrs["scores"]["synflow"])
        assert best.state == optuna.trial.TrialState.COMPLETE
    for t in done:
        assert set(t.user_attrs["scores"]) == set(SCORES)
        assert len(t.user_attrs["grad_profile"]["weight"]) == len(t.user_attrs["architecture"]["blocks"])
        assert len(t.user_attrs["history"]) == 2  # learning curves for a two-objective study
        assert t.user_attrs["placements"] == "none" or "→" in t.user_attrs["placements"]
    assert {u.user_attrs["screened_out"]["score"] for u in out} == {"synflow"}
    # resnas diagnose --study --trial shows the profile the trial recorded
    t = done[0]
    code, stdout, err = run_cli("diagnose", "--storage", url, "--study", "tiny", "--trial", t.number)
    assert code == 0, err
    shown = float(re.search(r"init: gradient ratio last/first block ([0-9.e+-]+)x", stdout).group(1))
    assert shown == pytest.approx(t.user_attrs["grad_profile"]["ratio"], rel=0.01)
    code, _, err = run_cli("diagnose", "--storage", url, "--study", "tiny", "--trial", 99)
    assert code == 2 and "no trial 99" in err


def test_screen_settings_are_checked_at_parse_time():
    assert set(ScreenSpec.model_fields["score"].annotation.__args__) == set(SCORES)
    bad = SCREENED.replace("pool: 3, keep: 1", "pool: 2, keep: 2")
    with pytest.raises(SpecError, match="search.screen"):
        parse_space(bad, "bad.yaml")
    with pytest.raises(SpecError, match="search.screen.score"):
        parse_space(SCREENED.replace("score: synflow", "score: magic"), "bad.yaml")
