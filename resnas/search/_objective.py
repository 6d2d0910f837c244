"""The Optuna objective: sample, build, measure, train, record."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch

import resnas
from resnas.costs import count_params, flops_per_sample, latency_ms, step_memory_mb
from resnas.data import load_data
from resnas.nn import build
from resnas.screening import placements_record, record_diagnostics
from resnas.search._names import CONFIRMS, FINISHED
from resnas.search._storage import (
    OWNER,
    ResnasStorage,
    backend_of,
    owner_record,
    params_written_once,
    set_trial_attrs,
)
from resnas.space import Candidate, SearchSpace, sample
from resnas.train import StopRequested, TrialFailure, is_oom, resolve_device, train

# Metrics reported per epoch, which a pruner can act on.
EPOCH_METRICS = ("val_accuracy", "val_loss", "train_loss")
HISTORY_METRICS = (*EPOCH_METRICS, "train_seconds")
# Seconds a trial's thread may go on after a stop or its timeout before the worker abandons it
# (user data code that never returns to the training loop: a sleeping or hanging loader).
ABANDON_AFTER = float(os.environ.get("RESNAS_ABANDON_SECONDS", "2"))
TIMEOUT_SLACK = 0.5  # past its timeout, a trial's training loop has had this long to end by itself
TrialState = optuna.trial.TrialState


class TrialFailed(Exception):
    """Raised to end a trial as FAIL; the reason is already on the trial."""


def candidate_key(candidate: Candidate) -> str:
    """Architecture plus training settings: what makes two trials the same experiment."""
    text = json.dumps({"arch": candidate.fingerprint, "train": candidate.train}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def storage_backend(study: optuna.Study) -> Any:
    """The storage under Optuna's cache: the :class:`ResnasStorage` of a study resnas opened."""
    return backend_of(study._storage)


def trials_with(study: optuna.Study, attr: str, value: Any, states: tuple) -> list[tuple[int, TrialState]]:
    """(number, state) of the trials of ``study`` in ``states`` whose user attr ``attr`` is ``value``."""
    store = storage_backend(study)
    if isinstance(store, ResnasStorage):  # one query, not every trial of the study
        return [(n, TrialState(s)) for n, s in store.trials_with_attr(study._study_id, attr, value, states)]
    trials = study.get_trials(deepcopy=False, states=states)
    return [(t.number, t.state) for t in trials if t.user_attrs.get(attr) == value]


def trials_of_candidate(study: optuna.Study, key: str, states: tuple) -> list[int]:
    """Numbers of the trials of ``study`` in ``states`` that are candidate ``key``."""
    return [n for n, _ in trials_with(study, "candidate_key", key, states)]


def earlier_result(study: optuna.Study, key: str, complete: list[int] | None = None) -> optuna.trial.FrozenTrial | None:
    """A COMPLETE trial of ``study`` that trained the same candidate, if any (``complete``: the
    numbers of the candidate's COMPLETE trials, when the caller has read them already)."""
    if complete is None:
        complete = trials_of_candidate(study, key, (TrialState.COMPLETE,))
    for number in complete:
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        t = study._storage.get_trial(trial_id)
        if "metrics" in t.user_attrs:
            return t
    return None


