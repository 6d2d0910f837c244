"""Search progress: a live bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from resnas.search._names import CONFIRMS, FINISHED
from resnas.search._storage import backend_of

TrialState = optuna.trial.TrialState


@contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's INFO lines ("Using an existing study", "Trial 3 finished with value ...") held back
    while resnas prints its own per-trial lines; Optuna's verbosity is restored afterwards, and
    nothing else of the caller's logging is touched."""
    before = optuna.logging.get_verbosity()
    if before < logging.WARNING:
        optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        if before < logging.WARNING:
            optuna.logging.set_verbosity(before)


def is_finished(t: optuna.trial.FrozenTrial) -> bool:
    """Counts towards ``--trials``: COMPLETE, or stopped early by a pruner or scheduler;
    never a confirmation run (``--confirm``), which repeats a finished trial with another seed."""
    if CONFIRMS in t.user_attrs:
        return False
    return t.state == TrialState.COMPLETE or (t.state == TrialState.PRUNED and bool(t.user_attrs.get(FINISHED)))


def _store(study: optuna.Study):
    return backend_of(study._storage)


def counts(study: optuna.Study):
    """Finished (as :func:`is_finished`), running and all trials, counted in the database:
    start-up and each trial's bookkeeping do not grow with the study."""
    return _store(study).trial_counts(study._study_id, FINISHED, CONFIRMS)


def finished_count(study: optuna.Study) -> int:
    if hasattr(_store(study), "trial_counts"):
        return counts(study).finished
    return sum(is_finished(t) for t in study.get_trials(deepcopy=False))


def best_of(study: optuna.Study) -> tuple[int, float] | None:
    """(number, value) of the COMPLETE trial with the best first objective value, read now."""
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    store = _store(study)
    if hasattr(store, "best_first_value"):
        return store.best_first_value(study._study_id, maximize)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pick = max if maximize else min
    top = pick(done, key=lambda t: t.values[0]) if done else None
    return None if top is None else (top.number, top.values[0])


def better(study: optuna.Study, best: tuple[int, float] | None, t: optuna.trial.FrozenTrial) -> tuple | None:
    """The best (number, value) once ``t`` has finished too: as :func:`best_of` would read it
    (COMPLETE, finite first value, the lower number on a tie), without reading the study."""
    if t.state != TrialState.COMPLETE or not t.values or not math.isfinite(t.values[0]):
        return best
    value = float(t.values[0])
    if best is None:
        return (t.number, value)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    ahead = value > best[1] if maximize else value < best[1]
    return (t.number, value) if ahead or (value == best[1] and t.number < best[0]) else best


def best_text(study: optuna.Study, names: list[str] | None, best: tuple[int, float] | None) -> str:
    """The best trial as the progress line says it; ``best``: (number, value) from
    :func:`best_of` or :func:`better`, None before any trial is COMPLETE."""
    names = names or study.metric_names or ["value"]
    if best is None:
        return "-"
    return f"{names[0]} {best[1]:.4g} (trial {best[0]})"


class _EtaColumn(ProgressColumn):
    """Time left, counted down between estimates (``task.fields['eta_end']``: a monotonic time)."""

    def render(self, task) -> Text:
        end = task.fields.get("eta_end")
        if end is None:
            return Text("eta -", style="progress.remaining")
        return Text(f"eta {timedelta(seconds=int(max(0.0, end - time.monotonic())))}", style="progress.remaining")


