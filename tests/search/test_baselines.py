"""Baselines first, confirmation of the winners, the encoding version, and their bad input."""

from __future__ import annotations

import optuna
import pandas as pd
from helpers import TINY, load

from resnas import parse_space
from resnas.report import confirmed
from resnas.search import baselines

# TINY with room for a connection around every block of its deepest layout (classic ResNet).
ROOMY = TINY.read_text().replace("count: {int: [0, 2]}", "count: {int: [0, 3]}")


def test_baselines_are_the_backbone_without_and_with_a_span1_identity_per_block():
    found = baselines(parse_space(ROOMY))
    assert list(found) == ["no connections", "classic ResNet"]
    for params in found.values():
        assert params["network.stages[0].depth"] == 3  # the backbone at its largest
        assert abs(params["train.lr"] - 0.1) < 1e-9  # the geometric middle of [0.05, 0.2]
    assert {v for n, v in found["no connections"].items() if n.startswith("residual.")} == {"none"}
    assert found["classic ResNet"] == {
        **found["no connections"],
        "residual.s0b0-s0b0": "identity",
        "residual.s0b1-s0b1": "identity",
        "residual.s0b2-s0b2": "identity",
    }
    # Left at its default, a baseline the space cannot express is skipped (count at most 2 here).
    assert list(baselines(parse_space(TINY.read_text()))) == ["no connections"]


def test_search_trains_baselines_first_and_confirms_the_top(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(ROOMY)
    code, out, err = run_cli("search", spec, "--trials", "4", "--confirm", "2", "--seeds", "1")
    assert code == 0, err
    study = load(tmp_path)
    assert [t.user_attrs.get("baseline") for t in study.trials[:2]] == ["no connections", "classic ResNet"]
    assert study.user_attrs["encoding_version"] == 2
    confirms = [t for t in study.trials if "confirms" in t.user_attrs]
    board = pd.DataFrame(
        [(t.number, t.values[0]) for t in study.trials if "confirms" not in t.user_attrs], columns=["n", "v"]
    )
    # two more runs, one per confirmed trial, linked to it, with their own seed; not counted in --trials
    assert len(study.trials) == 4 + 2 and len(confirms) == 2
    top2 = board.sort_values(["v", "n"], ascending=[False, True])["n"].head(2).tolist()
    assert sorted(t.user_attrs["confirms"] for t in confirms) == sorted(top2)
    for t in confirms:
        assert t.params == study.trials[t.user_attrs["confirms"]].params
        assert t.user_attrs["seed"] != study.trials[t.user_attrs["confirms"]].user_attrs["seed"]
        assert "repeat_of" not in t.user_attrs
    assert "classic ResNet" in out and "no connections" in out  # the leaderboard marks them
    assert "±" in out and "confirmed" in out
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("best: trial") and "over no connections (trial 0" in summary
    assert "over classic ResNet (trial 1" in summary
    # Export's default follows the confirmed ranking (mean over seeds), and its header says so.
    best = int(confirmed(study).iloc[0]["trial"])
    code, _, err = run_cli("export", "--study", "tiny", "-o", tmp_path / "best.py")
    assert code == 0, err
    header = (tmp_path / "best.py").read_text()
    assert f"trial: {best} (best confirmed mean val_accuracy" in header and "over 2 seeds" in header
    # Asking again adds nothing: the study has its trials and its confirmations.
    code, _, err = run_cli("search", spec, "--trials", "4", "--confirm", "2", "--seeds", "1")
    assert code == 0, err
    assert len(load(tmp_path).trials) == 6


def test_confirm_larger_than_the_trials_is_refused_before_anything_is_stored(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("search", TINY, "--trials", "3", "--confirm", "5")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--confirm 5" in err and "3 finished trials" in err
    assert not (tmp_path / "resnas.db").exists() or not optuna.get_all_study_names(
        f"sqlite:///{tmp_path / 'resnas.db'}"
    )


def test_explicit_baselines_in_a_space_without_their_placements_is_a_spec_error(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY.read_text().replace("search: {trials: 4,", "search: {baselines: true, trials: 4,"))
    code, _, err = run_cli("search", spec)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "s.yaml:10: search.baselines:" in err and "classic ResNet" in err
    assert not optuna.get_all_study_names(f"sqlite:///{tmp_path / 'resnas.db'}")


def test_evolution_option_out_of_range_is_one_line_and_exit_2(run_cli, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY.read_text().replace("sampler: random", "sampler: evolution, evolution: {population: 0}"))
    code, _, err = run_cli("search", spec)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "search.evolution.population" in err and "s.yaml:10" in err


def test_a_study_with_the_old_connection_encoding_is_refused_on_resume(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'resnas.db'}"
    old = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    old.set_user_attr("spec_text", TINY.read_text())  # what an older resnas stored
    old.enqueue_trial({"residual.count": 1, "residual.connections[0].position": 0.5})
    code, _, err = run_cli("search", TINY, "--trials", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "encoding 1" in err and "--study tiny-2" in err
    assert len(load(tmp_path).trials) == 1  # untouched
