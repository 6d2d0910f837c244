from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


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
def cli(tmp_path):
    """Run ``resnas`` as a user would, in a fresh directory; returns the CompletedProcess."""
    import subprocess

    from helpers import resnas_cmd

    def run(*args: object, timeout: float | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """``timeout`` defaults to what the command awaits: a start-up, plus one tiny trial per ``--trials``."""
        from helpers import START_S, TRIAL_S

        if timeout is None:
            words = [str(a) for a in args]
            trials = int(words[words.index("--trials") + 1]) if "--trials" in words else 1
            timeout = START_S + trials * TRIAL_S
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        return subprocess.run(
            resnas_cmd(*args), cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=full_env
        )

    return run
