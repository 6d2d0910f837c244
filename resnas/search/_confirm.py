"""Confirm the winners against seed noise: retrain the top K with more seeds, rank by the mean.

Each run is a trial of the same study (user attr ``confirms``: the trial it repeats) with
its own seed; it trains even though the candidate finished before, and it does not count
toward ``--trials``. Running the command again adds only the runs still missing.
"""

from __future__ import annotations

import optuna

from resnas.errors import ResnasError
from resnas.search._objective import CONFIRMS, Objective, TrialFailed, trials_with
from resnas.space import SearchSpace

TrialState = optuna.trial.TrialState


def check_confirm(top: int, finished: int, seeds: int) -> None:
    if top < 0 or seeds < 1:
        raise ResnasError(f"--confirm {top} --seeds {seeds}: need --confirm >= 0 and --seeds >= 1")
    if top > finished:
        raise ResnasError(f"--confirm {top}: larger than the {finished} finished trials of the study")


def confirm(study: optuna.Study, space: SearchSpace, top: int, seeds: int, device: str | None = None) -> list[int]:
    """Retrain the best ``top`` trials of ``study`` with ``seeds`` more seeds each; returns their numbers."""
    from resnas.report import leaderboard

    board = leaderboard(study)
    board = board[board["state"] == "COMPLETE"]
    check_confirm(top, len(board), seeds)
    chosen = [int(n) for n in board["trial"].head(top)]
    objective = Objective(space, device)
    for number in chosen:
        original = study._storage.get_trial(
            study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        )
        have = len(trials_with(study, CONFIRMS, number, (TrialState.COMPLETE,)))
        for _ in range(seeds - have):
            study.enqueue_trial(original.params, user_attrs={CONFIRMS: number})
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
    return chosen
