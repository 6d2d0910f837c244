"""Read a study back: a ranked leaderboard and a list of studies, as pandas DataFrames.

Reports read the storage only; they work the same whichever backend ran the trials.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd

from resnas.search._names import CONFIRMS, FINISHED
from resnas.search._progress import counts as trial_counts
from resnas.search._progress import is_finished
from resnas.search._storage import ResnasStorage, backend_of, lean, open_storage
from resnas.search._study import REQUESTED, SPEC_HASH

TrialState = optuna.trial.TrialState
# The user attributes the leaderboard, the confirmed table and the summary read.
REPORT_KEYS = (
    *(CONFIRMS, FINISHED, "metrics", "baseline", "connections", "kinds", "epochs", "fingerprint"),
    *("repeat_of", "node", "host", "placements", "grad_profile", "scores"),
)


def pareto_ranks(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """Non-dominated sorting: rank 1 is the Pareto front, rank 2 the front without it, ...
    (Optuna's fast non-dominated sort, as NSGA-II ranks its population)."""
    from optuna.study._multi_objective import _fast_non_domination_rank

    signed = np.where(maximize, -values, values).astype(float)  # minimise everything
    if len(signed) == 0:
        return np.zeros(0, dtype=int)
    return np.asarray(_fast_non_domination_rank(signed), dtype=int) + 1


def finished_trials(study: optuna.Study, keys: tuple[str, ...] = REPORT_KEYS) -> list:
    """The study's COMPLETE and PRUNED trials, read once: from a resnas storage with only the
    user attributes in ``keys`` (plain SQL), from any other storage as Optuna's trials."""
    store = backend_of(study._storage)
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    if isinstance(store, ResnasStorage):
        return store.trial_records(study._study_id, keys, states)
    return study.get_trials(deepcopy=False, states=states)


def _row(t: optuna.trial.FrozenTrial, names: list[str]) -> dict:
    attrs = t.user_attrs
    metrics = attrs.get("metrics", {})
    row: dict = {"trial": t.number, "state": t.state.name}
    for i, name in enumerate(names):
        row[name] = t.values[i] if t.values is not None else metrics.get(name, math.nan)
    for extra in ("val_accuracy", "params", "train_flops", "train_seconds"):
        if extra not in row:
            row[extra] = metrics.get(extra, math.nan)
    row.update(
        baseline=attrs.get("baseline", ""),
        connections=attrs.get("connections"),
        kinds=attrs.get("kinds", ""),
        epochs=attrs.get("epochs"),
        fingerprint=attrs.get("fingerprint", ""),
        repeat_of=attrs.get("repeat_of"),
        node=attrs.get("node", attrs.get("host", "")),
        placements=attrs.get("placements", ""),
        grad_ratio=attrs.get("grad_profile", {}).get("ratio", math.nan),
    )
    for name, value in attrs.get("scores", {}).items():
        row[f"score_{name}"] = value
    return row


def leaderboard(study: optuna.Study, include_partial: bool = False, trials: list | None = None) -> pd.DataFrame:
    """Finished trials ranked by the objective (by Pareto rank, then the first objective, for
    several). Trials stopped early by a pruner or scheduler rank below fully trained ones
    unless ``include_partial``. ``trials``: :func:`finished_trials` already read."""
    names = study.metric_names or [f"objective{i}" for i in range(len(study.directions))]
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    trials = [t for t in (finished_trials(study) if trials is None else trials) if is_finished(t)]
    df = pd.DataFrame([_row(t, names) for t in trials])
    if df.empty:
        return pd.DataFrame(columns=["rank", "trial", "state", *names, "fingerprint"])
    partial = (df["state"] != "COMPLETE") & (not include_partial)
    values = df[names].to_numpy(dtype=float)
    values = np.where(np.isfinite(values), values, np.where(maximize, -np.inf, np.inf))
    df["pareto_rank"] = pareto_ranks(values, maximize) if len(names) > 1 else 1
    first = df[names[0]] * (-1 if maximize[0] else 1)
    df = df.assign(_partial=partial.astype(int), _first=first)
    df = df.sort_values(["_partial", "pareto_rank", "_first", "trial"]).drop(columns=["_partial", "_first"])
    if len(names) == 1:
        df = df.drop(columns=["pareto_rank"])
    if "pareto_rank" in df.columns:
        df.insert(0, "pareto_rank", df.pop("pareto_rank"))
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.reset_index(drop=True)


def confirmed(study: optuna.Study, trials: list | None = None) -> pd.DataFrame:
    """Trials retrained with more seeds (``--confirm``), ranked by the mean of the first
    objective over all their seeds; mean, std (n-1) and the number of seeds.
    ``trials``: :func:`finished_trials` already read."""
    name = (study.metric_names or ["value"])[0]
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    trials = finished_trials(study) if trials is None else trials
    by_number = {t.number: t for t in trials}
    runs: dict[int, list[float]] = {}
    for t in trials:
        if t.state == TrialState.COMPLETE and CONFIRMS in t.user_attrs:
            runs.setdefault(int(t.user_attrs[CONFIRMS]), []).append(t.values[0])
    rows = []
    for number, extra in runs.items():
        original = by_number.get(number)
        if original is None or original.values is None:
            continue
        values = [original.values[0], *extra]
        attrs = original.user_attrs
        rows.append(
            {
                "trial": number,
                "baseline": attrs.get("baseline", ""),
                f"{name} mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                "seeds": len(values),
                "mean ± std": f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.4f}",
                "connections": attrs.get("connections"),
                "kinds": attrs.get("kinds", ""),
                "fingerprint": attrs.get("fingerprint", ""),
            }
        )
    if not rows:
        return pd.DataFrame(columns=["rank", "trial", "baseline", f"{name} mean", "std", "seeds", "mean ± std"])
    df = pd.DataFrame(rows)
    df = df.assign(_key=df[f"{name} mean"] * sign).sort_values(["_key", "trial"]).drop(columns=["_key"])
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.reset_index(drop=True)


