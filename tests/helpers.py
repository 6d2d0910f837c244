"""Shared paths and small helpers for the tests (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
MALFORMED = sorted((ROOT / "tests" / "space" / "malformed").glob("*.yaml"))


def expectations(path: Path) -> dict[str, str]:
    """The ``# key: value`` header of a malformed spec."""
    return dict(re.findall(r"^# ([\w-]+): (.*)$", path.read_text(), re.M))


TINY = ROOT / "tests" / "data" / "tiny.yaml"


def resnas_cmd(*args: object) -> list[str]:
    import sys

    return [sys.executable, "-m", "resnas", *map(str, args)]


def load(tmp_path: Path, name: str = "tiny"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'resnas.db'}")


def complete(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def raising_data():
    """A user dataset function that fails (``dataset: 'helpers:raising_data'``)."""
    raise RuntimeError("the user's loader broke")


PG_URL = os.environ.get("RESNAS_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def flaky_digits():
    """Digits from a loader whose first two calls fail (``dataset: 'helpers:flaky_digits'``); the calls
    are counted in the file named by ``RESNAS_TEST_FLAKY``, so that they count across processes."""
    import os

    from sklearn.datasets import load_digits

    counter = Path(os.environ["RESNAS_TEST_FLAKY"])
    calls = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(calls + 1))
    if calls < 2:
        raise RuntimeError(f"the flaky loader failed (call {calls + 1})")
    digits = load_digits()
    return digits.images[:, None].astype("float32") / 16, digits.target
