"""A newcomer's first run, from the README alone: the "your own dataset" section's module, spec and
commands, run as written in an empty directory with the console script and no PYTHONPATH."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, START_S, TRIAL_S

SECTION = "## Your own dataset in 10 lines"


def quickstart() -> tuple[dict[str, str], list[list[str]], str, str]:
    """The section's files (named by their first line), commands, and the error example with its command."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    files = {}
    for lang, body in blocks:
        if lang in ("python", "yaml"):
            name = body.splitlines()[0].removeprefix("# ").strip()
            files[name] = body
    (commands,) = [body for lang, body in blocks if lang == "bash"]
    (example,) = [body for lang, body in blocks if lang == "" and body.startswith("$ resnas")]
    command, error = example.strip().splitlines()
    runs = [shlex.split(line, comments=True) for line in commands.strip().splitlines()]
    return files, runs, command, error


def _run(words: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    assert words[0] == "resnas"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RESNAS_ALLOW_CODE")}
    env["OMP_NUM_THREADS"] = "1"
    resnas = Path(sys.executable).with_name("resnas")  # the console script: no cwd on sys.path of its own
    return subprocess.run([resnas, *words[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_quickstart_section_is_found():
    files, runs, command, error = quickstart()
    assert set(files) == {"mydata.py", "wine.yaml"}
    assert [r[:2] for r in runs] == [["resnas", "validate"], ["resnas", "search"], ["resnas", "export"]]
    assert "def load():" in files["mydata.py"] and "mydata:load" in files["wine.yaml"]
    assert command.startswith("$ resnas validate") and error.startswith("error: wine.yaml:")


@pytest.mark.slow
def test_newcomer_runs_the_readme_quickstart(tmp_path):
    files, runs, _, _ = quickstart()
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    validate, search, export = runs
    proc = _run(validate, tmp_path, START_S + TRIAL_S)  # validate calls the data function
    assert proc.returncode == 0, proc.stderr
    assert "data checked: mydata:load returned 178 samples of shape [13]" in proc.stdout
    assert "(3 of 3 classes)" in proc.stdout
    proc = _run([*search, "--trials", "3"], tmp_path, START_S + 3 * TRIAL_S)
    assert proc.returncode == 0, proc.stderr
    assert "best: trial" in proc.stdout
    proc = _run(export, tmp_path, START_S + TRIAL_S)  # --weights trains the best candidate again
    assert proc.returncode == 0, proc.stderr
    out = export[export.index("-o") + 1]
    weights = export[export.index("--weights") + 1]
    assert (tmp_path / out).read_text().startswith('"""') and (tmp_path / weights).stat().st_size > 0
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", proc.stdout).group(1))
    assert accuracy > 0.5  # 3 classes: a trained network, not chance


def test_a_broken_data_function_is_refused_by_validate_in_one_line(tmp_path, monkeypatch, run_cli):
    files, runs, command, error = quickstart()
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    validate = runs[0]
    assert shlex.split(command.removeprefix("$ "), comments=True) == validate
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESNAS_ALLOW_CODE", "0")  # --allow-code sets it; restored after the test

    def refused() -> str:
        monkeypatch.delitem(sys.modules, "mydata", raising=False)  # as a fresh process imports it
        code, out, err = run_cli(*validate[1:])
        assert code == 2 and "Traceback" not in out + err
        return err.strip()

    # The README's example: the spec says 2 classes, the function returns 3.
    (tmp_path / "wine.yaml").write_text(files["wine.yaml"].replace("classes: 3", "classes: 2"))
    assert refused() == error
    # A function that fails: one line naming it and its exception, before any study exists.
    (tmp_path / "wine.yaml").write_text(files["wine.yaml"])
    (tmp_path / "mydata.py").write_text(files["mydata.py"].replace("x, y = load_wine(", "x, y = load_wines("))
    assert (
        refused() == "error: wine.yaml:3: data.dataset: mydata:load raised NameError: name 'load_wines' is not defined"
    )
    assert not (tmp_path / "resnas.db").exists()
    # search refuses it the same way before anything is stored: no study, no failed trials.
    monkeypatch.delitem(sys.modules, "mydata", raising=False)
    code, out, err = run_cli("search", "wine.yaml", "--allow-code", "--trials", "1")
    assert code == 2 and "Traceback" not in out + err
    assert err.strip().endswith("mydata:load raised NameError: name 'load_wines' is not defined")
    assert not (tmp_path / "resnas.db").exists()
