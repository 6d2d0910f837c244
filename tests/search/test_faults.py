"""Faults under a running search: a hanging data function, signals, and a storage that is
deleted, read-only, full, corrupt or unreachable. Each ends with a line naming the cause,
exit code 2 (130 for a signal), and no finished trial lost.

Waits derive from what is awaited: START_S for a process to import torch and open the
study (generous: CI machines are shared), TRIAL_S for one tiny trial, plus the timeouts the
test itself sets.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
import uuid

import optuna
import pytest
from helpers import (
    START_S,
    STOP_S,
    TINY,
    TRIAL_S,
    complete,
    load,
    postgres_up,
    resnas_cmd,
    sleepy_env,
    sleepy_spec,
    wait_until,
)

TrialState = optuna.trial.TrialState
PG_URL = os.environ.get("RESNAS_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture
def popen(spawn):
    """Start a command with its output captured, in a session that is killed by pid at the end."""

    def start(args: list, cwd, env: dict | None = None) -> subprocess.Popen:
        env = env or {**os.environ, "PYTHONUNBUFFERED": "1"}
        return spawn(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    return start


def finish(proc: subprocess.Popen, within: float, what: str = "the search to end") -> tuple[str, str]:
    try:
        return proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill_all()
        out, err = proc.communicate()
        raise AssertionError(f"waited {within:g} s for {what}\n{out[-2000:]}\n{err[-2000:]}") from None


def trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial | None:
    trials = study.get_trials(deepcopy=False)
    return trials[number] if number < len(trials) else None


def test_timeout_and_sigterm_reach_a_sleeping_data_function(popen, tmp_path):
    spec = sleepy_spec(tmp_path)
    proc = popen(resnas_cmd("search", spec, "--trials", "2", "--trial-timeout", "5"), tmp_path, sleepy_env(600))
    try:

        def first_ended():
            t = trial(load(tmp_path), 0)
            return t if t is not None and t.state.is_finished() else None

        first = wait_until("trial 0 (data sleeping 600 s, --trial-timeout 5) to end", first_ended, START_S + 10)
        assert first.user_attrs["fail_reason"] == "timeout", first.user_attrs
        assert (first.datetime_complete - first.datetime_start).total_seconds() < 10
        wait_until("trial 1 to start", lambda: trial(load(tmp_path), 1), TRIAL_S)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc, STOP_S, "one SIGTERM to end the search")
        took = time.monotonic() - sent
    finally:
        proc.kill_all()
    assert proc.returncode == 130, err
    assert took < 10, f"one SIGTERM took {took:.1f} s to end the search"
    assert "Traceback" not in err
    study = load(tmp_path)
    stopped = study.trials[1]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["fail_reason"] == "interrupted"
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in waiting] == [1]


def test_deleted_database_stops_the_search_at_once(popen, tmp_path):
    proc = popen(resnas_cmd("search", TINY, "--trials", "40"), tmp_path)
    try:
        wait_until("two finished trials", lambda: len(complete(load(tmp_path))) >= 2, START_S + 2 * TRIAL_S)
        (tmp_path / "resnas.db").unlink()
        _, err = finish(proc, 2 * TRIAL_S, "the search to stop after its database was deleted")
    finally:
        proc.kill_all()
    assert proc.returncode == 2, err
    assert f"the database {'resnas.db'} was deleted during the search" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "resnas.db").exists(), "an empty database was left at the path"


def test_corrupt_or_empty_file_is_refused_and_left_untouched(cli, tmp_path):
    db = tmp_path / "resnas.db"
    for content, cause in (
        (b"these are the minutes of the last meeting\n" * 100, "not a database: resnas.db is not an SQLite file"),
        (b"", "not a database: resnas.db is an empty file (0 bytes)"),
    ):
        db.write_bytes(content)
        proc = cli("search", TINY, "--trials", "1", timeout=START_S)
        assert proc.returncode == 2, proc.stderr
        assert cause in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert db.read_bytes() == content
    # A real database whose pages were overwritten: named corrupt, not "unexpected".
    db.unlink()
    assert cli("search", TINY, "--trials", "1", timeout=START_S + TRIAL_S).returncode == 0
    (tmp_path / "resnas.db-wal").unlink(missing_ok=True)
    data = bytearray(db.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)
    db.write_bytes(bytes(data))
    proc = cli("search", TINY, "--trials", "2", timeout=START_S)
    assert proc.returncode == 2, proc.stderr
    assert "not a database" in proc.stderr and "resnas.db" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (root only); skipped with a message where the test cannot mount one."""
    mounted = []

    def mount(name: str, size: str):
        where = tmp_path / name
        where.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip() or proc.returncode}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_read_only_database_is_named_and_kept(cli, tmp_path, tmpfs):
    disk = tmpfs("ro", "16m")
    url = f"sqlite:///{disk / 'r.db'}"
    assert cli("search", TINY, "--storage", url, "--trials", "2", timeout=START_S + 2 * TRIAL_S).returncode == 0
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode == 0
    proc = cli("search", TINY, "--storage", url, "--trials", "3", timeout=START_S)
    assert proc.returncode == 2, proc.stderr
    assert f"read-only: cannot write to {disk / 'r.db'}" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert len(complete(optuna.load_study(study_name="tiny", storage=url))) == 2


