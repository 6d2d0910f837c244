"""The default backend: Optuna workers, in this process or as ``--jobs N`` processes.

Several machines running the same command against one PostgreSQL URL share the study:
each is just more workers. Every worker creates its next trial under a lock shared by
all workers of the study (see ``ClaimLock``), so the study ends with exactly the
requested number of finished trials.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from multiprocessing import connection
from pathlib import Path

import optuna
import torch

from resnas._workers import worker_context
from resnas.errors import ResnasError
from resnas.screening import screen_round
from resnas.search._backend import Backend, SearchRequest, set_torch_threads, worker_threads
from resnas.search._objective import FINISHED, Objective, TrialFailed, storage_backend
from resnas.search._progress import SearchProgress, counts
from resnas.search._storage import (
    OWNER,
    ClaimLock,
    StorageFault,
    close_storages,
    named_faults,
    sqlite_path,
    stale_check_made,
    storage_fault,
)
from resnas.search._study import artifact_dir, make_sampler, open_study, sampler_seed
from resnas.space import parse_space
from resnas.tracking import EPOCH_METRICS, open_trackers
from resnas.train import StopRequested, epoch_hook

TrialState = optuna.trial.TrialState
MAX_CONSECUTIVE_FAILURES = 10
POLL_SECONDS = 1.0
# A worker with nothing left to start looks this often whether the trials in flight have
# finished (then it ends, and the search with it) or one failed (then it runs another).
WAIT_POLL_SECONDS = 0.25
WAIT_NOTE_SECONDS = 30.0  # a waiting worker repeats what it waits for this often
FORCE_SECONDS = 10.0  # after a second signal, workers that have not ended by then are killed
WORKER_SLOTS = "resnas_worker_slots"  # study system attr: workers started on it so far


class GracefulStop:
    """SIGINT/SIGTERM handler: the first signal asks the running trial to stop at its next
    batch (it is recorded FAIL, reason ``interrupted``, and queued again); a second one
    abandons the running trial at once (recorded and queued the same way)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.force = threading.Event()

    def __call__(self, signum: int, frame: object) -> None:
        if self.event.is_set():
            self.force.set()
        self.event.set()

    @contextmanager
    def installed(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
        previous = {s: signal.signal(s, self) for s in signals}
        try:
            yield
        finally:
            for s, handler in previous.items():
                if self.event.is_set() and handler == signal.SIG_DFL:
                    handler = signal.default_int_handler  # a late signal still ends as "interrupted"
                signal.signal(s, handler)


class FileWatch:
    """The SQLite file a search writes to: deleted or replaced mid-search is a fault, found
    before and after every trial (SQLite would go on writing to the deleted file)."""

    def __init__(self, url: str):
        self.path = sqlite_path(url)
        self.ident = self._ident()

    def _ident(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check(self, last_trial: int | None = None) -> None:
        if self.path is None or self._ident() == self.ident:
            return
        what = "deleted" if not Path(self.path).exists() else "replaced by another file"
        lost = f"; trial {last_trial} was written to the old file and is lost" if last_trial is not None else ""
        raise StorageFault(f"the database {self.path} was {what} during the search{lost}; nothing more is written")


def _worker_device(req: SearchRequest, index: int) -> str | None:
    if req.device not in (None, "auto") or not torch.cuda.is_available():
        return req.device
    per_gpu = max(1, int(1 / max(req.gpus_per_trial, 1e-6)))  # --gpus-per-trial 0.5: two workers per GPU
    return f"cuda:{(index // per_gpu) % torch.cuda.device_count()}"


def _claim_slot(study: optuna.Study) -> int:
    """A number no other worker of this study has had (call under the claim lock): seeds the
    sampler, so identical commands on several machines propose different candidates while a
    single process on a fresh study stays reproducible (slot 0)."""
    slot = int(study._storage.get_study_system_attrs(study._study_id).get(WORKER_SLOTS, 0))
    study._storage.set_study_system_attr(study._study_id, WORKER_SLOTS, slot + 1)
    return slot


class WaitNote:
    """What a worker waits for when the trials in flight would reach the count: said once,
    again when it changes, and every WAIT_NOTE_SECONDS."""

    def __init__(self, index: int, out=None):
        self.index = index
        self.out = out  # where the note goes: the progress display, else stdout
        self.said: tuple = ()
        self.when = 0.0

    def say(self, study: optuna.Study, done: int, wanted: int) -> None:
        store = storage_backend(study)
        owners = store.running_owners(study._study_id) if hasattr(store, "running_owners") else []
        key = tuple(n for n, _, _ in owners)
        if key == self.said and time.monotonic() - self.when < WAIT_NOTE_SECONDS:
            return
        self.said, self.when = key, time.monotonic()
        parts = []
        for number, owner, beat in owners:
            who = f"{owner.get('backend', '?')} pid {owner.get('pid')} on {owner.get('host')}" if owner else "no owner"
            parts.append(f"trial {number} ({who}{', heartbeat ' + beat.strftime('%H:%M:%S') if beat else ''})")
        text = f"worker {self.index}: {done}/{wanted} finished; waiting for {', '.join(parts) or 'running trials'}"
        if self.out is not None:
            self.out(text)
        else:
            print(text, flush=True)


def run_worker(
    req: SearchRequest,
    index: int = 0,
    on_trial=None,
    stop: threading.Event | None = None,
    force: threading.Event | None = None,
    on_epoch=None,
    say=None,
) -> int:
    """Run trials until the study has ``req.trials`` finished ones. Returns trials this worker ran.

    Raises :class:`StopRequested` once ``stop`` is set (the running trial is failed and queued
    again; at its next batch, or at once when ``force`` is set too), :class:`StorageFault`
    when the storage fails (naming the cause).
    """
    stop = stop or threading.Event()
    set_torch_threads(worker_threads(req.threads, req.jobs))
    with named_faults(req.storage):
        study, space = open_study(req.space, req.storage, req.study, req.trials, worker=index)
    watch = FileWatch(req.storage)
    lock = ClaimLock(req.storage, req.study)
    objective = Objective(
        space,
        _worker_device(req, index),
        req.trial_timeout,
        on_start=lock.release,
        artifacts=artifact_dir(study) if req.keep_weights else None,
        stop=stop,
        force=force,
    )
    note = WaitNote(index, say)
    ran = 0
    consecutive_failures = 0
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with named_faults(req.storage), lock.hold():
        total = counts(study).total
        study.sampler = make_sampler(space, req.trials, sampler_seed(space, total, _claim_slot(study)))
    # Each epoch of this worker's trials, for the progress display (trial number, epoch, epochs, metrics).
    watching = (
        nullcontext() if on_epoch is None else epoch_hook(lambda e, n, m: on_epoch(objective.last_trial, e, n, m))
    )
    with watching:
        while True:
            if stop.is_set():
                raise StopRequested("stopped between trials")
            objective.last_trial = None
            try:
                with named_faults(req.storage):
                    watch.check()
                    lock.acquire()
                    if stop.is_set():
                        raise StopRequested("stopped between trials")
                    optuna.storages.fail_stale_trials(study)  # lost trials: failed with a reason, queued again
                    done, running, _, _ = counts(study)
                    if done >= req.trials:
                        return ran
                    if done + running >= req.trials:
                        lock.release()  # enough trials are in flight; wait in case one of them fails
                        note.say(study, done, req.trials)
                        time.sleep(WAIT_POLL_SECONDS)
                        continue
                    screen = space.spec.search.screen
                    if screen is None:
                        with stale_check_made(study):  # Optuna's trial would repeat the check just made
                            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
                    else:  # several trials per round: the pool, of which `keep` are trained
                        keep = min(screen.keep, req.trials - done - running)
                        screen_round(study, objective, screen.score, screen.pool, keep, (TrialFailed,))
                    watch.check(objective.last_trial)
            except (StopRequested, KeyboardInterrupt):
                if objective.last_trial is not None:
                    _requeue(study, objective.last_trial)
                raise
            except StorageFault:
                if objective.last_trial is not None:
                    _requeue(study, objective.last_trial, best_effort=True)
                raise
            finally:
                if lock.held:
                    lock.release()
            ran += 1
            number = objective.last_trial
            with named_faults(req.storage):  # the storage may fail here too (a lost connection)
                last = study._storage.get_trial(
                    study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
                )
                if on_trial is not None:
                    on_trial()
            if last.state != TrialState.COMPLETE and not last.user_attrs.get(FINISHED):
                consecutive_failures += 1
                if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                    reason = last.user_attrs.get("fail_detail", "unknown")
                    raise ResnasError(f"{consecutive_failures} trials failed in a row; the last: {reason}")
            else:
                consecutive_failures = 0


def _requeue(
    study: optuna.Study, number: int, best_effort: bool = False, running: tuple[str, str] | None = None
) -> None:
    """A trial stopped by a signal (or a storage fault) is FAIL; queue its parameters, and only
    them, so the next run tries them again. A trial still RUNNING is failed first, with the
    reason and detail ``running`` (a storage fault: ``storage``)."""
    if running is None and best_effort:
        running = ("storage", "the storage failed during this trial")
    try:
        storage = study._storage
        t = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))
        if t.state == TrialState.RUNNING and running is not None:
            storage.set_trial_user_attr(t._trial_id, "fail_reason", running[0])
            storage.set_trial_user_attr(t._trial_id, "fail_detail", running[1])
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            t = storage.get_trial(t._trial_id)
        if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") in ("interrupted", "storage"):
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    except Exception:
        if not best_effort:
            raise


