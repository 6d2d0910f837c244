"""A spec that names code (``dataset: module:function``) runs it only with an explicit opt-in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = """
import pathlib

import numpy as np

pathlib.Path(__file__).with_name("imported.marker").write_text("imported")


def load():
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 16)).astype("float32"), rng.integers(0, 2, 200)
"""
SPEC = """name: code
data: {dataset: 'resnas_marker_data:load', shape: [16], classes: 2}
network: {kind: mlp, block: {type: mlp}, stem: {channels: 8}, stages: [{depth: 1, channels: 8}]}
train: {epochs: 1, batch_size: 32}
search: {trials: 1, sampler: random}
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "resnas_marker_data.py").write_text(MODULE)
    (tmp_path / "spec.yaml").write_text(SPEC)
    monkeypatch.delenv("RESNAS_ALLOW_CODE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(code: int, err: str, workdir: Path) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "--allow-code or RESNAS_ALLOW_CODE=1" in err
    assert not (workdir / "imported.marker").exists(), "the module was imported"
    assert "resnas_marker_data" not in sys.modules


def test_code_dataset_is_refused_before_import(run_cli, workdir):
    code, _, err = run_cli("search", "spec.yaml", "--storage", f"sqlite:///{workdir / 'r.db'}")
    _refused(code, err, workdir)
    assert "data.dataset: 'resnas_marker_data:load'" in err


def test_opt_in_imports_from_the_working_directory_and_a_stored_spec_is_refused_without_it(run_cli, workdir):
    # The console script, as a user runs it: no PYTHONPATH, and (unlike python -m) no cwd on sys.path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RESNAS_ALLOW_CODE")}
    resnas = Path(sys.executable).with_name("resnas")
    proc = subprocess.run(
        [resnas, "search", "spec.yaml", "--allow-code"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "imported.marker").exists()
    (workdir / "imported.marker").unlink()
    # The spec now lives in the database: resuming it, or retraining for export, needs the opt-in again.
    for args in (("search", "--study", "code", "--trials", "2"), ("export", "-o", "x.py", "--weights", "x.st")):
        code, _, err = run_cli(*args)
        _refused(code, err, workdir)
    assert not (workdir / "x.st").exists()