def test_full_disk_is_named_and_no_finished_trial_is_lost(popen, tmp_path, tmpfs):
    disk = tmpfs("full", "32m")  # several times the 4 MB SQLite's write-ahead log reaches
    url = f"sqlite:///{disk / 'r.db'}"
    proc = popen(resnas_cmd("search", TINY, "--storage", url, "--trials", "40"), tmp_path)
    try:
        study = wait_until("the study", lambda: optuna.load_study(study_name="tiny", storage=url), START_S)
        wait_until("two finished trials", lambda: len(complete(study)) >= 2, START_S + 2 * TRIAL_S)
        seen = {t.number for t in complete(study)}
        try:  # fill the disk to the last byte (on a slow machine the search may have filled it already)
            with open(disk / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        except OSError:
            pass
        _, err = finish(proc, 2 * TRIAL_S, "the search to stop on the full disk")
    finally:
        proc.kill_all()
    assert proc.returncode == 2, err
    assert f"disk full: cannot write to {disk / 'r.db'}" in err, err
    assert "Traceback" not in err
    (disk / "filler").unlink(missing_ok=True)
    kept = {t.number for t in complete(optuna.load_study(study_name="tiny", storage=url))}
    assert seen <= kept


needs_postgres = pytest.mark.skipif(not postgres_up(), reason="no PostgreSQL server on 127.0.0.1:5432")


class Proxy:
    """A loopback TCP proxy to PostgreSQL that the test can cut: ``stop()`` closes every connection."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while self.running:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def stop(self) -> None:
        self.running = False
        self.server.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.mark.slow
@needs_postgres
def test_lost_postgres_connection_is_retried_then_named(cli, popen, tmp_path):
    name = f"tiny_{uuid.uuid4().hex[:8]}"
    proxy = Proxy()
    url = PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RESNAS_STORAGE_RETRY_SECONDS": "4"}
    proc = popen(resnas_cmd("search", TINY, "--storage", url, "--study", name, "--trials", "40"), tmp_path, env)
    try:
        wait_until("the study", lambda: optuna.load_study(study_name=name, storage=PG_URL), START_S)
        study = optuna.load_study(study_name=name, storage=PG_URL)
        wait_until("two finished trials", lambda: len(complete(study)) >= 2, START_S + 2 * TRIAL_S)
        seen = {t.number for t in complete(study)}
        proxy.stop()
        _, err = finish(proc, 4 + TRIAL_S, "the search to give up after retrying for 4 s")
        assert proc.returncode == 2, err
        assert f"connection lost to postgresql at 127.0.0.1:{proxy.port}/test" in err, err
        assert "retrying for up to 4 s" in err
        assert "Traceback" not in err
        kept = {t.number for t in complete(optuna.load_study(study_name=name, storage=PG_URL))}
        assert seen <= kept
        # The next run fails what the lost run left RUNNING and finishes the count.
        done = cli("search", TINY, "--storage", PG_URL, "--study", name, "--trials", len(kept) + 1)
        assert done.returncode == 0, done.stderr
        study = optuna.load_study(study_name=name, storage=PG_URL)
        assert len(complete(study)) == len(kept) + 1
        assert not study.get_trials(states=(TrialState.RUNNING,))
        assert all(t.user_attrs.get("fail_reason") for t in study.get_trials(states=(TrialState.FAIL,)))
    finally:
        proc.kill_all()
        optuna.delete_study(study_name=name, storage=PG_URL)


@pytest.mark.slow
@needs_postgres
def test_three_processes_on_a_new_postgres_database_train_distinct_candidates(popen, tmp_path):
    import sqlalchemy

    database = f"resnas_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(PG_URL.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))  # no tables yet: all three create them
    url = PG_URL.rsplit("/", 1)[0] + f"/{database}"
    try:
        args = resnas_cmd("search", TINY, "--storage", url, "--trials", "9")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        procs = [popen(args, tmp_path, env) for _ in range(3)]
        outputs = [finish(p, START_S + 9 * TRIAL_S, "three processes to share 9 trials") for p in procs]
        for p, (_, err) in zip(procs, outputs):
            assert p.returncode == 0, err
        study = optuna.load_study(study_name="tiny", storage=url)
        done = complete(study)
        assert len(done) == 9
        trained = [t.user_attrs["candidate_key"] for t in done if "repeat_of" not in t.user_attrs]
        assert len(trained) == len(set(trained)) == 9, "a candidate was trained twice"
        assert len({t.user_attrs["pid"] for t in done}) >= 2
    finally:
        sqlalchemy.create_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        admin.dispose()
