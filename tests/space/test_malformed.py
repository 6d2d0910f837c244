"""A corpus of malformed specs: each exits 2 with one line naming the YAML path and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import MALFORMED, expectations


def test_corpus_is_large_enough():
    assert len(MALFORMED) >= 70


@pytest.mark.parametrize("spec", MALFORMED, ids=lambda p: p.stem)
def test_malformed_spec_is_one_clear_line(spec, run_cli):
    want = expectations(spec)
    code, out, err = run_cli("validate", spec)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    message = lines[0]
    assert message.startswith("error: ")
    assert "Traceback" not in err and "Traceback" not in out
    if want["expect-path"] != "-":
        assert f": {want['expect-path']}: " in message, message
    assert f"{spec}:{want['expect-line']}:" in message, message
    if "expect-message" in want:
        assert want["expect-message"] in message, message
    # The message speaks the spec's language, not the implementation's.
    assert not re.search(r"instance of|[A-Z]\w+Spec\b|Settings\b|Input should", message), message


def test_python_tag_has_no_side_effect(run_cli, tmp_path):
    marker = Path("/tmp/resnas-pwned")
    marker.unlink(missing_ok=True)
    code, _, err = run_cli("validate", MALFORMED[0].parent / "python_object_tag.yaml")
    assert code == 2
    assert "python/object" in err
    assert not marker.exists()


def test_missing_file_is_one_line(run_cli, tmp_path):
    code, _, err = run_cli("validate", tmp_path / "nope.yaml")
    assert code == 2
    assert err.strip() == f"error: {tmp_path / 'nope.yaml'}: no such file"


def test_debug_variable_shows_traceback(tmp_path):
    import os
    import subprocess
    import sys

    bad = MALFORMED[0].parent / "depth_zero.yaml"
    env = dict(os.environ, RESNAS_DEBUG="1")
    proc = subprocess.run(
        [sys.executable, "-m", "resnas", "validate", str(bad)], capture_output=True, text=True, env=env
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    env["RESNAS_DEBUG"] = ""
    proc = subprocess.run(
        [sys.executable, "-m", "resnas", "validate", str(bad)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