class SearchProgress:
    """Watches a study: a line per finished trial (number, state, metric, duration, reason on
    failure), and on a terminal a live bar with finished/requested, best so far, the epochs of the
    trials running now, elapsed time and an ETA from the mean time per trial so far (before the
    first trial ends, from the first epochs).

    ``epoch`` is told of each epoch of the running trials (from the training loop, a worker's
    queue or Ray's results); it and ``update`` may be called from any thread.
    """

    def __init__(
        self,
        study: optuna.Study,
        requested: int,
        console: Console | None = None,
        workers: int = 1,
        trackers: list | None = None,
    ):
        self.study = study
        self.requested = requested
        self.workers = max(1, workers)
        self.console = console or Console(stderr=False)
        self.live = self.console.is_terminal
        self.start = time.monotonic()
        self.names = study.metric_names  # read once: a search does not change them
        self.initial = finished_count(study)
        self.done = self.initial
        self.seen: set[int] = set(self._finished())
        self.best = best_of(study)  # read once; then kept up to date from each finished trial the display reads
        self.running: dict[int, tuple[int, int, float | None, float]] = {}  # trial: epoch, epochs, val acc, seconds
        self.eta_end: float | None = None
        self.trackers = trackers or []  # resnas.tracking.Tracker: each finished trial, with its epochs
        self.history: dict[int, list[dict[str, float]]] = {}  # trial: the metrics of each epoch seen
        self._lock = threading.RLock()
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> SearchProgress:
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"),
                TimeElapsedColumn(),
                _EtaColumn(),
                TextColumn("{task.fields[now]}"),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.study.study_name,
                total=self.requested,
                completed=self.initial,
                best=best_text(self.study, self.names, self.best),
                now="",
                eta_end=None,
            )
        self.say(f"study {self.study.study_name}: {self.initial} of {self.requested} trials finished")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self.update()
            self._bar.__exit__(*exc)
        for tracker in self.trackers:
            tracker.close()

    def say(self, line: str) -> None:
        """Print a line (above the live bar on a terminal)."""
        if self._bar is not None:
            self._bar.console.print(line, highlight=False, markup=False, soft_wrap=True)
        else:
            print(line, flush=True)

    def _finished(self) -> dict[int, int]:
        """{number: trial_id} of the trials in a final state, without loading them."""
        store = _store(self.study)
        if hasattr(store, "finished_numbers"):
            return store.finished_numbers(self.study._study_id)
        return {t.number: t._trial_id for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}

    def epoch(self, trial: int | None, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        """Trial ``trial`` (None: not known) finished ``epoch`` of its ``epochs``."""
        if trial is None:
            return
        with self._lock:
            self.history[trial] = [*self.history.get(trial, [])[: epoch - 1], dict(metrics)]
            self.running[trial] = (epoch, epochs, metrics.get("val_accuracy"), metrics.get("train_seconds", 0.0))
            if self.done == self.initial:  # once a trial has ended, the ETA moves only when another ends
                self._estimate()
            self._show()

    def _estimate(self) -> None:
        """ETA: the mean time per finished trial of this run times the trials still wanted; before
        the first one ends, the running trials' seconds per epoch times their epochs."""
        left = max(0, self.requested - self.done)
        new = self.done - self.initial
        now = time.monotonic()
        if new > 0:
            self.eta_end = now + (now - self.start) / new * left
        elif self.running:
            per_trial = [s / e * n for e, n, _, s in self.running.values() if e > 0 and s]
            if per_trial:
                self.eta_end = now + sum(per_trial) / len(per_trial) * left / self.workers

    def _show(self) -> None:
        if self._bar is None:
            return
        now = "  ".join(
            f"trial {n}: epoch {e}/{total}" + ("" if acc is None else f" val {acc:.3f}")
            for n, (e, total, acc, _) in sorted(self.running.items())
        )
        self._bar.update(
            self._task, completed=min(self.done, self.requested), now=now, eta_end=self.eta_end, refresh=True
        )

    def update(self) -> None:
        """Print a line for each trial that finished since the last call; refresh the bar."""
        with self._lock:
            self.done = finished_count(self.study)
            for number, trial_id in sorted(self._finished().items()):
                if number not in self.seen:
                    self.seen.add(number)
                    self.running.pop(number, None)
                    self._estimate()
                    t = self.study._storage.get_trial(trial_id)
                    self.best = better(self.study, self.best, t)
                    self.say(self._line(t))
                    self._track(t)
            if self._bar is not None:
                self._bar.update(self._task, best=best_text(self.study, self.names, self.best))
            self._show()

    def _track(self, t: optuna.trial.FrozenTrial) -> None:
        """Hand a finished trial to the trackers (--log); a tracker that fails is said, and dropped."""
        from resnas.tracking import epoch_history

        epochs = epoch_history(t, self.history.pop(t.number, None))
        for tracker in list(self.trackers):
            try:
                tracker.log_trial(self.study.study_name, t, epochs)
            except Exception as exc:
                self.trackers.remove(tracker)
                self.say(f"warning: --log {tracker.kind}: {type(exc).__name__}: {exc}; no more runs logged there")

    def _line(self, t: optuna.trial.FrozenTrial) -> str:
        elapsed = time.monotonic() - self.start
        if t.state == TrialState.COMPLETE:
            names = self.names or [f"objective{i}" for i in range(len(t.values))]
            what = " ".join(f"{n}={v:.4g}" for n, v in zip(names, t.values))
            if "repeat_of" in t.user_attrs:
                what += f" (repeat of trial {t.user_attrs['repeat_of']})"
        elif is_finished(t):
            what = f"stopped early after {t.user_attrs.get('epochs', '?')} epochs"
        else:
            reason = t.user_attrs.get("fail_reason", "pruned" if t.state == TrialState.PRUNED else "")
            what = f"{reason}: {t.user_attrs.get('fail_detail', '')}".strip(": ")
        took = ""
        if t.datetime_start is not None and t.datetime_complete is not None:
            took = f" in {(t.datetime_complete - t.datetime_start).total_seconds():.1f} s"
        eta = "-" if self.eta_end is None else timedelta(seconds=int(max(0.0, self.eta_end - time.monotonic())))
        best = best_text(self.study, self.names, self.best)
        return (
            f"trial {t.number} {t.state.name}{took}: {what} | {min(self.done, self.requested)}/{self.requested} "
            f"finished, best {best}, elapsed {timedelta(seconds=int(elapsed))}, eta {eta}"
        )
