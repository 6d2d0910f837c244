from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Without --address a search starts a Ray of its own; without this, Ray would join the cluster that the
# latest `ray start` on this machine recorded in /tmp/ray (another user's, or another test run's).
os.environ.setdefault("RAY_ADDRESS", "local")


def pytest_configure(config):
    # One torch thread in the test process: on a shared 2-core machine torch's default (a thread per
    # core, spinning while it waits) made in-process forwards 10-25x slower under load. The commands
    # the tests start as subprocesses keep torch's default, as a user's would.
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    from resnas.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def spawn():
    """``subprocess.Popen`` in a session of its own. At teardown every process of that session still
    alive (the command, its ``--jobs`` workers, a local Ray and its workers) is killed by pid, so that a
    failed or hung test leaves nothing running on a shared machine, and touches no one else's processes."""
    from helpers import kill_session, process_start

    started: list[subprocess.Popen] = []

    def start(args: list, **kwargs) -> subprocess.Popen:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            before = int(float(f.read().split()[0]) * ticks) - ticks
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        since = process_start(proc.pid) or before
        proc.kill_all = lambda: kill_session(proc.pid, since)  # every process of its session, by pid
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill_all()
        proc.wait()


@pytest.fixture
def cli(tmp_path, spawn):
    """Run ``resnas`` as a user would, in a fresh directory; returns the CompletedProcess.

    Without ``timeout`` the wait follows what the command awaits, not a guess of the machine's
    speed: ``START_S + TRIAL_S`` for its first line of output (start-up and one tiny trial), then
    ``TRIAL_S`` for each further line (a search prints one per finished trial). A command that stops
    making progress fails then, naming what it waited for, however many trials it was asked for.
    ``timeout`` sets a total instead (for output that comes in bursts, as Ray's does).
    """
    from helpers import START_S, TRIAL_S, resnas_cmd

    def run(*args: object, timeout: float | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        words = [str(a) for a in args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = spawn(
            resnas_cmd(*words), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env
        )
        out: list[str] = []
        err: list[str] = []
        last = [time.monotonic()]

        def read(stream, into: list[str], progress: bool) -> None:
            for line in stream:
                into.append(line)
                if progress:
                    last[0] = time.monotonic()

        readers = [
            threading.Thread(target=read, args=(proc.stdout, out, True), daemon=True),
            threading.Thread(target=read, args=(proc.stderr, err, False), daemon=True),
        ]
        for r in readers:
            r.start()
        began = time.monotonic()
        while proc.poll() is None:
            now = time.monotonic()
            if timeout is not None:
                late, what = now - began > timeout, f"to finish within {timeout:g} s"
            elif out:
                late, what = now - last[0] > TRIAL_S, f"its next line (a finished trial) for {TRIAL_S} s"
            else:
                late, what = now - began > START_S + TRIAL_S, f"its first line for {START_S + TRIAL_S} s"
            if late:
                proc.kill_all()
                proc.wait()
                for r in readers:
                    r.join(5)
                raise AssertionError(
                    f"`resnas {' '.join(words)}` hung: waited {what}; its output so far:\n"
                    f"{''.join(out)[-2000:]}\n{''.join(err)[-2000:]}"
                )
            time.sleep(0.1)
        for r in readers:
            r.join(60)
            if r.is_alive():  # something the command started still holds its output open
                proc.kill_all()
                r.join()
        return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out), "".join(err))

    return run
