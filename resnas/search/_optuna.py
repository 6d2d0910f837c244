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
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import optuna
import torch

from resnas.errors import ResnasError
from resnas.screening import screen_round
from resnas.search._backend import Backend, SearchRequest
from resnas.search._objective import Objective, TrialFailed
from resnas.search._progress import SearchProgress, is_finished
from resnas.search._storage import ClaimLock
from resnas.search._study import artifact_dir, open_study
from resnas.space import parse_space
from resnas.train import StopRequested

TrialState = optuna.trial.TrialState
MAX_CONSECUTIVE_FAILURES = 10
POLL_SECONDS = 1.0


class GracefulStop:
    """SIGINT/SIGTERM handler: the first signal asks the running trial to stop at its next
    batch (it is recorded FAIL, reason ``interrupted``, and queued again); a second forces."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, signum: int, frame: object) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()

    @contextmanager
    def installed(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
        previous = {s: signal.signal(s, self) for s in signals}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _worker_device(req: SearchRequest, index: int) -> str | None:
    if req.device not in (None, "auto") or not torch.cuda.is_available():
        return req.device
    per_gpu = max(1, int(1 / max(req.gpus_per_trial, 1e-6)))  # --gpus-per-trial 0.5: two workers per GPU
    return f"cuda:{(index // per_gpu) % torch.cuda.device_count()}"


def run_worker(req: SearchRequest, index: int = 0, on_trial=None, stop: threading.Event | None = None) -> int:
    """Run trials until the study has ``req.trials`` finished ones. Returns trials this worker ran.

    Raises :class:`StopRequested` once ``stop`` is set (the running trial is failed and queued again).
    """
    stop = stop or threading.Event()
    study, space = open_study(req.space, req.storage, req.study, req.trials, worker=index)
    lock = ClaimLock(req.storage, req.study)
    objective = Objective(
        space,
        _worker_device(req, index),
        req.trial_timeout,
        on_start=lock.release,
        artifacts=artifact_dir(study) if req.keep_weights else None,
        stop=stop,
    )
    ran = 0
    consecutive_failures = 0
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    while True:
        if stop.is_set():
            raise StopRequested("stopped between trials")
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
            screen = space.spec.search.screen
            if screen is None:
                study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            else:  # several trials per round: the pool, of which `keep` are trained
                keep = min(screen.keep, req.trials - done - running)
                screen_round(study, objective, screen.score, screen.pool, keep, (TrialFailed,))
        except (StopRequested, KeyboardInterrupt):
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


def _child(req_fields: dict, space_text: str, source: str, index: int, verbosity: int) -> None:
    optuna.logging.set_verbosity(verbosity)  # a spawned process starts with Optuna's defaults
    # The parent relays a stop as one SIGTERM; a terminal's Ctrl-C reaches the parent only.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = GracefulStop()
    signal.signal(signal.SIGTERM, stop)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // req_fields["jobs"]))
    req = SearchRequest(space=parse_space(space_text, source), **req_fields)
    try:
        run_worker(req, index, stop=stop.event)
    except (StopRequested, KeyboardInterrupt):
        raise SystemExit(130) from None
    except ResnasError as exc:
        print(f"error: worker {index}: {exc}", flush=True)
        raise SystemExit(2) from None


class OptunaBackend(Backend):
    name = "optuna"

    def run(self, request: SearchRequest) -> None:
        study, _ = open_study(request.space, request.storage, request.study, request.trials)
        progress = SearchProgress(study, request.trials)
        stop = GracefulStop()
        in_main_thread = threading.current_thread() is threading.main_thread()
        try:
            with stop.installed() if in_main_thread else nullcontext(), progress:
                if request.jobs <= 1:
                    run_worker(request, 0, on_trial=progress.update, stop=stop.event)
                else:
                    self._run_processes(request, progress, stop.event)
        except StopRequested:
            raise KeyboardInterrupt from None

    @staticmethod
    def _run_processes(request: SearchRequest, progress: SearchProgress, stop: threading.Event) -> None:
        ctx = multiprocessing.get_context("spawn")
        fields = {k: getattr(request, k) for k in request.__dataclass_fields__ if k != "space"}
        procs = [
            ctx.Process(
                target=_child,
                args=(fields, request.space.text, request.space.source, i, optuna.logging.get_verbosity()),
                daemon=False,
            )
            for i in range(request.jobs)
        ]
        for p in procs:
            p.start()
        relayed = False
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(POLL_SECONDS)
                progress.update()
                if stop.is_set() and not relayed:
                    for p in procs:
                        if p.is_alive():
                            p.terminate()  # one SIGTERM: each worker ends its trial at the next batch
                    relayed = True
        except KeyboardInterrupt:  # a second signal: stop now
            for p in procs:
                if p.is_alive():
                    p.kill()
            for p in procs:
                p.join()
            raise
        if relayed:
            for p in procs:
                p.join()
            raise StopRequested("stopped")
        for p in procs:
            p.join()
        failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
        if failed:
            raise ResnasError(f"worker(s) {failed} exited with codes {[procs[i].exitcode for i in failed]}")
