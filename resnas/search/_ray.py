"""The Ray Tune backend: the same trials, on a Ray cluster, in the same Optuna study.

Ray's ``OptunaSearch`` asks the resnas study for each trial (define-by-run, with the
resnas sampler) and tells it the result, so the trials land in the same database as the
optuna backend's and every report and export works on them unchanged. Only the driver
writes to the storage: workers report metrics to the driver through Ray, so a SQLite
file on the driver's machine is enough even for a cluster run.

Single-objective specs with ``search.pruner: hyperband`` are scheduled with ASHA, with
``median`` by Ray's median stopping rule (epochs are the time attribute); a trial stopped
early is recorded PRUNED with the epochs it reached, and counts as finished. With
``pruner: none`` every trial trains all its epochs. Every trial carries an owner record
(the driver's host and pid) and heartbeats from the driver, so a run of either backend
fails and re-queues the trials of a driver that died (``driver lost``).
"""

from __future__ import annotations

import math
import os
import pickle
import platform
import shutil
import tempfile
import threading
import time
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule
from ray.tune.search.optuna import OptunaSearch

from resnas.errors import ResnasError
from resnas.search._backend import Backend, SearchRequest, set_torch_threads
from resnas.search._objective import (
    FINISHED,
    candidate_key,
    device_name,
    earlier_result,
    record_candidate,
    versions,
)
from resnas.search._progress import SearchProgress, is_finished
from resnas.search._storage import HEARTBEAT_SECONDS, OWNER, named_faults, open_storage, owner_record
from resnas.search._study import make_sampler, open_study, sampler_seed
from resnas.space import FixedSuggester, SearchSpace, parse_space, sample
from resnas.space._model import METRICS
from resnas.space._values import high_value
from resnas.tracking import open_trackers

TrialState = optuna.trial.TrialState
REPEAT = "resnas_repeat_of"  # config key: this candidate finished before in the study
EARLIER = "resnas_earlier_metrics"


def _trainable(
    config: dict[str, Any], space_text: str, source: str, timeout: float | None, threads: int | None = None
) -> None:
    """Runs on a Ray worker: rebuild the candidate from the parameters, train, report each epoch."""
    import torch

    from resnas.search._objective import measure_and_train
    from resnas.train import resolve_device

    where = {
        "node": ray.get_runtime_context().get_node_id(),
        "host": platform.node(),
        "pid": os.getpid(),
    }
    device = resolve_device(None)
    where["device"] = device_name(device)
    where["versions"] = versions()
    if REPEAT in config:  # finished before in this study: report the earlier result, train nothing
        tune.report({**config[EARLIER], **where, "epoch": config[EARLIER]["epochs"]})
        return
    if threads is None and device.type == "cpu":  # the CPUs Ray gave the trial (--cpus-per-trial)
        threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    set_torch_threads(threads)
    where["torch_threads"] = torch.get_num_threads()
    where["interop_threads"] = torch.get_num_interop_threads()
    space = parse_space(space_text, source)
    params = {k: v for k, v in config.items() if not k.startswith("resnas_")}
    candidate = sample(space, FixedSuggester(params))

    def report(epoch: int, metrics: dict[str, float]) -> None:
        tune.report({**metrics, **where, "epoch": epoch, "epochs": int(candidate.train["epochs"])})

    measure_and_train(space, candidate, config["resnas_seed"], device, report, timeout)


class _TrialLog(tune.Callback):
    """Keeps the driver's Trial objects so the searcher can read a failed trial's error."""

    def __init__(self) -> None:
        self.trials: dict[str, Any] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.trials[trial.trial_id] = trial


