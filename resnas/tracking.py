"""Experiment tracking: each finished trial as a run in MLflow, TensorBoard or W&B (``--log KIND:TARGET``).

A run holds the trial's parameters, its per-epoch metrics (step = epoch) and its final costs.
Trackers are fed on the process that shows progress (the driver of any backend), from the
epochs the training loop reports and the trial's record once it finished, so the Optuna and
Ray backends log alike. optuna-integration's ``MLflowCallback`` and Ray's logger callbacks
log one value per trial (or per backend only); the libraries' own writers give both the
per-epoch curves and one code path. Needs ``pip install 'resnas[tracking]'``.
"""

from __future__ import annotations

import json
import os
import re
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import optuna

from resnas.errors import ResnasError

EXTRA = "pip install 'resnas[tracking]'"
EPOCH_METRICS = ("val_accuracy", "val_loss", "train_loss", "train_seconds")
KINDS = ("mlflow", "tensorboard", "wandb")


class Tracker(ABC):
    """Receives each trial once it finished, with the metrics of each of its epochs."""

    kind: str

    @abstractmethod
    def log_trial(self, study_name: str, trial: optuna.trial.FrozenTrial, epochs: list[dict[str, float]]) -> None: ...

    def close(self) -> None:  # noqa: B027 (optional)
        pass


