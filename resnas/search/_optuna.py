"""The default backend: Optuna workers, in this process or as ``--jobs N`` processes.

Several machines running the same command against one PostgreSQL URL share the study:
each is just more workers. Every worker creates its next trial under a lock shared by
all workers of the study (see ``ClaimLock``), so the study ends with exactly the
requested number of finished trials.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import warnings

import optuna
import torch

from resnas.errors import ResnasError
from resnas.search._backend import Backend, SearchRequest
from resnas.search._objective import Objective, TrialFailed
from resnas.search._progress import SearchProgress, is_finished
from resnas.search._storage import ClaimLock
from resnas.search._study import artifact_dir, open_study
from resnas.space import parse_space

TrialState = optuna.trial.TrialState
MAX_CONSECUTIVE_FAILURES = 10
POLL_SECONDS = 1.0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _worker_device(req: SearchRequest, index: int) -> str | None:
    if req.device not in (None, "auto") or not torch.cuda.is_available():
        return req.device
    per_gpu = max(1, int(1 / max(req.gpus_per_trial, 1e-6)))  # --gpus-per-trial 0.5: two workers per GPU
    return f"cuda:{(index // per_gpu) % torch.cuda.device_count()}"


def run_worker(req: SearchRequest, index: int = 0, on_trial=None) -> int:
    """Run trials until the study has ``req.trials`` finished ones. Returns trials this worker ran."""
    study, space = open_study(req.space, req.storage, req.study, req.trials, worker=index)
    lock = ClaimLock(req.storage, req.study)
    objective = Objective(
        space,
        _worker_device(req, index),
        req.trial_timeout,
        on_start=lock.release,
        artifacts=artifact_dir(study) if req.keep_weights else None,
    )
    ran = 0
    consecutive_failures = 0
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    while True:
        lock.acquire()
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(is_finished(t) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if done >= req.trials:
            lock.release()
            return ran
        if done + running >= req.trials:
            lock.release()  # enough trials are in flight; wait in case one of them fails
            time.sleep(POLL_SECONDS)
            continue
        objective.last_trial = None
        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        except KeyboardInterrupt:
            if objective.last_trial is not None:
                _requeue_interrupted(study, objective.last_trial)
            raise
        finally:
            if lock.held:
                lock.release()
        ran += 1
        number = objective.last_trial
        last = study.get_trials(deepcopy=False)[number] if number is not None else None
        if on_trial is not None:
            on_trial()
        if last is not None and not is_finished(last):
            consecutive_failures += 1
            if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                reason = last.user_attrs.get("fail_detail", "unknown")
                raise ResnasError(f"{consecutive_failures} trials failed in a row; the last: {reason}")
        else:
            consecutive_failures = 0


def _requeue_interrupted(study: optuna.Study, number: int) -> None:
    """A trial stopped by SIGINT/SIGTERM is FAIL; queue its parameters so a resume tries them again."""
    t = study.get_trials(deepcopy=False)[number]
    if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") == "interrupted":
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def _child(req_fields: dict, space_text: str, source: str, index: int) -> None:
    signal.signal(signal.SIGTERM, _raise_interrupt)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // req_fields["jobs"]))
    req = SearchRequest(space=parse_space(space_text, source), **req_fields)
    try:
        run_worker(req, index)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ResnasError as exc:
        print(f"error: worker {index}: {exc}", flush=True)
        raise SystemExit(2) from None


class OptunaBackend(Backend):
    name = "optuna"

    def run(self, request: SearchRequest) -> None:
        study, _ = open_study(request.space, request.storage, request.study, request.trials)
        progress = SearchProgress(study, request.trials)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with progress:
                if request.jobs <= 1:
                    run_worker(request, 0, on_trial=progress.update)
                else:
                    self._run_processes(request, progress)
        finally:
            signal.signal(signal.SIGTERM, previous)

    @staticmethod
    def _run_processes(request: SearchRequest, progress: SearchProgress) -> None:
        ctx = multiprocessing.get_context("spawn")
        fields = {k: getattr(request, k) for k in request.__dataclass_fields__ if k != "space"}
        procs = [
            ctx.Process(target=_child, args=(fields, request.space.text, request.space.source, i), daemon=False)
            for i in range(request.jobs)
        ]
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(POLL_SECONDS)
                progress.update()
        except KeyboardInterrupt:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join()
            raise
        for p in procs:
            p.join()
        failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
        if failed:
            raise ResnasError(f"worker(s) {failed} exited with codes {[procs[i].exitcode for i in failed]}")