class _Progress(tune.Callback):
    """Progress as Ray reports it, on the driver: each epoch a trial reports, and a line per trial
    as it finishes (Tune tells the searcher first, so the trial is already in the study)."""

    def __init__(self, progress: SearchProgress, searcher: ResnasOptunaSearch) -> None:
        self.progress: SearchProgress | None = progress
        self.searcher = searcher

    def __getstate__(self) -> dict:
        # Tune saves its run config (callbacks included) for Tuner.restore; a display is not restored.
        return {"progress": None, "searcher": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.progress is not None and "epoch" in result and "epochs" in result:
            self.progress.epoch(self.searcher.number_of(trial.trial_id), result["epoch"], result["epochs"], result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.progress is not None:
            self.progress.update()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.progress is not None:
            self.progress.update()


class ResnasOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that writes the resnas per-trial record (on the driver)."""

    def __init__(self, space: SearchSpace, log: _TrialLog, stopper: str, **kwargs: Any):
        self.resnas_space = space
        self.log = log
        self.stopper = stopper  # the scheduler that may stop trials early (asha, median)
        self.last: dict[str, dict] = {}
        super().__init__(space=self._define, **kwargs)

    # The Optuna study, its sampler and its trials: a Ray search resumes from the study in its
    # database (the same command again), never from what Tune pickles. Tune pickles its searcher
    # all the same, when the run starts (for Tuner.restore) and at its checkpoints, and an Optuna 5
    # study or sampler holds thread locks that cannot be pickled.
    _NOT_PICKLED = ("_ot_study", "_sampler", "_ot_trials", "_space")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._NOT_PICKLED}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as out:
            pickle.dump(self.__getstate__(), out)

    def beat(self) -> None:
        """Heartbeats for the trials in flight (the workers never touch the storage)."""
        for trial_id, ot_trial in list(self._ot_trials.items()):
            if trial_id not in self._completed_trials:
                self._ot_study._storage.record_heartbeat(ot_trial._trial_id)  # a failed beat is skipped

    def _define(self, trial: Any) -> dict[str, Any]:
        trial.set_user_attr(OWNER, owner_record("ray"))
        trial.study._storage.record_heartbeat(trial._trial_id)
        candidate = sample(self.resnas_space, trial)
        seed = self.resnas_space.spec.search.seed + trial.number
        record_candidate(trial, candidate, seed, None)  # the worker reports its device
        extra: dict[str, Any] = {"resnas_seed": seed}
        earlier = earlier_result(trial.study, candidate_key(candidate))
        if earlier is not None:
            trial.set_user_attr("repeat_of", earlier.number)
            extra[REPEAT] = earlier.number
            extra[EARLIER] = {**earlier.user_attrs["metrics"], "epochs": earlier.user_attrs.get("epochs", 0)}
        return extra

    def number_of(self, trial_id: str) -> int | None:
        """The Optuna trial number of a Ray trial."""
        ot_trial = self._ot_trials.get(trial_id)
        return None if ot_trial is None else ot_trial.number

    def _node_ips(self) -> dict[str, str]:
        """Node id -> the address the node registered with (ray.nodes, on the driver)."""
        return {n["NodeID"]: n.get("NodeManagerAddress", "") for n in ray.nodes()}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.last[trial_id] = result
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        last = result or self.last.get(trial_id) or {}
        for key in ("node", "host", "pid", "device", "torch_threads", "interop_threads"):
            if key in last:
                ot_trial.set_user_attr(key, last[key])
        # Ray flattens nested results: {"versions": {"torch": ...}} arrives as "versions/torch".
        reported = {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("versions/")}
        if reported:
            ot_trial.set_user_attr("versions", reported)
        if "node" in last:
            ot_trial.set_user_attr("node_ip", self._node_ips().get(last["node"], ""))
        ray_trial = self.log.trials.get(trial_id)
        if ray_trial is not None:
            ot_trial.set_user_attr("ray_failures", int(ray_trial.num_failures))
        epochs = int(last.get("epoch", 0))
        ot_trial.set_user_attr("epochs", epochs)
        names = [m for m, _ in self.resnas_space.objectives]
        metrics = {k: last[k] for k in METRICS if k in last}
        values = [metrics.get(m) for m in names]
        state, reason = TrialState.COMPLETE, None
        if error:
            state, reason = TrialState.FAIL, self._error(trial_id)
        elif None in values:
            state, reason = TrialState.FAIL, ("error", "no result reported")
        elif not all(math.isfinite(v) for v in values):
            state, reason = TrialState.FAIL, ("nonfinite", f"objective values {values}")
        elif epochs < int(ot_trial.user_attrs["train"]["epochs"]) and "repeat_of" not in ot_trial.user_attrs:
            state = TrialState.PRUNED  # stopped early by the scheduler: finished, with the epochs it reached
            ot_trial.set_user_attr("stopped_by", self.stopper)
        if metrics:
            ot_trial.set_user_attr("metrics", metrics)
        if reason is not None:
            ot_trial.set_user_attr("fail_reason", reason[0])
            ot_trial.set_user_attr("fail_detail", reason[1][:500])
        else:
            ot_trial.set_user_attr(FINISHED, True)
        if state == TrialState.COMPLETE:
            self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0])
        elif state == TrialState.PRUNED:
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        else:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        self._completed_trials.add(trial_id)

    def _error(self, trial_id: str) -> tuple[str, str]:
        """(fail_reason, "ExceptionType: message") of a trial that raised, from the error Tune keeps
        on the driver (the exception itself where Tune pickled it, else the last line of its trace)."""
        trial = self.log.trials.get(trial_id)
        cause = _raised(trial)
        if cause is not None:
            from resnas.train import TrialFailure

            if isinstance(cause, TrialFailure):
                return cause.reason, cause.detail or cause.reason
            return "error", f"{type(cause).__name__}: {cause}".strip()
        lines = [line.strip() for line in _error_text(trial).splitlines() if line.strip()]
        detail = lines[-1] if lines else "the trial raised (Ray kept no error text)"
        for reason in ("nonfinite", "oom", "timeout"):
            if detail.startswith(f"{reason}:") or f"TrialFailure: {reason}" in detail:
                return reason, detail
        return "error", detail


def _raised(trial: Any) -> BaseException | None:
    """The exception a Ray trial raised, unwrapped from Ray's task error."""
    path = getattr(trial, "pickled_error_file", None)
    if not path or not os.path.exists(path):
        return None
    try:
        import cloudpickle

        with open(path, "rb") as f:
            exc = cloudpickle.load(f)
    except Exception:
        return None
    while getattr(exc, "cause", None) is not None and exc.cause is not exc:
        exc = exc.cause
    return exc if isinstance(exc, BaseException) else None


def _error_text(trial: Any) -> str:
    """The text trace Tune wrote for a trial's last failure (on the driver, else in its storage)."""
    path = getattr(trial, "error_file", None)
    try:
        if path and os.path.exists(path):
            text = open(path).read()
            return text[text.rfind("Failure #") :]  # the last failure only
        return str(trial.get_error() or "") if trial is not None else ""
    except Exception:  # the error file may be gone
        return ""


class RayBackend(Backend):
    name = "ray"

    def run(self, request: SearchRequest) -> None:
        study, space = open_study(request.space, request.storage, request.study, request.trials)
        started_here = not ray.is_initialized()
        if started_here:
            try:
                # Without --address (or RAY_ADDRESS) a local instance, as the README says: Ray's own
                # default would join whatever cluster the machine's latest `ray start` recorded.
                address = request.address or os.environ.get("RAY_ADDRESS") or "local"
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ResnasError(f"--address: cannot join Ray at {request.address}: {exc}") from None
        results_dir = tempfile.mkdtemp(prefix="resnas-ray-")
        try:
            workers = request.max_concurrent or max(
                1, int(ray.cluster_resources().get("CPU", 1) / request.cpus_per_trial)
            )
            trackers = open_trackers(request.log)
            with SearchProgress(study, request.trials, workers=workers, trackers=trackers) as progress:
                stalled = 0
                while True:
                    with named_faults(request.storage):  # trials of a dead driver or worker: failed, queued again
                        optuna.storages.fail_stale_trials(study)
                    done = sum(is_finished(t) for t in study.get_trials(deepcopy=False))
                    if done >= request.trials:
                        break
                    self._fit(request, space, study, request.trials - done, results_dir, progress)
                    progress.update()
                    after = sum(is_finished(t) for t in study.get_trials(deepcopy=False))
                    stalled = stalled + 1 if after == done else 0
                    if stalled >= 3:
                        raise ResnasError(
                            "no trial finished in three rounds of Ray trials; see the fail_reason of the study's trials"
                        )
        finally:
            shutil.rmtree(results_dir, ignore_errors=True)
            if started_here:
                ray.shutdown()

    @staticmethod
    def _fit(
        request: SearchRequest,
        space: SearchSpace,
        study: optuna.Study,
        samples: int,
        results_dir: str,
        progress: SearchProgress,
    ) -> None:
        metrics = [m for m, _ in space.objectives]
        modes = ["max" if d == "maximize" else "min" for _, d in space.objectives]
        single = len(metrics) == 1
        log = _TrialLog()
        epochs = int(high_value(space.spec.train.epochs))
        pruner = space.spec.search.pruner if single else "none"
        if pruner == "hyperband":
            scheduler = ASHAScheduler(
                time_attr="epoch", metric=metrics[0], mode=modes[0], max_t=epochs, grace_period=1, reduction_factor=2
            )
        elif pruner == "median":
            scheduler = MedianStoppingRule(
                time_attr="epoch", metric=metrics[0], mode=modes[0], grace_period=1, min_samples_required=4
            )
        else:  # search.pruner: none, or several objectives: every trial trains all its epochs
            scheduler = FIFOScheduler()
        searcher = ResnasOptunaSearch(
            space,
            log,
            {"hyperband": "asha", "median": "median"}.get(pruner, "none"),
            metric=metrics[0] if single else metrics,
            mode=modes[0] if single else modes,
            sampler=make_sampler(space, request.trials, sampler_seed(space, len(study.get_trials(deepcopy=False)))),
            study_name=study.study_name,
            storage=open_storage(request.storage, heartbeat=False),
        )
        import torch

        gpus = request.gpus_per_trial if torch.cuda.is_available() else 0
        trainable = tune.with_resources(
            tune.with_parameters(
                _trainable,
                space_text=space.text,
                source=space.source,
                timeout=request.trial_timeout,
                threads=request.threads,
            ),
            {"cpu": request.cpus_per_trial, "gpu": gpus},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=samples,
                max_concurrent_trials=request.max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=f"{study.study_name}-{int(time.time())}",
                storage_path=results_dir,
                failure_config=tune.FailureConfig(max_failures=request.max_failures),
                callbacks=[log, _Progress(progress, searcher)],
                verbose=0,
            ),
        )
        done = threading.Event()

        def beat() -> None:  # a thread beside the searcher: Tune pickles the searcher, not this
            while not done.wait(HEARTBEAT_SECONDS):
                searcher.beat()

        threading.Thread(target=beat, name="resnas-ray-heartbeat", daemon=True).start()
        try:
            tuner.fit()
        finally:
            done.set()
