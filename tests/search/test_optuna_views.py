"""A resnas database stays readable in Optuna's own views: the spec text is not a user attr."""

from __future__ import annotations

import optuna
import optuna.cli
from helpers import TINY

from resnas import load_space
from resnas.search import load_study, open_study, stored_space


def test_optuna_studies_table_stays_narrow(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'resnas.db'}"
    open_study(load_space(TINY), url, None)
    monkeypatch.setattr("sys.argv", ["optuna", "studies", "--storage", url])
    assert optuna.cli.main() == 0
    table = capsys.readouterr().out
    assert "tiny" in table and "spec_hash" in table
    assert "network:" not in table and max(map(len, table.splitlines())) < 400, table
    assert stored_space(load_study("tiny", url)).text == TINY.read_text()  # resnas reads it back