def parse_targets(targets: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """``["mlflow:runs", "tensorboard:tb"]`` -> [(kind, target)]; checks each kind's package is installed."""
    parsed = []
    for text in targets:
        kind, sep, target = text.partition(":")
        if not sep or not target or kind not in KINDS:
            raise ResnasError(
                f"--log {text}: expected mlflow:DIR, tensorboard:DIR or wandb:DIR (kinds: {', '.join(KINDS)})"
            )
        module = kind  # each kind's package has the kind's name
        try:
            __import__(module)
        except ImportError:
            raise ResnasError(f"--log {kind}: the {module} package is not installed; {EXTRA}") from None
        parsed.append((kind, target))
    return parsed


def open_trackers(targets: list[str] | tuple[str, ...]) -> list[Tracker]:
    classes = {"mlflow": MLflowTracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker}
    return [classes[kind](target) for kind, target in parse_targets(targets)]


def epoch_history(trial: optuna.trial.FrozenTrial, seen: list[dict[str, float]] | None) -> list[dict[str, float]]:
    """The per-epoch metrics of a trial: those seen while it ran, else its recorded ``history``."""
    if seen:
        return seen
    return [dict(h) for h in trial.user_attrs.get("history") or []]


def final_costs(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The trial's final metrics and costs (params, train_flops, latency_ms, ...)."""
    return {k: float(v) for k, v in (trial.user_attrs.get("metrics") or {}).items() if isinstance(v, int | float)}


def _params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    extra = {k: attrs[k] for k in ("seed", "torch_threads", "fingerprint", "connections") if k in attrs}
    return {**trial.params, **extra}


def _millis(trial: optuna.trial.FrozenTrial, seconds: float | None) -> int | None:
    if trial.datetime_start is None or seconds is None:
        return None
    return int((trial.datetime_start.timestamp() + seconds) * 1000)


class MLflowTracker(Tracker):
    """One MLflow experiment per study, one run per trial. ``target``: a directory (MLflow's file
    store) or any tracking URI (``sqlite:///runs.db``, ``http://host:5000``)."""

    kind = "mlflow"

    def __init__(self, target: str):
        from mlflow import MlflowClient

        if "://" in target or target.startswith("sqlite:"):
            uri = target
        else:
            # MLflow 3.x keeps its file store in maintenance mode and asks for this opt-in.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            Path(target).mkdir(parents=True, exist_ok=True)
            uri = Path(target).resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.experiments: dict[str, str] = {}

    def _experiment(self, name: str) -> str:
        if name not in self.experiments:
            found = self.client.get_experiment_by_name(name)
            self.experiments[name] = found.experiment_id if found else self.client.create_experiment(name)
        return self.experiments[name]

    def log_trial(self, study_name: str, trial: optuna.trial.FrozenTrial, epochs: list[dict[str, float]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        state = trial.state.name
        tags = {"resnas.study": study_name, "resnas.trial": str(trial.number), "resnas.state": state}
        if "fail_reason" in trial.user_attrs:
            tags["resnas.fail_reason"] = str(trial.user_attrs["fail_reason"])
        start = _millis(trial, 0.0)
        run = self.client.create_run(self._experiment(study_name), start_time=start, run_name=f"trial {trial.number}")
        now = start or int(time.time() * 1000)
        metrics = []
        for epoch, values in enumerate(epochs, start=1):
            when = _millis(trial, values.get("train_seconds")) or now
            metrics += [Metric(k, float(values[k]), when, epoch) for k in EPOCH_METRICS if k in values]
        last = len(epochs)
        end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else now
        metrics += [Metric(k, v, end, last) for k, v in final_costs(trial).items() if k not in EPOCH_METRICS]
        params = [Param(_key(k), str(v)[:6000]) for k, v in _params(trial).items()]
        self.client.log_batch(
            run.info.run_id, metrics=metrics, params=params, tags=[RunTag(k, v) for k, v in tags.items()]
        )
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(run.info.run_id, status=status, end_time=end)


def _key(name: str) -> str:
    """An Optuna parameter name as an MLflow key (``network.stages[0].depth`` -> ``network.stages.0.depth``)."""
    return re.sub(r"[^\w./\- :]", "", name.replace("[", "."))


class TensorBoardTracker(Tracker):
    """Event files under ``DIR/<study>/trial_<n>``: scalars per epoch, final costs, the parameters as
    text and in the HParams dashboard (``tensorboard --logdir DIR``)."""

    kind = "tensorboard"

    def __init__(self, target: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer_class = SummaryWriter
        self.root = Path(target)

    def log_trial(self, study_name: str, trial: optuna.trial.FrozenTrial, epochs: list[dict[str, float]]) -> None:
        path = self.root / _safe(study_name) / f"trial_{trial.number}"
        start = trial.datetime_start.timestamp() if trial.datetime_start else None
        with self.writer_class(log_dir=str(path)) as writer:
            for epoch, values in enumerate(epochs, start=1):
                when = None if start is None else start + values.get("train_seconds", 0.0)
                for key in EPOCH_METRICS:
                    if key in values:
                        writer.add_scalar(key, float(values[key]), global_step=epoch, walltime=when)
            costs = {k: v for k, v in final_costs(trial).items() if k not in EPOCH_METRICS}
            for key, value in costs.items():
                writer.add_scalar(f"final/{key}", value, global_step=len(epochs))
            params = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in _params(trial).items()}
            writer.add_text("params", json.dumps({**params, "state": trial.state.name}, indent=1, default=str))
            final = {f"hparam/{k}": v for k, v in final_costs(trial).items()}
            writer.add_hparams(params, final or {"hparam/none": 0.0}, run_name=".")


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-]", "_", name) or "study"


class WandbTracker(Tracker):
    """Weights & Biases in offline mode: one run per trial (project = study, name ``trial N``) under
    ``DIR/wandb/offline-run-*``, never contacting a server (``wandb sync DIR/wandb/offline-run-*``
    uploads them later). Config = the trial's parameters, seed, threads, fingerprint; history =
    the per-epoch metrics with step = epoch; summary = the final costs and the trial's state; a
    failed trial's run finishes with exit code 1. ``close()`` ends W&B's service process."""

    kind = "wandb"

    def __init__(self, target: str):
        import wandb

        # Never the network: offline runs, and no error reports (Sentry) from W&B's service process,
        # which reads these from the environment when it starts.
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_ERROR_REPORTING="false")
        self.wandb = wandb
        self.root = Path(target)
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings = wandb.Settings(
            mode="offline",
            silent=True,
            quiet=True,
            console="off",  # the search's own output is not captured into the run
            save_code=False,
            disable_git=True,
            x_disable_stats=True,  # no system-metrics sampler
            x_disable_machine_info=True,
            x_save_requirements=False,
        )
        self.started = False

    def log_trial(self, study_name: str, trial: optuna.trial.FrozenTrial, epochs: list[dict[str, float]]) -> None:
        state = trial.state.name
        config = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in _params(trial).items()}
        self.started = True
        run = self.wandb.init(
            project=_safe(study_name),
            name=f"trial {trial.number}",
            dir=str(self.root),
            config=config,
            tags=[state.lower()],
            settings=self.settings,
            reinit="create_new",
        )
        try:
            for epoch, values in enumerate(epochs, start=1):
                run.log({k: float(values[k]) for k in EPOCH_METRICS if k in values}, step=epoch)
            summary = {**final_costs(trial), "trial": trial.number, "state": state, "epochs": len(epochs)}
            if "fail_reason" in trial.user_attrs:
                summary["fail_reason"] = str(trial.user_attrs["fail_reason"])
            run.summary.update(summary)
        finally:
            run.finish(exit_code=1 if state == "FAIL" else 0)

    def close(self) -> None:
        if self.started:
            self.wandb.teardown()  # ends the wandb-core service process W&B started for the runs
