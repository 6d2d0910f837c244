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
# What tests that run searches in subprocesses wait for, with margins for a shared, loaded CI
# machine: a new process importing torch and opening its study, and one trial of TINY.
START_S = 180
TRIAL_S = 120
# A process told to stop (a signal, its parent gone) abandons its trial after RESNAS_ABANDON_SECONDS
# (2 s), records it and exits: a few seconds, with the same margin.
STOP_S = 60


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


def sleepy_digits():
    """Digits after sleeping ``RESNAS_TEST_DATA_SLEEP`` seconds: a slow or hanging user loader."""
    import os
    import time

    import numpy as np
    from sklearn.datasets import load_digits

    time.sleep(float(os.environ.get("RESNAS_TEST_DATA_SLEEP", "0")))
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).reshape(-1, 1, 8, 8).astype(np.float32), y


def sleepy_spec(directory: Path, **replace: str) -> Path:
    """TINY reading its data through ``sleepy_digits`` (run with ``sleepy_env``)."""
    text = TINY.read_text().replace(
        "{dataset: digits, limit: 500}", "{dataset: 'helpers:sleepy_digits', shape: [1, 8, 8], classes: 10, limit: 500}"
    )
    for old, new in replace.items():
        text = text.replace(old, new)
    path = directory / "tiny.yaml"
    path.write_text(text)
    return path


def sleepy_env(sleep: float = 0, **extra: str) -> dict:
    import os

    path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "PYTHONUNBUFFERED": "1",
        "RESNAS_TEST_DATA_SLEEP": str(sleep),
        "RESNAS_ALLOW_CODE": "1",
        "RESNAS_DATA_CHECK_SECONDS": "0",  # search's one call of the data function before the study: not awaited
        **extra,
    }


def wait_until(what: str, check, timeout: float, every: float = 0.3):
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # the database may be mid-creation
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"waited {timeout:g} s for {what}")


PG_URL = os.environ.get("RESNAS_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def flaky_digits():
    """Digits from a loader whose second and third calls fail (``dataset: 'helpers:flaky_digits'``): the
    first is the search's check of a code dataset before the study exists, the next two are a trial's
    first attempt and its retry. The calls are counted in the file named by ``RESNAS_TEST_FLAKY``, so
    that they count across processes."""
    import os

    from sklearn.datasets import load_digits

    counter = Path(os.environ["RESNAS_TEST_FLAKY"])
    calls = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(calls + 1))
    if calls in (1, 2):
        raise RuntimeError(f"the flaky loader failed (call {calls + 1})")
    digits = load_digits()
    return digits.images[:, None].astype("float32") / 16, digits.target


def assert_obeys_spec(space, arch, available: int | None = None) -> None:
    """``arch`` obeys its spec's ``residual`` section, checked from the spec's words: every
    connection's placement, span, scope, kind and merge; the count (``all``: ``available``,
    the placements there are, when given)."""
    from resnas.space._values import discrete_values

    res = space.spec.residual
    spans = set(discrete_values(res.span))
    pairs = [(c.src, c.dst) for c in arch.connections]
    assert len(set(pairs)) == len(pairs), "a placement is used twice"
    n = len(arch.connections)
    if res.count != "all":
        counts = discrete_values(res.count)
        assert min(counts) <= n <= max(counts)
    elif available is not None:
        assert n == available
    for c in arch.connections:
        assert 0 <= c.src < c.dst <= arch.num_blocks
        assert c.span in spans
        if res.scope == "stage":
            assert arch.blocks[c.src].stage == arch.blocks[c.dst - 1].stage
        same = arch.channels_at(c.src) == arch.channels_at(c.dst) and arch.stride_between(c.src, c.dst) == 1
        if c.merge == "concat":  # carries h unchanged, so needs one spatial size (not one width)
            assert c.kind == "identity" and arch.stride_between(c.src, c.dst) == 1
            assert "concat" in discrete_values(res.merge)
        elif c.kind == "identity":
            assert same, "identity where shapes differ"
            assert "identity" in res.kinds or "pad" in res.kinds
        elif c.kind == "pad":
            assert not same and arch.channels_at(c.dst) >= arch.channels_at(c.src)
            assert "pad" in res.kinds or ("identity" in res.kinds and res.on_shape_change == "pad")
        elif c.kind == "projection":
            assert "projection" in res.kinds or (
                not same and "identity" in res.kinds and res.on_shape_change == "projection"
            )
        else:
            assert c.kind == "gated" and "gated" in res.kinds
            assert c.shortcut == "identity" if same else c.shortcut in ("projection", "pad")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, session id, start time in clock ticks) of process ``pid``, from /proc; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[3]), int(fields[19])


def process_start(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else stat[2]


def session_pids(sid: int, since: int) -> list[int]:
    """Live processes of session ``sid`` started at or after clock tick ``since``: everything a child
    started with ``start_new_session=True`` left, including Ray workers in process groups of their own."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat and stat[0] not in ("Z", "X") and stat[1] == sid and stat[2] >= since:
                pids.append(int(entry.name))
    return pids


def kill_session(sid: int, since: int, within: float = 30) -> None:
    """SIGKILL, by pid, every process of session ``sid`` (see ``session_pids``) until none is left."""
    import signal
    import time

    deadline = time.monotonic() + within
    while pids := session_pids(sid, since):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {pids} of session {sid} outlived SIGKILL for {within:g} s")
        time.sleep(0.1)
