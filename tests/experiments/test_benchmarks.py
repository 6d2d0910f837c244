"""experiments/benchmarks/run.py runs end to end and prints a row for every figure."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT

SCRIPT = ROOT / "experiments" / "benchmarks" / "run.py"
README = ROOT / "experiments" / "benchmarks" / "README.md"
FIGURES = [
    "resnet20 train step time, built / hand-written",
    "resnet20 eval forward time, built / hand-written",
    "resnet20 eval peak memory growth, built / hand-written",
    "resnet20 outputs, built vs hand-written",
    "resnet18 train step time, built / hand-written",
    "resnet18 eval forward time, built / hand-written",
    "resnet18 eval peak memory growth, built / hand-written",
    "resnet18 outputs, built vs hand-written",
    "search overhead per trial, steady state (trials 2..N), resnas - plain Optuna, diagnostics on (default)",
    "search overhead over a whole search, one-time costs included, resnas / plain Optuna, diagnostics on (default)",
    "search overhead per trial, steady state (trials 2..N), resnas - plain Optuna, search.diagnostics: false",
    "search overhead over a whole search, one-time costs included, resnas / plain Optuna, search.diagnostics: false",
    "index-slice batching throughput / DataLoader loop",
    "resumed search, first new trial later than on the empty study (medium)",
    "resumed search, first new trial later than on the empty study (large)",
    "leaderboard on the large study",
    "--jobs 2 speed-up, wall(--jobs 1) / wall(--jobs 2)",
]
LOAD = re.compile(r"^\d+\.\d\d \d+\.\d\d \d+\.\d\d$")


def rows_of(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] != "figure":
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_quick_run_prints_every_row_with_load_and_verdict():
    before = README.read_text()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=1200, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = rows_of(proc.stdout)
    assert list(rows) == FIGURES
    for figure, (_setting, value, target, verdict, load) in rows.items():
        assert value and target, figure
        assert verdict in ("pass", "FAIL", "-"), figure
        assert (verdict == "-") == (target == "-" or target == "keep ~1x"), figure
        assert LOAD.match(load), figure
    assert rows["resnet20 outputs, built vs hand-written"][1] == "bit-identical"
    assert README.read_text() == before  # --quick never writes the table


def test_committed_table_has_every_row_from_a_full_run():
    text = README.read_text()
    assert "--quick" not in text.split("<!-- benchmarks:begin -->")[1]
    assert list(rows_of(text)) == FIGURES


def test_storage_calls_script_prints_each_call_against_optunas():
    script = ROOT / "experiments" / "benchmarks" / "storage_calls.py"
    out = subprocess.run([sys.executable, str(script), "--calls", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    for call in ("get_trial (a running trial)", "get_all_trials (the waiting queue)", "trial_counts (one query)"):
        assert call in rows
    ratio = rows["get_trial (a running trial)"].split("|")[4].strip()
    assert re.fullmatch(r"\d+\.\d\dx", ratio), ratio
