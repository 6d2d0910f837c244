"""The GPU script (experiments/gpu/run.sh) must be ready whenever a GPU is: its dry run checks every step on the CPU."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import ROOT


@pytest.mark.slow
def test_gpu_script_dry_run_measures_every_figure(tmp_path):
    out = tmp_path / "figures.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "experiments" / "gpu" / "run.sh"), "--dry-run", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())
    assert figures["trainer"]["resnas_s"] > 0 and figures["trainer"]["naive_s"] > 0
    assert set(figures["precision"]) == {"adaptive-1", "digits_cnn-1"}
    assert [r["jobs"] for r in figures["packing"]] == [1, 2]
    assert all(r["devices"] == ["cpu"] and r["peak_mb_max"] > 0 for r in figures["packing"])
    assert "all trials ran on cpu" in proc.stdout


def test_gpu_script_without_cuda_says_to_dry_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the script would run its real measurements")
    proc = subprocess.run(
        ["bash", str(ROOT / "experiments" / "gpu" / "run.sh")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    assert "no CUDA device here; run with --dry-run" in proc.stderr
