"""How the ``resnas`` command leaves: the exit code main returned, the exit handlers run (Ray's
shutdown, trackers, temporary files live there), the output flushed; only Python's teardown of
the imported modules is skipped."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys
from resnas.cli import run

def handler():
    print("exit handler ran", flush=True)

atexit.register(handler)
sys.argv = ["resnas", *sys.argv[1:]]
print("partial line without newline", end="")
run()
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_a_successful_command_runs_the_exit_handlers_and_exits_0(tmp_path):
    proc = _run("schema")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("partial line without newline")
    assert proc.stdout.rstrip().endswith("exit handler ran")


def test_an_error_keeps_its_exit_code_and_runs_the_exit_handlers(tmp_path):
    proc = _run("leaderboard", "--study", "nope", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "exit handler ran" in proc.stdout


def test_a_finished_search_leaves_the_whole_study_in_the_database_file(tmp_path):
    # The write-ahead log is folded back when the storages close: resnas.db alone, copied
    # elsewhere, holds the study.
    import optuna
    from helpers import TINY

    proc = subprocess.run(
        [sys.executable, "-m", "resnas", "search", str(TINY), "--trials", "2", "--jobs", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "resnas.db-wal").exists() or (tmp_path / "resnas.db-wal").stat().st_size == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "resnas.db").write_bytes((tmp_path / "resnas.db").read_bytes())
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{copy / 'resnas.db'}")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 2
