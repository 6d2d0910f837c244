"""What a search shows while it runs: a line per finished trial, epochs within a trial, an ETA."""

from __future__ import annotations

import io
import logging
import re

import optuna
from helpers import TINY
from rich.console import Console

import resnas.search._progress as progress_module
from resnas import load_space
from resnas.search import search


def test_terminal_shows_trial_lines_epochs_and_eta(tmp_path, monkeypatch, capsys):
    screen = io.StringIO()
    monkeypatch.setattr(progress_module, "Console", lambda **_: Console(file=screen, force_terminal=True, width=250))
    url = f"sqlite:///{tmp_path / 'resnas.db'}"
    optuna.logging.set_verbosity(logging.INFO)
    search(load_space(TINY), storage=url, trials=1)
    search(load_space(TINY), storage=url, trials=2)  # resumes: Optuna would say "Using an existing study"
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).replace("\r", "\n")
    lines = re.findall(
        r"^trial (\d+) (\w+) in [\d.]+ s: val_accuracy=\S+ \| (\d)/(\d) finished.*eta (\S+)$", text, re.M
    )
    assert [(n, state, done, wanted) for n, state, done, wanted, _ in lines] == [
        ("0", "COMPLETE", "1", "1"),
        ("1", "COMPLETE", "2", "2"),
    ], text[-3000:]
    assert all(re.fullmatch(r"\d+:\d\d:\d\d", eta) for *_, eta in lines)  # never "-" once a trial ended
    # Within a trial: its epochs and current validation accuracy on the live line.
    assert re.search(r"trial 1: epoch [1-4]/4 val 0\.\d{3}", text), text[-3000:]
    # The Python API leaves Optuna's INFO lines out, and the caller's verbosity as it was.
    err = capsys.readouterr().err
    assert "Using an existing study" not in err and "finished with value" not in err, err
    assert optuna.logging.get_verbosity() == logging.INFO


def test_the_best_the_line_shows_is_kept_from_each_finished_trial_as_the_study_would_say(tmp_path):
    # The progress line keeps the best trial up to date from the trials it reads anyway; folded
    # over the finished trials in order it must equal the database's answer: COMPLETE only,
    # finite values, the lower number on a tie, either direction.
    from resnas.search._storage import open_storage

    values = [0.5, float("inf"), 0.7, 0.7, None, 0.2, 0.9, 0.9]
    for direction in ("maximize", "minimize"):
        storage = open_storage(f"sqlite:///{tmp_path / f'{direction}.db'}")
        study = optuna.create_study(storage=storage, study_name=direction, direction=direction)
        best = progress_module.best_of(study)
        assert best is None and progress_module.best_text(study, ["acc"], best) == "-"
        for v in values:
            state = optuna.trial.TrialState.FAIL if v is None else optuna.trial.TrialState.COMPLETE
            study.add_trial(
                optuna.trial.create_trial(state=state, value=v, params={}, distributions={})
                if v is not None
                else optuna.trial.create_trial(state=state, params={}, distributions={})
            )
            best = progress_module.better(study, best, study.trials[-1])
            assert best == progress_module.best_of(study), (direction, v)
        want = (6, 0.9) if direction == "maximize" else (5, 0.2)
        assert best == want
        assert progress_module.best_text(study, ["acc"], best) == f"acc {want[1]:.4g} (trial {want[0]})"
