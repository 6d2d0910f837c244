"""Optuna storages as resnas opens them, the lock that keeps ``--trials N`` exact, and the
rules that recover a study from lost workers and name storage faults.

Normalised at the edge (as ``optuna.storages.get_storage``): a URL string or None in,
a :class:`ResnasStorage` (an ``RDBStorage``) out. Every trial carries an owner record
(host, pid, backend, start time) and a heartbeat; a RUNNING trial whose owner is gone is
failed with a ``fail_reason`` and its parameters (nothing else) are queued again.
"""

from __future__ import annotations

import copy
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import sqlite3
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import optuna
import sqlalchemy
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models

from resnas.errors import StudyError

DEFAULT_STORAGE = "sqlite:///resnas.db"
HEARTBEAT_SECONDS = int(os.environ.get("RESNAS_HEARTBEAT_SECONDS", "5"))
GRACE_SECONDS = int(os.environ.get("RESNAS_GRACE_SECONDS", "20"))
# How long a lost PostgreSQL/MySQL connection is retried (with backoff) before the search stops.
RETRY_SECONDS = float(os.environ.get("RESNAS_STORAGE_RETRY_SECONDS", "60"))
MAX_RETRY = 3  # a trial whose worker was lost is queued again at most this many times
OWNER = "owner"  # trial user attr: who runs it (host, pid, process start, backend, started)
RUNNING = optuna.trial.TrialState.RUNNING


class StorageFault(StudyError):
    """The storage failed under a search: the message names the cause and the file or host."""


def storage_url(url: str | None) -> str:
    return url or os.environ.get("RESNAS_STORAGE") or DEFAULT_STORAGE


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path)


def where(url: str) -> str:
    """The file or host of a storage URL, without credentials."""
    db = sqlite_path(url)
    if db is not None:
        return str(db)
    try:
        parsed = sqlalchemy.engine.make_url(url)
        return f"{parsed.get_backend_name()} at {parsed.host}:{parsed.port or 'default port'}/{parsed.database}"
    except sqlalchemy.exc.ArgumentError:
        return url.split("@")[-1]