def versions() -> dict[str, str]:
    return {
        "resnas": resnas.__version__,
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "python": platform.python_version(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def candidate_attrs(candidate: Candidate, seed: int, device: torch.device | None) -> dict[str, Any]:
    """The user attributes that describe a trial's candidate (and where it runs)."""
    arch = candidate.architecture
    attrs: dict[str, Any] = {
        "architecture": arch.to_dict(),
        "fingerprint": arch.fingerprint,
        "candidate_key": candidate_key(candidate),
        "train": candidate.train,
        "connections": len(arch.connections),
        "kinds": ",".join(arch.kinds_used()),
        "spans": sorted({c.span for c in arch.connections}),
        "seed": seed,
    }
    if device is not None:  # else the worker that trains it reports where it ran
        attrs.update(device=device_name(device), host=platform.node(), pid=os.getpid(), versions=versions())
        attrs.update(torch_threads=torch.get_num_threads(), interop_threads=torch.get_num_interop_threads())
    return attrs


def record_candidate(trial: optuna.Trial, candidate: Candidate, seed: int, device: torch.device | None) -> None:
    set_trial_attrs(trial, candidate_attrs(candidate, seed, device))


def measure_and_train(
    space: SearchSpace,
    candidate: Candidate,
    seed: int,
    device: torch.device,
    report: Any = None,
    timeout: float | None = None,
    stop: Any = None,
    diagnose: Callable[[torch.nn.Module], Any] | None = None,
) -> tuple[dict[str, float], int, torch.nn.Module]:
    """Build, measure costs, train. Returns (metrics, epochs trained, trained model).

    ``diagnose(model)`` first sees the network as it starts training. ``report(epoch, metrics)``
    sees every metric after each epoch, costs so far included.
    """
    arch, cfg = candidate.architecture, candidate.train
    began = time.perf_counter()  # the timeout covers data loading and cost measurement too
    torch.manual_seed(seed)
    model = build(arch)
    # The diagnostics and measurements run forward passes (batch-norm statistics move) and draw
    # random inputs: the network trains from the state and random stream it had when built.
    rng = torch.get_rng_state()
    buffers = [b.clone() for b in model.buffers()]
    if diagnose is not None:
        diagnose(model)
    data = load_data(space.spec.data, space.spec.search.seed)
    shape = tuple(data.x_train.shape[1:])
    samples = len(data.y_train)
    # Costs that do not depend on the weights are measured once, before training.
    costs: dict[str, float] = {"params": count_params(model)}
    per_sample = flops_per_sample(model, shape, key=arch.fingerprint)
    if device.type == "cpu":
        slots = 1 if cfg["optimizer"] == "sgd" else 2
        costs["peak_memory_mb"] = step_memory_mb(model, shape, int(cfg["batch_size"]), slots)
    model.to(device)
    costs["latency_ms"] = latency_ms(model, shape, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if report is not None:
            report(epoch, {**metrics, **costs, "train_flops": per_sample * samples * epoch})

    with torch.no_grad():
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)
    model.zero_grad(set_to_none=True)
    model.train()
    torch.manual_seed(seed)  # every device's generator as after the build (which drew on the CPU's only)
    torch.set_rng_state(rng)
    left = None if timeout is None else timeout - (time.perf_counter() - began)
    if left is not None and left <= 0:
        raise TrialFailure("timeout", f"trial ran past {timeout:g} s before training began", 0)
    if stop is not None and stop.is_set():
        raise StopRequested("stopped before training")
    result = train(model, data, cfg, seed=seed, device=device, report=on_epoch, timeout=left, stop=stop)
    if device.type == "cuda":
        costs["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    costs["train_flops"] = per_sample * samples * result.epochs
    return {**result.metrics, **costs}, result.epochs, model


def keep_weights(trial: optuna.Trial, model: torch.nn.Module, root: str) -> None:
    """Store the trained weights (safetensors) in the study's artifact store; export uses them."""
    trial.set_user_attr("weights_artifact", store_weights(trial, model, root))


def store_weights(trial: optuna.Trial, model: torch.nn.Module, root: str) -> str:
    """Upload the trained weights (safetensors) to the artifact store; returns the artifact id
    (the trial records it as ``weights_artifact``)."""
    import tempfile

    from optuna.artifacts import FileSystemArtifactStore, upload_artifact
    from safetensors.torch import save_model

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"trial{trial.number}.safetensors")
        save_model(model.to("cpu"), path)
        return upload_artifact(artifact_store=FileSystemArtifactStore(root), file_path=path, study_or_trial=trial)


class Objective:
    """Callable for ``study.optimize``; ``on_start`` runs first (the worker releases its claim lock).

    The trial's work (data loading, cost measurement, training) runs in a thread the worker
    can abandon: ``timeout`` (seconds, for the whole trial) and the first stop signal end a
    trial even while user data code sleeps or hangs.
    """

    def __init__(
        self,
        space: SearchSpace,
        device: str | None = None,
        timeout: float | None = None,
        on_start: Any = None,
        artifacts: str | None = None,
        stop: Any = None,
        force: Any = None,
    ):
        self.space = space
        self.stop = stop  # a threading.Event: once set, the running trial ends at its next batch
        self.force = force  # a threading.Event: once set, the running trial is abandoned at once
        self.artifacts = artifacts  # where to keep trained weights; None: not kept
        self.device = resolve_device(device)
        self.timeout = timeout
        self.on_start = on_start
        self.metrics = [m for m, _ in space.objectives]
        self.last_trial: int | None = None  # number of the trial this objective ran last (worker bookkeeping)
        self.started = time.monotonic()  # when the running trial began
        self.history: list[dict[str, float]] = []  # the running trial's epochs so far (recorded when it ends)
        self.pending: dict[str, Any] = {}  # attributes for the running trial's last write (diagnostics)

    def values(self, metrics: dict[str, float]) -> list[float]:
        values = [float(metrics[m]) for m in self.metrics]
        if not all(math.isfinite(v) for v in values):
            raise TrialFailure("nonfinite", f"objective values {values}")
        return values

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    def _reporter(self, trial: optuna.Trial, epochs: int) -> Any:
        # Every study keeps per-epoch history (learning curves), written once when the trial ends;
        # one objective also reports to the pruner (Optuna's intermediate values, one write per epoch).
        metric = self.metrics[0] if len(self.metrics) == 1 and self.metrics[0] in EPOCH_METRICS else None
        history = self.history = []
        prunes = not isinstance(trial.study.pruner, optuna.pruners.NopPruner)

        def report(epoch: int, metrics: dict[str, float]) -> None:
            history.append({k: float(f"{metrics[k]:.5g}") for k in HISTORY_METRICS if k in metrics})
            if metric is None or not prunes:
                return
            trial.report(metrics[metric], epoch)
            if epoch < epochs and trial.should_prune():  # a fully trained trial is complete, never pruned
                set_trial_attrs(trial, {**self.pending, "history": history, "epochs": epoch, FINISHED: True})
                raise optuna.TrialPruned(f"pruned after epoch {epoch} ({metric} {metrics[metric]:.4g})")

        return report

    def _left(self) -> float | None:
        """Seconds left of ``timeout`` for this trial."""
        return None if self.timeout is None else max(1e-6, self.timeout - (time.monotonic() - self.started))

    def _stopping(self) -> bool:
        return any(e is not None and e.is_set() for e in (self.stop, self.force))

    def _wait_for_twin(self, trial: optuna.Trial, key: str) -> optuna.trial.FrozenTrial | None:
        """The earlier result of this candidate; if a lower-numbered trial is training the same
        candidate right now, wait for it (a repeat to copy, not a candidate to train twice)."""
        told = None
        while True:
            # One read of the candidate's trials: the finished ones to copy, the running ones to wait for.
            found = trials_with(trial.study, "candidate_key", key, (TrialState.COMPLETE, TrialState.RUNNING))
            earlier = earlier_result(trial.study, key, [n for n, s in found if s == TrialState.COMPLETE])
            if earlier is not None:
                return earlier
            twins = [n for n, s in found if s == TrialState.RUNNING and n < trial.number]
            if not twins:
                return None
            if told != twins[0]:
                told = twins[0]
                print(
                    f"trial {trial.number}: waiting for trial {twins[0]}, which trains the same candidate", flush=True
                )
            if self._stopping():
                raise StopRequested("stopped while waiting for a twin trial")
            time.sleep(1.0)

    def _in_thread(self, trial: optuna.Trial, work: Callable[[threading.Event], Any]) -> Any:
        """Run ``work(cancel)`` in a thread; give up on it after a stop or the timeout."""
        cancel = threading.Event()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = work(cancel)
            except BaseException as exc:  # handed to the worker's thread
                box["error"] = exc

        # The trial's clock started when this objective was called (sampling and records count).
        deadline = None if self.timeout is None else self.started + self.timeout + TIMEOUT_SLACK
        thread = threading.Thread(target=target, name=f"resnas-trial-{trial.number}", daemon=True)
        thread.start()
        stopped_at = None
        while thread.is_alive():
            thread.join(0.1)
            if not thread.is_alive():
                break
            now = time.monotonic()
            if self.force is not None and self.force.is_set():
                cancel.set()
                raise StopRequested("stopped at once")
            if self.stop is not None and self.stop.is_set():
                cancel.set()  # the training loop ends at its next batch
                stopped_at = stopped_at or now
                if now - stopped_at > ABANDON_AFTER:
                    raise StopRequested("stopped; the trial's code did not return")
            if deadline is not None and now > deadline:
                cancel.set()
                raise TrialFailure("timeout", f"trial ran past {self.timeout:g} s", self.epochs_done)
        if "error" in box:
            raise box["error"]
        return box["value"]

    def __call__(self, trial: optuna.Trial) -> list[float]:
        if self.on_start is not None:
            self.on_start()
        self.last_trial = trial.number
        self.started = time.monotonic()
        self.history = []
        self.pending = {}
        with params_written_once(trial):  # one write for every parameter, not one each
            candidate = sample(self.space, trial)
        seed = self.space.spec.search.seed + trial.number
        # The start of a trial is one write: its owner, its candidate and where it came from.
        start = {OWNER: owner_record("optuna"), **candidate_attrs(candidate, seed, self.device)}
        lineage = getattr(trial.study.sampler, "lineage", None)  # regularized evolution: parent and mutation
        enqueued = any(k in trial.user_attrs for k in (CONFIRMS, "baseline", "retry_of"))
        if lineage is not None and lineage(trial.number) is not None and not enqueued:
            start["evolution"] = lineage(trial.number)
        set_trial_attrs(trial, start)
        # A confirmation run trains again on purpose (another seed); anything else reuses a result,
        # waiting for it when another worker is training the same candidate right now.
        try:
            earlier = None if CONFIRMS in trial.user_attrs else self._wait_for_twin(trial, candidate_key(candidate))
        except StopRequested:
            self._fail(trial, "interrupted", "the worker was stopped", 0)
            raise
        if earlier is not None:
            # Trained before in this study: record the earlier result instead of training again.
            copied = {key: earlier.user_attrs[key] for key in ("metrics", "epochs")}
            set_trial_attrs(trial, {"repeat_of": earlier.number, **copied, FINISHED: True})
            return list(earlier.values)
        report = self._reporter(trial, int(candidate.train["epochs"]))

        def diagnose(model: torch.nn.Module) -> None:
            # Of the network built to train (as it starts); written with the trial's end (or its failure).
            if self.space.spec.search.diagnostics:
                record_diagnostics(trial, self.space, candidate, seed, into=self.pending, model=model)
            else:
                self.pending["placements"] = placements_record(candidate.architecture)

        def work(cancel: threading.Event) -> tuple[dict[str, float], int, torch.nn.Module]:
            # In the thread: the timeout and a stop reach data loading and the diagnostics too.
            return measure_and_train(
                self.space, candidate, seed, self.device, report, self._left(), cancel, diagnose=diagnose
            )

        end: dict[str, Any] = {}
        try:
            metrics, epochs, model = self._in_thread(trial, work)
            values = self.values(metrics)
            if self.artifacts is not None:
                end["weights_artifact"] = store_weights(trial, model, self.artifacts)
        except TrialFailure as exc:
            detail = f"trial ran past {self.timeout:g} s" if exc.reason == "timeout" else exc.detail
            self._fail(trial, exc.reason, detail, exc.epochs)
            if exc.reason == "timeout":
                raise optuna.TrialPruned(f"timeout: {detail}") from None
            raise TrialFailed(str(exc)) from None
        except optuna.TrialPruned:
            raise
        except (StopRequested, KeyboardInterrupt):
            self._fail(trial, "interrupted", "the worker was stopped", self.epochs_done)
            raise
        except Exception as exc:  # user data code, a bug in a custom block...: recorded, the search goes on
            if _is_storage_error(exc):
                try:  # best effort: the storage may take this small write, or fail again
                    self._fail(trial, "storage", f"{type(exc).__name__}: {exc}", self.epochs_done)
                except Exception:
                    pass
                raise  # the worker stops and names the fault
            if is_oom(exc):  # while measuring costs, outside the training loop
                self._fail(trial, "oom", str(exc).splitlines()[0][:200], 0)
                raise TrialFailed(f"oom: {exc}") from None
            self._fail(trial, "error", f"{type(exc).__name__}: {exc}", 0)
            raise TrialFailed(f"{type(exc).__name__}: {exc}") from exc
        # The end of a trial is one write: its history, metrics and weights.
        end.update(history=self.history, metrics=metrics, epochs=epochs)
        set_trial_attrs(trial, {**self.pending, **end, FINISHED: True})
        return values

    def _fail(self, trial: optuna.Trial, reason: str, detail: str, epochs: int) -> None:
        attrs = {**self.pending, "fail_reason": reason, "fail_detail": detail[:500], "epochs": epochs}
        if self.history:
            attrs["history"] = self.history
        set_trial_attrs(trial, attrs)


def _is_storage_error(exc: BaseException) -> bool:
    import sqlalchemy

    return isinstance(exc, sqlalchemy.exc.SQLAlchemyError | optuna.exceptions.StorageInternalError)
