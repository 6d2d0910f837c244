"""Checking a database file must not drop the SQLite locks this process holds on it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from resnas.search._storage import _check_sqlite_file


def test_checking_an_open_database_keeps_its_wal_for_other_processes(tmp_path):
    # A process with the database open (WAL mode, as resnas opens it) checks the file again,
    # as open_storage does. Another process then opens and closes it: if the check had dropped
    # this process's locks (closing any descriptor of a file drops all of a process's POSIX
    # locks on it), the other one would think itself the last, checkpoint and delete -wal/-shm.
    db = tmp_path / "study.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    _check_sqlite_file(db, must_exist=True, write=True)
    _check_sqlite_file(db, must_exist=True, write=False)  # twice: the second read reuses the descriptor
    other = f"import sqlite3; c = sqlite3.connect({str(db)!r}); c.execute('SELECT x FROM t').fetchall(); c.close()"
    subprocess.run([sys.executable, "-c", other], check=True, timeout=60)
    assert (tmp_path / "study.db-wal").exists() and (tmp_path / "study.db-shm").exists()
    conn.close()
