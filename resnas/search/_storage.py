"""Optuna storages as resnas opens them, and the lock that keeps ``--trials N`` exact.

Normalised at the edge (as ``optuna.storages.get_storage``): a URL string or None in,
an ``RDBStorage`` with heartbeats out, so a killed worker's RUNNING trial is failed and
its parameters are queued again (``RetryHeartbeatStaleTrialCallback``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy

from resnas.errors import StudyError

DEFAULT_STORAGE = "sqlite:///resnas.db"
HEARTBEAT_SECONDS = int(os.environ.get("RESNAS_HEARTBEAT_SECONDS", "5"))
GRACE_SECONDS = int(os.environ.get("RESNAS_GRACE_SECONDS", "20"))
MAX_RETRY = 3


def storage_url(url: str | None) -> str:
    return url or os.environ.get("RESNAS_STORAGE") or DEFAULT_STORAGE


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path)


def open_storage(
    url: str | None = None, *, heartbeat: bool = True, must_exist: bool = False
) -> optuna.storages.RDBStorage:
    """An ``RDBStorage`` for ``url`` (default ``sqlite:///resnas.db``), with heartbeats.

    ``must_exist``: for commands that only read, a missing SQLite file is an error rather
    than a new, empty database.
    """
    url = storage_url(url)
    engine_kwargs: dict = {}
    db = sqlite_path(url)
    if url.startswith("sqlite:") and db is None:
        raise StudyError(f"--storage: {url} is an in-memory database that ends with the process; name a file")
    if db is not None:
        if must_exist and not db.exists():
            raise StudyError(f"--storage: no database at {db} (run resnas search first, or name one with --storage)")
        if not db.parent.exists():
            raise StudyError(f"--storage: directory {db.parent} does not exist")
        # WAL lets readers and one writer work at once; a long busy timeout rides out the
        # short write locks of several workers (no "database is locked").
        try:
            with sqlite3.connect(db, timeout=60) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise StudyError(f"--storage: cannot open {db}: {exc}") from None
        engine_kwargs = {"connect_args": {"timeout": 300}}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"pool_pre_ping": True}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna")
    warnings.filterwarnings(
        "ignore",
        message=".*(heartbeat|RetryHeartbeatStaleTrialCallback|set_metric_names).*",
        category=optuna.exceptions.ExperimentalWarning,
    )
    try:
        if not heartbeat:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
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
            self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        elif self.url.startswith("postgresql"):
            if self._engine is None:
                self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
            self._conn = self._engine.connect()
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        else:
            self._thread_lock.acquire()

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif self._conn is not None:
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._conn.close()
            self._conn = None
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