def summary(
    study: optuna.Study, trials: list | None = None, board: pd.DataFrame | None = None, sure: pd.DataFrame | None = None
) -> str:
    """One line: the best trial (by confirmed mean where there is one) and how far it is above
    each baseline on the first objective. ``trials``, ``board``, ``sure``: already read or built."""
    if board is None or sure is None:
        trials = finished_trials(study) if trials is None else trials
    board = leaderboard(study, trials=trials) if board is None else board
    board = board[board["state"] == "COMPLETE"]
    if board.empty:
        return "no finished trials"
    name = (study.metric_names or ["value"])[0]
    sure = confirmed(study, trials) if sure is None else sure
    if not sure.empty:
        best, value = int(sure["trial"][0]), float(sure[f"{name} mean"][0])
        what = f"best: trial {best}, {name} {value:.4f} (mean of {int(sure['seeds'][0])} seeds)"
    else:
        best, value = int(board["trial"].iloc[0]), float(board[name].iloc[0])
        what = f"best: trial {best}, {name} {value:.4f}"
    parts = [what]
    for _, row in board[board["baseline"] != ""].iterrows():
        ref = float(row[name])
        match = sure[sure["trial"] == row["trial"]] if not sure.empty else sure
        if not match.empty:
            ref = float(match[f"{name} mean"].iloc[0])
        parts.append(f"{value - ref:+.4f} over {row['baseline']} (trial {int(row['trial'])}, {ref:.4f})")
    return "; ".join(parts)


def studies(storage: str | None = None) -> pd.DataFrame:
    """Every study in the storage with its progress."""
    store = open_storage(storage, heartbeat=False, must_exist=True, write=False)
    rows = []
    # Optuna's study summaries load every trial of every study; the names are all this needs.
    for name in sorted(optuna.get_all_study_names(store)):
        study = optuna.load_study(study_name=name, storage=lean(store))
        counts = trial_counts(study)  # counted in the database, no trial loaded
        count = {s: counts.by_state.get(s, 0) for s in TrialState}
        rows.append(
            {
                "study": name,
                "finished": counts.finished,
                "requested": study.user_attrs.get(REQUESTED),
                "complete": count[TrialState.COMPLETE],
                "pruned": count[TrialState.PRUNED],
                "failed": count[TrialState.FAIL],
                "running": count[TrialState.RUNNING],
                "objectives": ", ".join(study.metric_names or []),
                "spec_hash": study.user_attrs.get(SPEC_HASH, ""),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "study",
            "finished",
            "requested",
            "complete",
            "pruned",
            "failed",
            "running",
            "objectives",
            "spec_hash",
        ],
    )


__all__ = ["confirmed", "finished_trials", "leaderboard", "pareto_ranks", "studies", "summary"]
