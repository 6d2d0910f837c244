"""``resnas validate --allow-code`` calls a ``module:function`` dataset once and checks what it returns,
so a broken data function fails validation in one line, not every trial of a search."""

from __future__ import annotations

import sys

import pytest

GOOD = """
import numpy as np


def load():
    rng = np.random.default_rng(0)
    return rng.normal(size=(120, 2, 10)), rng.integers(0, 3, 120)
"""
SPEC = """name: own
data: {{dataset: '{module}:load', shape: [2, 10], classes: 3}}
network: {{kind: conv1d, stages: [{{depth: 1, channels: 8}}]}}
"""
BROKEN = {
    "raises": ("raise OSError('no such file: train.csv')", "raised OSError: no such file: train.csv"),
    "shape": ("return np.zeros((120, 20)), np.zeros(120, int)", "inputs of shape [20] per sample; the spec says"),
    "labels": ("return np.zeros((120, 2, 10)), np.arange(120) % 4", "labels 0 .. 3; classes: 3 needs labels 0 .. 2"),
    "strings": ("return np.full((120, 2, 10), 'a'), np.zeros(120, int)", "inputs of dtype <U1; they must be numbers"),
    "nan": ("return np.full((120, 2, 10), np.nan), np.zeros(120, int)", "not finite"),
    "lengths": ("return np.zeros((120, 2, 10)), np.zeros(100, int)", "one label per row"),
    "pair": ("return np.zeros((120, 2, 10))", "must return a pair (x, y), got ndarray"),
    "float_labels": ("return np.zeros((120, 2, 10)), np.full(120, 0.5)", "labels of dtype float64"),
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # "0" is not an opt-in; the CLI's --allow-code sets it, and the fixture restores it after.
    monkeypatch.setenv("RESNAS_ALLOW_CODE", "0")
    return tmp_path


def _write(workdir, module: str, body: str | None = None) -> str:
    text = GOOD if body is None else f"import numpy as np\n\n\ndef load():\n    {body}\n"
    (workdir / f"{module}.py").write_text(text + "\nimport pathlib\npathlib.Path('imported').touch()\n")
    (workdir / "spec.yaml").write_text(SPEC.format(module=module))
    return "spec.yaml"


def test_without_opt_in_validate_says_it_did_not_check(run_cli, workdir):
    spec = _write(workdir, "own_data_unchecked")
    code, out, _ = run_cli("validate", spec)
    assert code == 0
    assert "own_data_unchecked:load not imported, so not checked" in out and "--allow-code" in out
    assert not (workdir / "imported").exists() and "own_data_unchecked" not in sys.modules


def test_opt_in_calls_the_function_and_reports_what_it_returned(run_cli, workdir):
    spec = _write(workdir, "own_data_good")
    code, out, err = run_cli("validate", spec, "--allow-code")
    assert code == 0, err
    assert "data checked: own_data_good:load returned 120 samples of shape [2, 10] (float64)" in out
    assert "labels 0 .. 2 (3 of 3 classes)" in out


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_data_function_fails_validation_in_one_line(run_cli, workdir, case):
    body, message = BROKEN[case]
    spec = _write(workdir, f"own_data_{case}", body)
    code, out, err = run_cli("validate", spec, "--allow-code")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out, err
    assert err.startswith(f"error: spec.yaml:2: data.dataset: own_data_{case}:load"), err
    assert message in err, err


def test_a_missing_module_names_where_it_was_looked_for(run_cli, workdir):
    (workdir / "spec.yaml").write_text(SPEC.format(module="no_such_own_data"))
    code, _, err = run_cli("validate", "spec.yaml", "--allow-code")
    assert code == 2
    assert "cannot import 'no_such_own_data:load': No module named 'no_such_own_data'" in err
    assert f"looked in the working directory {workdir}" in err
