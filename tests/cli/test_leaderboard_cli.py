"""``resnas leaderboard``: fits 100 columns, numbers with units, CSV and JSON for machines."""

from __future__ import annotations

import io
import json

import optuna
import pandas as pd
import pytest

from resnas.cli._leaderboard import si

PLACEMENTS = ", ".join(f"{i}→{i + 2} gated" for i in range(12))


@pytest.fixture
def storage(tmp_path):
    """A two-objective study of 12 trials as resnas records them (no training needed)."""
    url = f"sqlite:///{tmp_path / 'board.db'}"
    study = optuna.create_study(study_name="board", storage=url, directions=["maximize", "minimize"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["val_accuracy", "train_flops"])
    for i in range(12):
        flops = 1.2e9 + i * 1e7
        metrics = {"val_accuracy": 0.9 - i / 100, "train_flops": flops, "params": 29_600 + i, "train_seconds": 3.5}
        attrs = {
            "metrics": metrics,
            "finished": True,
            "connections": 12,
            "kinds": "gated",
            "fingerprint": f"{i:016x}",
            "placements": PLACEMENTS,
            "grad_profile": {"ratio": 3.2e4},
            "scores": {"synflow": 10.5},
            "baseline": "no connections" if i == 5 else "",
        }
        study.add_trial(optuna.trial.create_trial(values=[metrics["val_accuracy"], flops], user_attrs=attrs))
    return url


def test_default_table_fits_100_columns_with_units(run_cli, storage):
    code, out, err = run_cli("leaderboard", "--storage", storage)
    assert code == 0, err
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 100
    first = next(line for line in lines if line.strip().startswith("1 "))
    assert "0.9" in first and "29.6 k params" in first and "1.2 GFLOP" in first and "0→2 gated" in first
    assert "…" in first  # the long placement list is cut to fit, numbers never are
    assert sum(line.strip()[:2].strip().isdigit() for line in lines) == 12
    assert "[no connections] 0→2 gated" in out  # baselines marked (and not taken for markup)


def test_columns_wide_csv_and_json(run_cli, storage, tmp_path):
    code, out, _ = run_cli("leaderboard", "--storage", storage, "--columns", "trial,params", "--top", "2")
    assert code == 0 and "params" in out and "val acc" not in out
    code, out, _ = run_cli("leaderboard", "--storage", storage, "--wide")
    assert code == 0 and "000000000000000b" in out and PLACEMENTS in out
    code, out, _ = run_cli("leaderboard", "--storage", storage, "--csv", "-")
    board = pd.read_csv(io.StringIO(out))
    assert len(board) == 12 and board.loc[0, "params"] == 29_600 and board.loc[0, "score_synflow"] == 10.5
    code, out, _ = run_cli("leaderboard", "--storage", storage, "--json", tmp_path / "b.json")
    rows = json.loads((tmp_path / "b.json").read_text())
    assert code == 0 and rows[0]["placements"] == PLACEMENTS and rows[0]["rank"] == 1
    code, _, err = run_cli("leaderboard", "--storage", storage, "--columns", "trial,nope")
    assert code == 2 and "nope" in err and "--columns" in err


def test_si_units():
    assert si(29_600, " params") == "29.6 k params"
    assert si(1.2e9, "FLOP") == "1.2 GFLOP"
    assert si(512, "FLOP") == "512 FLOP"