# --- owners ---------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def owner_record(backend: str) -> dict[str, Any]:
    stat = _proc_stat(os.getpid())
    return {
        "host": platform.node(),
        "pid": os.getpid(),
        "process_start": stat[1] if stat else None,
        "backend": backend,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def process_alive(pid: int, process_start: int | None = None) -> bool:
    """Is process ``pid`` of this machine alive (not a zombie, not a recycled pid)?"""
    stat = _proc_stat(pid)
    if stat is None:
        if Path("/proc/self/stat").exists():
            return False  # /proc works here and has no such process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state, start = stat
    return state not in ("Z", "X") and (process_start is None or start == process_start)


def lost_reason(owner: dict[str, Any] | None) -> str:
    return "driver lost" if owner and owner.get("backend") == "ray" else "worker lost"


def _judge(trial: models.TrialModel, now_db: datetime, grace: float) -> tuple[str, str] | None:
    """(fail_reason, detail) if this RUNNING trial's owner is gone; None while it may be alive."""
    owner = None
    for attr in trial.user_attributes:
        if attr.key == OWNER:
            owner = json.loads(attr.value_json)
    beat = max((h.heartbeat for h in trial.heartbeats), default=None)
    reason = lost_reason(owner)
    if owner and owner.get("host") == platform.node():
        if process_alive(int(owner["pid"]), owner.get("process_start")):
            return None  # alive on this machine: it is training, however slow its heartbeat
        return reason, f"its {owner.get('backend', 'optuna')} process {owner['pid']} on {owner['host']} is gone"
    if beat is not None:
        silent = (now_db - beat.replace(tzinfo=None)).total_seconds()
        if silent <= grace:
            return None
        host = f" on {owner['host']}" if owner else ""
        return reason, f"no heartbeat{host} for {silent:.0f} s"
    start = trial._datetime_start_utc
    age = (datetime.now(timezone.utc).replace(tzinfo=None) - start).total_seconds() if start else grace + 1
    if age <= grace:
        return None  # just created; its worker has not written a heartbeat yet
    if owner:
        return reason, f"no heartbeat ever from {owner['host']} pid {owner['pid']} in {age:.0f} s"
    return reason, f"RUNNING for {age:.0f} s with no heartbeat and no owner (left by a plain study.ask()?)"


def requeue_lost(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Heartbeat-stale callback: queue the lost trial's parameters again (no other attribute)."""
    retries = int(trial.user_attrs.get("retries", 0))
    # A trial lost before it sampled (a plain study.ask() that took a queued trial) keeps the
    # parameters it was queued with.
    params = trial.params or trial.system_attrs.get("fixed_params")
    if retries < MAX_RETRY and params:
        study.enqueue_trial(params, user_attrs={"retry_of": trial.number, "retries": retries + 1})


_DEFERRED = threading.local()  # the parameters of a trial inside ResnasStorage.one_write_of_params


def backend_of(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage under Optuna's (or resnas's) trial cache: where a :class:`ResnasStorage`
    method can be called."""
    return getattr(storage, "_backend", storage)


@contextmanager
def params_written_once(trial: optuna.Trial) -> Iterator[None]:
    """While inside, the trial's ``suggest_*`` calls write nothing; their parameters are written
    together at the end (one transaction, not one per parameter). Any other storage: as usual."""
    store = backend_of(trial.storage)
    if not isinstance(store, ResnasStorage):
        yield
        return
    with store.one_write_of_params(trial._trial_id):
        yield


def set_trial_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """``trial.set_user_attr`` for several keys at once: one commit on a :class:`ResnasStorage`
    (each ``set_user_attr`` is its own transaction), one call per key on any other storage."""
    store = backend_of(trial.storage)
    if isinstance(store, ResnasStorage):
        store.set_trial_user_attrs(trial._trial_id, attrs)
        trial._cached_frozen_trial.user_attrs.update(attrs)
        return
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


# --- storage errors -------------------------------------------------------------------------


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        orig = getattr(exc, "orig", None)
        if isinstance(orig, BaseException) and id(orig) not in seen:
            yield orig
            seen.add(id(orig))
        exc = exc.__cause__ or exc.__context__


_CONNECTION_LOST = (
    "server closed the connection",
    "connection refused",
    "could not connect",
    "connection already closed",
    "terminating connection",
    "ssl syscall",
    "connection reset",
    "connection timed out",
    "lost connection",
    "gone away",
    "no connection to the server",
)


def connection_lost(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
        if any(s in str(e).lower() for s in _CONNECTION_LOST):
            return True
    return False


def storage_fault(exc: BaseException, url: str) -> StorageFault | None:
    """The storage fault behind ``exc``, named for the user; None if ``exc`` is not one."""
    chain = list(_chain(exc))
    if not any(
        isinstance(e, sqlalchemy.exc.SQLAlchemyError | optuna.exceptions.StorageInternalError | sqlite3.Error)
        for e in chain
    ):
        return None
    text = " | ".join(str(e).lower() for e in chain)
    place = where(url)
    db = sqlite_path(url)
    if db is not None and not db.exists():
        return StorageFault(f"the database {db} was deleted during the search")
    if "database or disk is full" in text or "no space left" in text:
        return StorageFault(f"disk full: cannot write to {place}")
    if "readonly" in text or "read-only" in text:
        return StorageFault(f"read-only: cannot write to {place}")
    if "not a database" in text or "malformed" in text:
        return StorageFault(f"not a database: {place} is corrupt or not an SQLite file")
    if connection_lost(exc):
        return StorageFault(f"connection lost to {place} (retried for {RETRY_SECONDS:g} s)")
    if "unable to open database file" in text or "disk i/o error" in text:
        return StorageFault(f"cannot read or write {place} (deleted, moved or on a failing disk?)")
    first = str(chain[-1]).strip().splitlines()[0] if str(chain[-1]).strip() else type(chain[-1]).__name__
    return StorageFault(f"storage error at {place}: {first}")


@contextmanager
def named_faults(url: str) -> Iterator[None]:
    """Turn a storage exception into a :class:`StorageFault` naming its cause."""
    try:
        yield
    except StorageFault:
        raise
    except Exception as exc:
        fault = storage_fault(exc, url)
        if fault is None:
            raise
        raise fault from exc


def _retrying(method: Any) -> Any:
    """Retry a storage call whose database connection was lost, with backoff, for RETRY_SECONDS."""

    @functools.wraps(method)
    def call(self: ResnasStorage, *args: Any, **kwargs: Any) -> Any:
        pause, told = 0.5, False
        while True:
            try:
                result = method(self, *args, **kwargs)
                self._down_since = None
                return result
            except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
                if self.engine.dialect.name == "sqlite" or not connection_lost(exc):
                    raise
                # One budget for every call: once the outage outlasts it, each call fails at once.
                down = getattr(self, "_down_since", None) or time.monotonic()
                self._down_since = down
                deadline = down + RETRY_SECONDS
                if time.monotonic() > deadline:
                    raise
                if not told:
                    print(
                        f"storage: connection lost to {where(self.url)}; retrying for up to {RETRY_SECONDS:g} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    told = True
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 8.0)

    return call


class TrialRecord(NamedTuple):
    """What a report reads of a trial: the fields of a ``FrozenTrial`` it uses, and only the user
    attributes it asked for."""

    number: int
    trial_id: int
    state: optuna.trial.TrialState
    values: list[float] | None
    user_attrs: dict[str, Any]


class TrialCounts(NamedTuple):
    finished: int
    running: int
    total: int
    by_state: dict  # TrialState -> count


def _running(session: Any, study_id: int) -> list[models.TrialModel]:
    """The study's RUNNING trials with their heartbeats and user attributes."""
    return list(session.execute(_running_query(), {"sid": study_id}).scalars().all())


def _upserts() -> dict[str, Any]:
    from sqlalchemy.dialects import mysql, postgresql
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    found = {"postgresql": postgresql.insert, "mysql": mysql.insert}
    if sqlite3.sqlite_version_info >= (3, 24, 0):  # ON CONFLICT DO UPDATE
        found["sqlite"] = sqlite_dialect.insert
    return found


_UPSERT = _upserts()


# --- statements built once ------------------------------------------------------------------
# SQLAlchemy builds and hashes an expression on every call before it finds the compiled form in
# its cache: about 1 ms for a join on this machine, ten times the query. Built once, with bind
# parameters, a call is that cache hit alone (a trial makes about a dozen of these calls).


@functools.cache
def _counts_query() -> Any:
    """Per state: all trials and the finished ones (COMPLETE, or PRUNED with user attr
    ``:finished`` true), never a trial with user attr ``:exclude``; of study ``:sid``."""
    T, A = models.TrialModel, models.TrialUserAttributeModel
    X, F = sqlalchemy.orm.aliased(A), sqlalchemy.orm.aliased(A)
    TS = optuna.trial.TrialState
    done = sqlalchemy.and_(
        X.trial_id.is_(None),
        sqlalchemy.or_(T.state == TS.COMPLETE, sqlalchemy.and_(T.state == TS.PRUNED, F.trial_id.isnot(None))),
    )
    return (
        sqlalchemy.select(
            T.state, sqlalchemy.func.count(T.trial_id), sqlalchemy.func.sum(sqlalchemy.case((done, 1), else_=0))
        )
        .outerjoin(X, sqlalchemy.and_(X.trial_id == T.trial_id, X.key == sqlalchemy.bindparam("exclude")))
        .outerjoin(
            F,
            sqlalchemy.and_(
                F.trial_id == T.trial_id, F.key == sqlalchemy.bindparam("finished"), F.value_json == "true"
            ),
        )
        .where(T.study_id == sqlalchemy.bindparam("sid"))
        .group_by(T.state)
    )


@functools.cache
def _trial_row_query() -> Any:
    T = models.TrialModel
    return sqlalchemy.select(T.state, T.study_id).where(T.trial_id == sqlalchemy.bindparam("tid"))


@functools.cache
def _trial_queries() -> tuple[Any, ...]:
    """What ``RDBStorage.get_trial`` reads of trial ``:tid`` through the ORM (six queries, the
    five relations loaded lazily), as plain statements."""
    T, P, V = models.TrialModel, models.TrialParamModel, models.TrialValueModel
    U, S, M = models.TrialUserAttributeModel, models.TrialSystemAttributeModel, models.TrialIntermediateValueModel
    tid = sqlalchemy.bindparam("tid")
    start, end = T._datetime_start_utc.label("start"), T._datetime_complete_utc.label("end")  # UTC (Optuna 5)
    return (
        sqlalchemy.select(T.number, T.state, start, end).where(T.trial_id == tid),
        sqlalchemy.select(P.param_name, P.param_value, P.distribution_json)
        .where(P.trial_id == tid)
        .order_by(P.param_id),
        sqlalchemy.select(V.objective, V.value, V.value_type).where(V.trial_id == tid),
        sqlalchemy.select(U.key, U.value_json).where(U.trial_id == tid),
        sqlalchemy.select(S.key, S.value_json).where(S.trial_id == tid),
        sqlalchemy.select(M.step, M.intermediate_value, M.intermediate_value_type).where(M.trial_id == tid),
    )


def _local_time(utc: datetime | None) -> datetime | None:
    """A stored (naive UTC) start or end time as ``TrialModel`` gives it: naive local time."""
    return None if utc is None else utc.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def _read_trial(session: Any, trial_id: int) -> optuna.trial.FrozenTrial:
    """Trial ``trial_id`` as ``RDBStorage.get_trial`` builds it, from :func:`_trial_queries`."""
    trial_q, params_q, values_q, user_q, system_q, steps_q = _trial_queries()
    arg = {"tid": trial_id}
    row = session.execute(trial_q, arg).first()
    if row is None:
        raise KeyError(models.NOT_FOUND_MSG)
    params = session.execute(params_q, arg).all()
    stored = session.execute(values_q, arg).all()
    user = session.execute(user_q, arg).all()
    system = session.execute(system_q, arg).all()
    steps = session.execute(steps_q, arg).all()
    values: list[float] | None = None
    if stored:
        values = [0.0] * len(stored)
        for objective, value, kind in stored:
            values[objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
    dists = {name: optuna.distributions.json_to_distribution(text) for name, _, text in params}
    loads = json.loads
    return optuna.trial.FrozenTrial(
        number=row.number,
        state=row.state,
        value=None,
        values=values,
        datetime_start=_local_time(row.start),
        datetime_complete=_local_time(row.end),
        params={name: dists[name].to_external_repr(value) for name, value, _ in params},
        distributions=dists,
        user_attrs={key: loads(text) for key, text in user},
        system_attrs={key: loads(text) for key, text in system},
        intermediate_values={
            step: models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind)
            for step, value, kind in steps
        },
        trial_id=trial_id,
    )


@functools.cache
def _unfinished_queries() -> tuple[Any, Any]:
    """Study ``:sid`` (does it exist), and the ids of its trials in ``:states``, in order."""
    T = models.TrialModel
    sid = sqlalchemy.bindparam("sid")
    return (
        sqlalchemy.select(models.StudyModel.study_id).where(models.StudyModel.study_id == sid),
        sqlalchemy.select(T.trial_id)
        .where(T.study_id == sid, T.state.in_(sqlalchemy.bindparam("states", expanding=True)))
        .order_by(T.trial_id),
    )


@functools.cache
def _attrs_upsert(dialect: str) -> Any:
    """Insert or replace user attributes; executed with one parameter set per attribute."""
    A = models.TrialUserAttributeModel
    insert = _UPSERT[dialect](A.__table__)
    if dialect == "mysql":
        return insert.on_duplicate_key_update(value_json=insert.inserted.value_json)
    return insert.on_conflict_do_update(
        index_elements=["trial_id", "key"], set_={"value_json": insert.excluded.value_json}
    )


@functools.cache
def _heartbeat_upsert(dialect: str) -> Any:
    """Trial ``:trial_id``'s heartbeat, the database's clock."""
    H = models.TrialHeartbeatModel
    now = sqlalchemy.func.now()
    insert = _UPSERT[dialect](H.__table__).values(trial_id=sqlalchemy.bindparam("trial_id"), heartbeat=now)
    if dialect == "mysql":
        return insert.on_duplicate_key_update(heartbeat=now)
    return insert.on_conflict_do_update(index_elements=["trial_id"], set_={"heartbeat": now})


@functools.cache
def _finished_numbers_query() -> Any:
    T = models.TrialModel
    final = [s for s in optuna.trial.TrialState if s.is_finished()]
    return sqlalchemy.select(T.number, T.trial_id).where(T.study_id == sqlalchemy.bindparam("sid"), T.state.in_(final))


@functools.cache
def _with_attr_query() -> Any:
    T, A = models.TrialModel, models.TrialUserAttributeModel
    return (
        sqlalchemy.select(T.number, T.state)
        .join(A, A.trial_id == T.trial_id)
        .where(
            T.study_id == sqlalchemy.bindparam("sid"),
            T.state.in_(sqlalchemy.bindparam("states", expanding=True)),
            A.key == sqlalchemy.bindparam("key"),
            A.value_json == sqlalchemy.bindparam("value"),
        )
        .order_by(T.number)
    )


@functools.cache
def _earlier_distribution_query() -> Any:
    T, P = models.TrialModel, models.TrialParamModel
    return (
        sqlalchemy.select(P.distribution_json)
        .join(T, T.trial_id == P.trial_id)
        .where(T.study_id == sqlalchemy.bindparam("sid"), P.param_name == sqlalchemy.bindparam("name"))
        .limit(1)
    )


@functools.cache
def _running_query() -> Any:
    T = models.TrialModel
    return (
        sqlalchemy.select(T)
        .options(sqlalchemy.orm.selectinload(T.heartbeats), sqlalchemy.orm.selectinload(T.user_attributes))
        .where(T.state == RUNNING, T.study_id == sqlalchemy.bindparam("sid"))
    )


@functools.cache
def _now_query() -> Any:
    return sqlalchemy.select(sqlalchemy.func.now())


@functools.cache
def _params_insert() -> Any:
    return sqlalchemy.insert(models.TrialParamModel.__table__)  # executed with a row per parameter


_OPEN: weakref.WeakSet = weakref.WeakSet()  # every ResnasStorage of this process still in use


def close_storages() -> None:
    """Close the connections of every storage this process opened, as Python's exit would: for
    a process that leaves with ``os._exit``. SQLite: the last connection to close folds the
    write-ahead log back into the database file, which then holds the whole study alone (a
    copied ``resnas.db`` is complete)."""
    for storage in list(_OPEN):
        try:
            storage.engine.dispose()
        except Exception:  # leaving anyway: a connection that cannot close is closed by the exit
            pass


@contextmanager
def stale_check_made(study: optuna.Study) -> Iterator[None]:
    """Inside, the first stale-trial check of ``study`` through its storage finds nothing: for a
    worker that has just made one and hands the study to ``study.optimize``, whose trial starts
    with another (a database read a trial saved). Leaving the block ends it, used or not."""
    store = backend_of(study._storage)
    if not isinstance(store, ResnasStorage):
        yield
        return
    store._skip_stale_check.add(study._study_id)
    try:
        yield
    finally:
        store._skip_stale_check.discard(study._study_id)


class ResnasStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` whose stale-trial check asks who owns a trial, not only its heartbeat.

    A RUNNING trial is lost when its owner process on this machine is gone, when its
    heartbeat is older than the grace period, or when it never had a heartbeat and is
    older than the grace period (a trial a crashed writer or a plain ``study.ask()`` left).
    Lost trials get ``fail_reason`` (``worker lost`` or ``driver lost``) before Optuna
    fails them; ``requeue_lost`` queues their parameters again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip_stale_check: set[int] = set()
        _OPEN.add(self)

    def record_heartbeat(self, trial_id: int) -> None:
        """A heartbeat that cannot be written is skipped: it runs in Optuna's thread, where an
        error would print a traceback; the worker's next storage call names the fault."""
        try:
            _retrying(ResnasStorage._record_heartbeat)(self, trial_id)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, sqlite3.Error):
            pass

    def _record_heartbeat(self, trial_id: int) -> None:
        """Optuna's heartbeat write (the database's clock), as one upsert: no ORM objects."""
        dialect = self.engine.name
        if dialect not in _UPSERT:
            optuna.storages.RDBStorage.record_heartbeat(self, trial_id)
            return
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session, True) as session:
            session.execute(_heartbeat_upsert(dialect), {"trial_id": trial_id})

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        """Optuna's ``get_trial`` (the same trial, tested field by field) from plain statements:
        a worker reads its running trial three times, each a third of the ORM's time."""
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session) as session:
            return _read_trial(session, trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Any = None
    ) -> list[optuna.trial.FrozenTrial]:
        """Optuna's ``get_all_trials``; the unfinished trials alone (what a worker asks for before
        each trial: the queue of WAITING ones, usually empty) from plain statements too."""
        if states is None or any(s.is_finished() for s in states):
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        study_q, ids_q = _unfinished_queries()
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session) as session:
            if session.execute(study_q, {"sid": study_id}).first() is None:
                raise KeyError(models.NOT_FOUND_MSG)
            ids = session.execute(ids_q, {"sid": study_id, "states": list(states)}).scalars().all()
            return [_read_trial(session, trial_id) for trial_id in ids]  # new objects: nothing to copy

    def lost_trials(self, study_id: int) -> list[tuple[int, int, str, str]]:
        """(trial_id, number, reason, detail) of the study's RUNNING trials whose owner is gone."""
        grace = self.grace_period if self.grace_period is not None else GRACE_SECONDS
        # A grace shorter than two heartbeats would fail a live trial of another machine between beats.
        grace = max(grace, 2 * HEARTBEAT_SECONDS)
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session) as session:
            now_db = session.execute(_now_query()).scalar().replace(tzinfo=None)
            running = _running(session, study_id)
            lost = []
            for t in running:
                verdict = _judge(t, now_db, grace)
                if verdict is not None:
                    lost.append((t.trial_id, t.number, *verdict))
            return lost

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if study_id in self._skip_stale_check:  # checked a moment ago by the worker (stale_check_made)
            self._skip_stale_check.discard(study_id)
            return []
        ids = []
        for trial_id, _, reason, detail in self.lost_trials(study_id):
            try:
                self.set_trial_user_attr(trial_id, "fail_reason", reason)
                self.set_trial_user_attr(trial_id, "fail_detail", detail)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # finished meanwhile (by its worker, or failed by another one)
            ids.append(trial_id)
        return ids

    def running_owners(self, study_id: int) -> list[tuple[int, dict | None, datetime | None]]:
        """(number, owner, last heartbeat) of the study's RUNNING trials: what a worker waits for."""
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session) as session:
            running = _running(session, study_id)
            out = []
            for t in running:
                owner = next((json.loads(a.value_json) for a in t.user_attributes if a.key == OWNER), None)
                out.append((t.number, owner, max((h.heartbeat for h in t.heartbeats), default=None)))
            return out

    def trial_counts(
        self, study_id: int, finished_key: str = "finished", exclude_key: str | None = None
    ) -> TrialCounts:
        """(finished, running, all, per state) trials of a study, counted in the database (no trial
        is loaded). Finished: COMPLETE, or PRUNED with user attr ``finished_key`` set; never a
        trial with user attr ``exclude_key``."""
        params = {"sid": study_id, "exclude": exclude_key or "", "finished": finished_key}
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session) as session:
            rows = session.execute(_counts_query(), params).all()  # one query, no trial loaded
        counts = {state: int(n) for state, n, _ in rows}
        finished = sum(int(f or 0) for _, _, f in rows)
        return TrialCounts(finished, counts.get(RUNNING, 0), sum(counts.values()), counts)

    def finished_numbers(self, study_id: int) -> dict[int, int]:
        """{number: trial_id} of the study's trials in a final state (no trial is loaded)."""
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session) as session:
            rows = session.execute(_finished_numbers_query(), {"sid": study_id}).all()
        return dict(rows)

    def best_first_value(self, study_id: int, maximize: bool) -> tuple[int, float] | None:
        """(number, value) of the COMPLETE trial with the best first objective value."""
        T, V = models.TrialModel, models.TrialValueModel
        order = V.value.desc() if maximize else V.value.asc()
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session) as session:
            row = (
                session.query(T.number, V.value)
                .join(V, V.trial_id == T.trial_id)
                .filter(T.study_id == study_id, T.state == optuna.trial.TrialState.COMPLETE, V.objective == 0)
                .filter(V.value_type == models.TrialValueModel.TrialValueType.FINITE)
                .order_by(order, T.number)
                .first()
            )
        return None if row is None else (int(row[0]), float(row[1]))

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
        previous_distribution: optuna.distributions.BaseDistribution | None,
    ) -> None:
        """Optuna's write of a suggested parameter (every ``trial.suggest_*``); inside
        :meth:`one_write_of_params` for this trial, kept for the write at its end."""
        row = (param_name, param_value_internal, distribution, previous_distribution)
        pending = getattr(_DEFERRED, "params", None)
        if pending is not None and pending[0] == trial_id:
            pending[1].append(row)
            return
        self._write_params(trial_id, [row])

    @contextmanager
    def one_write_of_params(self, trial_id: int) -> Iterator[None]:
        """The parameters this thread suggests for ``trial_id`` while inside are written in one
        transaction when it ends (the trial reads them from its own cache meanwhile)."""
        _DEFERRED.params = (trial_id, [])
        try:
            yield
        finally:
            rows = _DEFERRED.params[1]
            _DEFERRED.params = None
        if rows:
            self._write_params(trial_id, rows)

    def _write_params(self, trial_id: int, rows: list[tuple]) -> None:
        """One state check, the distribution checks Optuna makes, one insert of every row: plain
        statements, not ORM objects."""
        dists = optuna.distributions
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session, True) as session:
            trial = session.execute(_trial_row_query(), {"tid": trial_id}).first()
            if trial is None:
                raise KeyError(f"No trial with trial-id {trial_id}.")
            self.check_trial_is_updatable(trial_id, trial.state)
            values = []
            for name, value, distribution, previous in rows:
                if previous is None:
                    earlier = session.execute(
                        _earlier_distribution_query(), {"sid": trial.study_id, "name": name}
                    ).scalar()
                    previous = None if earlier is None else dists.json_to_distribution(earlier)
                if previous is not None:
                    dists.check_distribution_compatibility(previous, distribution)
                values.append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": value,
                        "distribution_json": dists.distribution_to_json(distribution),
                    }
                )
            session.execute(_params_insert(), values)  # Core: no ORM objects

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Several user attributes of a trial in one transaction (one commit, not one per key)."""
        if not attrs:
            return
        A = models.TrialUserAttributeModel
        dialect = self.engine.name
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session, True) as session:
            if dialect not in _UPSERT:  # another database: Optuna's write, one key at a time
                for key, value in attrs.items():
                    self._set_trial_attr_without_commit(session, A, trial_id, key, value)
                return
            # One state check and one upsert (Optuna's per-key write is two ORM queries a key).
            trial = session.execute(_trial_row_query(), {"tid": trial_id}).first()
            if trial is None:
                raise KeyError(f"No trial with trial-id {trial_id}.")
            self.check_trial_is_updatable(trial_id, trial.state)
            rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
            session.execute(_attrs_upsert(dialect), rows)

    def trial_records(self, study_id: int, keys: tuple[str, ...], states: tuple | None = None) -> list[TrialRecord]:
        """The study's trials (in ``states``; all if None) by number, with their values and the user
        attributes named in ``keys``: three plain queries, no ORM objects (10,000 trials in well
        under a second, where ``study.get_trials`` takes tens of seconds)."""
        T, V, A = (m.__tablename__ for m in (models.TrialModel, models.TrialValueModel, models.TrialUserAttributeModel))
        # Plain SQL: no ORM objects and no per-row type conversion (both cost seconds at 10,000 trials).
        where = "t.study_id = :sid" + (" AND t.state IN :states" if states is not None else "")
        params: dict[str, Any] = {"sid": study_id, "keys": list(keys)}
        binds = [sqlalchemy.bindparam("keys", expanding=True)]
        if states is not None:
            params["states"] = [s.name for s in states]
            binds.append(sqlalchemy.bindparam("states", expanding=True))

        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session) as session:

            def run(sql: str) -> list:
                text = sqlalchemy.text(sql)
                used = [b for b in binds if f":{b.key}" in sql]
                return session.execute(
                    text.bindparams(*used), {k: v for k, v in params.items() if f":{k}" in sql}
                ).all()

            rows = run(f"SELECT t.trial_id, t.number, t.state FROM {T} t WHERE {where}")
            values = run(
                f"SELECT v.trial_id, v.value, v.value_type FROM {V} v JOIN {T} t ON t.trial_id = v.trial_id "
                f"WHERE {where} ORDER BY v.trial_id, v.objective"
            )
            attrs = run(
                f"SELECT a.trial_id, a.key, a.value_json FROM {A} a JOIN {T} t ON t.trial_id = a.trial_id "
                f"WHERE {where} AND a.key IN :keys"
            )
        infinite = {"INF_POS": math.inf, "INF_NEG": -math.inf}
        by_id: dict[int, list[float]] = {}
        for trial_id, value, kind in values:
            by_id.setdefault(trial_id, []).append(float(value) if kind == "FINITE" else infinite[kind])
        user: dict[int, dict[str, Any]] = {}
        loads = json.loads
        for trial_id, key, text in attrs:
            user.setdefault(trial_id, {})[key] = loads(text)
        state_of = {s.name: s for s in optuna.trial.TrialState}
        records = [
            TrialRecord(number, trial_id, state_of[state], by_id.get(trial_id), user.get(trial_id, {}))
            for trial_id, number, state in rows
        ]
        return sorted(records, key=lambda r: r.number)

    def trials_with_attr(self, study_id: int, key: str, value: Any, states: tuple) -> list[tuple[int, Any]]:
        """(number, state) of the study's trials in ``states`` whose user attr ``key`` equals
        ``value``, by number."""
        params = {"sid": study_id, "states": list(states), "key": key, "value": json.dumps(value)}
        with optuna.storages._rdb.storage._create_scoped_session(self.scoped_session) as session:
            rows = session.execute(_with_attr_query(), params).all()
        return [(r[0], r[1]) for r in rows]


for _name in (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_user_attrs",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "lost_trials",
    "running_owners",
    "trial_counts",
    "trials_with_attr",
    "trial_records",
    "finished_numbers",
    "best_first_value",
):
    setattr(ResnasStorage, _name, _retrying(getattr(ResnasStorage, _name)))


class LeanCache(_CachedStorage):
    """Optuna's trial cache, except that questions about unfinished trials only (the queue of
    WAITING trials a worker pops, RUNNING ones) go straight to the database: the cache loads
    every trial of the study on its first read, 10,000 finished trials to find the next queued
    one. Samplers that read the finished trials (TPE, NSGA-II) still load them, once per process."""

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Any = None
    ) -> list[optuna.trial.FrozenTrial]:
        if states is not None and not any(s.is_finished() for s in states):
            trials = self._backend.get_all_trials(study_id, deepcopy=False, states=tuple(states))
            with self._lock:  # known to the cache (a worker writes to them next), read again until finished
                if study_id not in self._studies:
                    self._studies[study_id] = _StudyInfo()
                self._add_trials_to_cache(study_id, trials)
                self._studies[study_id].unfinished_trial_ids.update(t._trial_id for t in trials)
            return copy.deepcopy(trials) if deepcopy else trials
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        """A finished trial read once is kept (it no longer changes): the worker and the progress
        display both read the trial that just ended."""
        trial = super().get_trial(trial_id)
        if trial.state.is_finished():
            with self._lock:
                known = self._trial_id_to_study_id_and_number.get(trial_id)
                if known is not None and known[0] in self._studies:
                    self._add_trials_to_cache(known[0], [trial])
        return trial


def lean(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage to hand to ``optuna.create_study``/``load_study``: an RDB storage under a
    :class:`LeanCache` (Optuna would put its own cache around it)."""
    if isinstance(storage, optuna.storages.RDBStorage):
        return LeanCache(storage)
    return storage


# --- opening --------------------------------------------------------------------------------

SQLITE_HEADER = b"SQLite format 3\x00"


# Descriptors of database files this process read a header through; never closed. On Linux,
# closing *any* descriptor of a file drops *every* POSIX lock the process holds on it, SQLite's
# connections' included (SQLite's documented fcntl pitfall): a header read through open/close
# while this process had the database open let another process think itself alone, checkpoint
# and delete the -wal and -shm files under a running search.
_HEAD_FDS: dict[tuple[int, int], int] = {}


def _read_head(db: Path) -> bytes:
    """The first bytes of ``db``, read through a descriptor this process keeps (see ``_HEAD_FDS``)."""
    st = os.stat(db)
    key = (st.st_dev, st.st_ino)
    fd = _HEAD_FDS.get(key)
    if fd is None:
        fd = _HEAD_FDS[key] = os.open(db, os.O_RDONLY | os.O_CLOEXEC)
    return os.pread(fd, len(SQLITE_HEADER), 0)


def _check_sqlite_file(db: Path, must_exist: bool, write: bool) -> None:
    if not db.exists():
        if must_exist:
            raise StudyError(f"--storage: no database at {db} (run resnas search first, or name one with --storage)")
        if not db.parent.exists():
            raise StudyError(f"--storage: directory {db.parent} does not exist")
        if write and not os.access(db.parent, os.W_OK):
            raise StorageFault(f"read-only: cannot create a database in {db.parent}")
        return
    if not db.is_file():
        raise StudyError(f"--storage: {db} is not a file")
    try:
        head = _read_head(db)
    except OSError as exc:
        raise StorageFault(f"cannot read {db}: {exc.strerror}") from None
    if not head:
        raise StorageFault(f"not a database: {db} is an empty file (0 bytes); remove it to start a new database there")
    if head != SQLITE_HEADER:
        raise StorageFault(f"not a database: {db} is not an SQLite file (corrupt, or another format)")
    if write and not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)):
        raise StorageFault(f"read-only: cannot write to {db} (the file or its directory is read-only)")


class _OpenExisting:
    """SQLite connections that never create the file: a database deleted mid-search is an error,
    not a new empty database at the same path. (A class, not a closure: storages are pickled.)"""

    def __init__(self, db: Path):
        self.target = f"file:{db.resolve()}?mode=rw"

    def __call__(self) -> sqlite3.Connection:
        return sqlite3.connect(self.target, uri=True, timeout=300, check_same_thread=False)


_SCHEMA_LOCK = 0x7265736E6173  # "resnas": a PostgreSQL advisory lock held while creating tables


@contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Several machines starting at once on an empty PostgreSQL database create Optuna's tables
    one after another, not at the same moment (which fails on a duplicate type)."""
    if not url.startswith("postgresql"):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK})
    finally:
        engine.dispose()


def open_storage(
    url: str | None = None, *, heartbeat: bool = True, must_exist: bool = False, write: bool = True
) -> ResnasStorage:
    """A :class:`ResnasStorage` for ``url`` (default ``sqlite:///resnas.db``), with heartbeats.

    ``must_exist``: for commands that only read, a missing SQLite file is an error rather
    than a new, empty database. ``write=False``: the storage is only read.
    """
    url = storage_url(url)
    engine_kwargs: dict = {}
    db = sqlite_path(url)
    if url.startswith("sqlite:") and db is None:
        raise StudyError(f"--storage: {url} is an in-memory database that ends with the process; name a file")
    if db is not None:
        _check_sqlite_file(db, must_exist, write)
        if write:
            # WAL lets readers and one writer work at once; a long busy timeout rides out the
            # short write locks of several workers (no "database is locked").
            with named_faults(url), sqlite3.connect(db, timeout=60) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
        engine_kwargs = {"creator": _OpenExisting(db)}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"pool_pre_ping": True}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna")
    warnings.filterwarnings(
        "ignore",
        message=".*(heartbeat|heartbeat_stale_trial_callback|set_metric_names).*",
        category=optuna.exceptions.ExperimentalWarning,
    )
    beats: dict = {}
    if heartbeat:
        beats = {
            "heartbeat_interval": HEARTBEAT_SECONDS,
            "grace_period": GRACE_SECONDS,
            "heartbeat_stale_trial_callback": requeue_lost,
        }
    try:
        with named_faults(url), _schema_lock(url):
            return ResnasStorage(url, engine_kwargs=engine_kwargs, **beats)
    except StorageFault as exc:
        if db is not None or not connection_lost(exc):
            raise
        raise StorageFault(f"--storage: cannot connect to {where(url)}") from None
    except (ImportError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudyError(f"--storage: cannot open {url}: {first}") from None


class ClaimLock:
    """A lock shared by every worker of one study, on one machine or many.

    Held while a worker counts the trials and creates its next one, so N workers never
    start more trials than are needed. SQLite: an ``flock`` beside the database file.
    PostgreSQL: a session advisory lock. Elsewhere: a process-local lock.
    """

    def __init__(self, url: str, study_name: str):
        self.url = storage_url(url)
        self.key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
        db = sqlite_path(self.url)
        self._file = Path(f"{db}.lock") if db is not None else None
        self._fd: int | None = None
        self._engine = None
        self._conn = None
        self._thread_lock = threading.Lock()

    def acquire(self) -> None:
        if self._file is not None:
            if not self._file.parent.exists():
                raise StudyError(f"--storage: directory {self._file.parent} does not exist")
            try:
                self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:  # a read-only directory: lock an existing file read-only (flock allows it)
                try:
                    self._fd = os.open(self._file, os.O_RDONLY)
                except OSError:
                    raise StorageFault(f"read-only: cannot create the lock file {self._file}") from None
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        elif self.url.startswith("postgresql"):
            if self._engine is None:
                self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
            deadline, pause = time.monotonic() + RETRY_SECONDS, 0.5
            while True:
                try:
                    self._conn = self._engine.connect()
                    self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
                    return
                except sqlalchemy.exc.OperationalError:
                    self._conn = None
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(2 * pause, 8.0)
        else:
            self._thread_lock.acquire()

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                conn.close()
            except sqlalchemy.exc.SQLAlchemyError:
                conn.invalidate()  # the connection is gone, and its session lock with it
        elif self._thread_lock.locked():
            self._thread_lock.release()

    @property
    def held(self) -> bool:
        return self._fd is not None or self._conn is not None or self._thread_lock.locked()

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            if self.held:
                self.release()
