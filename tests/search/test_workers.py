"""Where ``--jobs`` workers come from: forked from a server that imported torch and resnas once
(a worker's first trial starts at once), seeing the environment the search has when it starts
them, and leaving when the search process dies."""

from __future__ import annotations

import os
import sys

import optuna
import pytest
from helpers import complete, sleepy_spec

from resnas._workers import WORKER_PRELOAD, start_worker_server, worker_context
from resnas.search import search
from resnas.space import load_space

PROBE = """
import sys


def imported(queue, names):
    queue.put([n for n in names if n in sys.modules])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no forkserver: workers are spawned there")
def test_a_worker_starts_with_torch_resnas_and_dynamo_already_imported(tmp_path, monkeypatch):
    # The probe module imports nothing: whatever the worker holds was imported before it was made.
    (tmp_path / "probe_workers.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import probe_workers

    ctx = worker_context()
    assert ctx.get_start_method() == "forkserver"
    queue = ctx.Queue()
    proc = ctx.Process(target=probe_workers.imported, args=(queue, list(WORKER_PRELOAD)))
    proc.start()
    got = queue.get(timeout=120)
    proc.join(60)
    assert proc.exitcode == 0
    assert got == list(WORKER_PRELOAD)


@pytest.mark.slow
def test_workers_see_the_environment_the_search_has_not_the_servers(tmp_path, monkeypatch):
    # The worker server starts before the search allows code datasets; its workers must still
    # see the permission (and the data path) the search process has when it starts them.
    start_worker_server()
    for name, value in {
        "RESNAS_ALLOW_CODE": "1",
        "RESNAS_TEST_DATA_SLEEP": "0",
        "RESNAS_DATA_CHECK_SECONDS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    space = load_space(str(sleepy_spec(tmp_path)))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = search(space, storage=f"sqlite:///{tmp_path / 'w.db'}", trials=2, jobs=2)
    assert len(complete(study)) == 2
    assert all(t.user_attrs["owner"]["pid"] != os.getpid() for t in complete(study))  # workers ran them


def test_the_worker_server_is_ended_by_the_command_not_left_to_its_own_exit():
    """The server outlives its process by its own exit (torch's teardown, about a second), with
    the command's output held open: ``stop_worker_server``, which ``resnas`` calls as it leaves,
    ends it with SIGTERM."""
    import subprocess

    script = """
import os, signal
from multiprocessing import forkserver
from resnas._workers import start_worker_server, stop_worker_server
start_worker_server()
pid = forkserver._forkserver._forkserver_pid
stop_worker_server()
_, status = os.waitpid(pid, 0)
print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"]
