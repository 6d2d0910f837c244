"""Search progress: a live bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from resnas.search._objective import CONFIRMS, FINISHED

TrialState = optuna.trial.TrialState


def is_finished(t: optuna.trial.FrozenTrial) -> bool:
    """Counts towards ``--trials``: COMPLETE, or stopped early by a pruner or scheduler;
    never a confirmation run (``--confirm``), which repeats a finished trial with another seed."""
    if CONFIRMS in t.user_attrs:
        return False
    return t.state == TrialState.COMPLETE or (t.state == TrialState.PRUNED and bool(t.user_attrs.get(FINISHED)))


def _store(study: optuna.Study):
    return getattr(study._storage, "_backend", study._storage)


def counts(study: optuna.Study):
    """Finished (as :func:`is_finished`), running and all trials, counted in the database:
    start-up and each trial's bookkeeping do not grow with the study."""
    return _store(study).trial_counts(study._study_id, FINISHED, CONFIRMS)


def finished_count(study: optuna.Study) -> int:
    if hasattr(_store(study), "trial_counts"):
        return counts(study).finished
    return sum(is_finished(t) for t in study.get_trials(deepcopy=False))


def best_text(study: optuna.Study) -> str:
    names = study.metric_names or ["value"]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    store = _store(study)
    if hasattr(store, "best_first_value"):
        best = store.best_first_value(study._study_id, maximize)
    else:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        pick = max if maximize else min
        top = pick(done, key=lambda t: t.values[0]) if done else None
        best = None if top is None else (top.number, top.values[0])
    if best is None:
        return "-"
    return f"{names[0]} {best[1]:.4g} (trial {best[0]})"


class SearchProgress:
    """Watches a study and shows finished/requested, best so far, elapsed and ETA."""

    def __init__(self, study: optuna.Study, requested: int, console: Console | None = None):
        self.study = study
        self.requested = requested
        self.console = console or Console(stderr=False)
        self.live = sys.stdout.isatty()
        self.start = time.time()
        self.initial = finished_count(study)
        self.seen: set[int] = set(self._finished())
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> SearchProgress:
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.study.study_name, total=self.requested, completed=self.initial, best=best_text(self.study)
            )
        else:
            print(f"study {self.study.study_name}: {self.initial} of {self.requested} trials finished", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self.update()
            self._bar.__exit__(*exc)

    def _finished(self) -> dict[int, int]:
        """{number: trial_id} of the trials in a final state, without loading them."""
        store = _store(self.study)
        if hasattr(store, "finished_numbers"):
            return store.finished_numbers(self.study._study_id)
        return {t.number: t._trial_id for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}

    def update(self) -> None:
        done = finished_count(self.study)
        if self._bar is not None:
            self._bar.update(self._task, completed=min(done, self.requested), best=best_text(self.study))
            return
        for number, trial_id in sorted(self._finished().items()):
            if number not in self.seen:
                self.seen.add(number)
                print(self._line(self.study._storage.get_trial(trial_id), done), flush=True)

    def _line(self, t: optuna.trial.FrozenTrial, done: int) -> str:
        elapsed = time.time() - self.start
        new = max(1, done - self.initial)
        eta = timedelta(seconds=int(elapsed / new * max(0, self.requested - done)))
        if t.state == TrialState.COMPLETE:
            names = self.study.metric_names or [f"objective{i}" for i in range(len(t.values))]
            what = " ".join(f"{n}={v:.4g}" for n, v in zip(names, t.values))
            if "repeat_of" in t.user_attrs:
                what += f" (repeat of trial {t.user_attrs['repeat_of']})"
        elif is_finished(t):
            what = f"stopped early after {t.user_attrs.get('epochs', '?')} epochs"
        else:
            reason = t.user_attrs.get("fail_reason", "pruned" if t.state == TrialState.PRUNED else "")
            what = f"{reason}: {t.user_attrs.get('fail_detail', '')}".strip(": ")
        return (
            f"trial {t.number} {t.state.name} {what} | {min(done, self.requested)}/{self.requested} finished, "
            f"best {best_text(self.study)}, elapsed {timedelta(seconds=int(elapsed))}, eta {eta}"
        )