def _stop_with_parent(stop: GracefulStop) -> None:
    """This worker stops as on SIGTERM (its trial ends at the next batch, is failed and queued
    again) when the search process that started it ends, even by kill -9: a thread waits on
    the parent's sentinel, a pipe the parent holds open (already closed if the parent died
    before this worker got here). The same for forked and spawned workers."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        connection.wait([parent.sentinel])
        stop(signal.SIGTERM, None)

    threading.Thread(target=watch, name="resnas-parent-watch", daemon=True).start()


class _EpochRelay:
    """A worker's epochs, sent to its parent's progress display (dropped when the queue is full:
    a display may miss an epoch, a worker never waits for it)."""

    def __init__(self, queue) -> None:
        self.queue = queue
        queue.cancel_join_thread()  # a worker exits without waiting for its parent to read

    def __call__(self, trial: int | None, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        keep = {k: float(metrics[k]) for k in EPOCH_METRICS if k in metrics}
        self._put(("epoch", trial, epoch, epochs, keep))

    def say(self, text: str) -> None:
        """A line for the parent to print above its progress bar."""
        self._put(("say", text))

    def _put(self, item: tuple) -> None:
        try:
            self.queue.put_nowait(item)
        except Exception:
            pass


def _child(
    req_fields: dict,
    space_text: str,
    source: str,
    index: int,
    verbosity: int,
    epochs=None,
    environ: dict | None = None,
) -> None:
    if environ is not None:  # the parent's environment now, not the worker server's when it started
        os.environ.clear()
        os.environ.update(environ)
    optuna.logging.set_verbosity(verbosity)  # a new process starts with Optuna's defaults
    # The parent relays a stop as SIGTERM; a terminal's Ctrl-C reaches the parent only.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = GracefulStop()
    signal.signal(signal.SIGTERM, stop)
    _stop_with_parent(stop)
    req = SearchRequest(space=parse_space(space_text, source), **req_fields)
    relay = None if epochs is None else _EpochRelay(epochs)
    try:
        run_worker(
            req, index, stop=stop.event, force=stop.force, on_epoch=relay, say=None if relay is None else relay.say
        )
    except (StopRequested, KeyboardInterrupt):
        raise SystemExit(130) from None
    except ResnasError as exc:
        print(f"error: worker {index}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except Exception as exc:
        if os.environ.get("RESNAS_DEBUG", "") not in ("", "0"):
            raise
        fault = storage_fault(exc, req.storage)
        print(f"error: worker {index}: {fault or f'unexpected {type(exc).__name__}: {exc}'}", file=sys.stderr)
        raise SystemExit(2 if fault else 1) from None
    finally:
        close_storages()  # a forked worker leaves with os._exit: its connections are closed here


class OptunaBackend(Backend):
    name = "optuna"

    def run(self, request: SearchRequest) -> None:
        with named_faults(request.storage):
            study, _ = open_study(request.space, request.storage, request.study, request.trials)
            progress = SearchProgress(study, request.trials, workers=request.jobs, trackers=open_trackers(request.log))
        stop = GracefulStop()
        in_main_thread = threading.current_thread() is threading.main_thread()
        try:
            with stop.installed() if in_main_thread else nullcontext(), progress:
                if request.jobs <= 1:
                    run_worker(
                        request,
                        0,
                        on_trial=progress.update,
                        stop=stop.event,
                        force=stop.force,
                        on_epoch=progress.epoch,
                        say=progress.say,
                    )
                else:
                    self._run_processes(request, study, progress, stop)
        except StopRequested:
            raise KeyboardInterrupt from None

    @staticmethod
    def _run_processes(
        request: SearchRequest, study: optuna.Study, progress: SearchProgress, stop: GracefulStop
    ) -> None:
        ctx = worker_context()
        fields = {k: getattr(request, k) for k in request.__dataclass_fields__ if k != "space"}
        verbosity = optuna.logging.get_verbosity()
        epochs = ctx.Queue(1000)
        procs = [
            ctx.Process(
                target=_child,
                args=(
                    fields,
                    request.space.text,
                    request.space.source,
                    i,
                    verbosity,
                    epochs,
                    dict(os.environ),
                ),
                daemon=False,
            )
            for i in range(request.jobs)
        ]
        for p in procs:
            p.start()
        watch = FileWatch(request.storage)
        relayed = forced = None
        try:
            while any(p.is_alive() for p in procs):
                # back as soon as a worker ends (the search is done when the last one does)
                connection.wait([p.sentinel for p in procs if p.exitcode is None], POLL_SECONDS)
                _drain(epochs, progress)
                with named_faults(request.storage):
                    watch.check()
                    progress.update()
                if stop.event.is_set() and relayed is None:
                    relayed = _signal_all(procs, signal.SIGTERM)  # each worker ends its trial at the next batch
                if stop.force.is_set() and forced is None:
                    forced = _signal_all(procs, signal.SIGTERM)  # a second one: abandon the trials at once
                if forced is not None and time.monotonic() - forced > FORCE_SECONDS:
                    _signal_all(procs, signal.SIGKILL)  # left RUNNING: the next run fails them (worker lost)
        except BaseException:
            _signal_all(procs, signal.SIGTERM)
            for p in procs:
                p.join(FORCE_SECONDS)
            _signal_all(procs, signal.SIGKILL)
            raise
        finally:
            for p in procs:
                p.join()
        if relayed is not None:
            with named_faults(request.storage):
                _fail_left_running(study, [p.pid for p in procs])
            raise StopRequested("stopped")
        failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
        if not failed:
            return
        codes = [procs[i].exitcode for i in failed]
        with named_faults(request.storage):
            done = counts(study).finished
        if done >= request.trials:  # the others finished the study: what was asked is done
            print(f"worker(s) {failed} exited with codes {codes}; the study holds its {done} trials", flush=True)
            return
        raise ResnasError(f"worker(s) {failed} exited with codes {codes} (their errors are above)")


def _fail_left_running(study: optuna.Study, pids: list[int]) -> None:
    """After a stop, what these (now ended) workers left undone, say because one was killed before
    it could write its record: a trial still RUNNING is failed ``interrupted``, and an interrupted
    trial not yet queued again is queued, as the worker would have done. A stop ends the same way
    however quickly the workers exit."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials if t.state == TrialState.WAITING}
    for t in trials:
        owner = t.user_attrs.get(OWNER) or {}
        if owner.get("pid") not in pids or owner.get("host") != platform.node() or t.number in retried:
            continue
        if t.state == TrialState.RUNNING or (
            t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") == "interrupted"
        ):
            _requeue(study, t.number, running=("interrupted", "the worker was stopped"))


def _drain(queue, progress: SearchProgress) -> None:
    """Hand the epochs and notes the workers sent to the progress display."""
    import queue as queues

    while True:
        try:
            kind, *item = queue.get_nowait()
        except (queues.Empty, OSError, ValueError):
            return
        if kind == "say":
            progress.say(*item)
        else:
            progress.epoch(*item)


def _signal_all(procs: list, signum: int) -> float:
    for p in procs:
        if p.is_alive():
            try:
                os.kill(p.pid, signum)
            except ProcessLookupError:
                pass
    return time.monotonic()
