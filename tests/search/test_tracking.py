"""--log mlflow:DIR and tensorboard:DIR: one run per trial with params, per-epoch metrics, final costs."""

from __future__ import annotations

import os

import pytest
from helpers import TINY, load

pytest.importorskip("mlflow", reason="the tracking extra is not installed (pip install 'resnas[tracking]')")
pytest.importorskip("tensorboard", reason="the tracking extra is not installed (pip install 'resnas[tracking]')")


@pytest.mark.slow
def test_three_trial_search_logs_one_run_per_trial_to_both(cli, tmp_path):
    proc = cli("search", TINY, "--trials", "3", "--log", "mlflow:mlruns", "--log", "tensorboard:tb")
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = {t.number: t for t in load(tmp_path).trials}
    assert len(trials) == 3

    # MLflow: read back through its client API from the file store (no server).
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["trial 0", "trial 1", "trial 2"]
    for run in runs:
        t = trials[int(run.data.tags["resnas.trial"])]
        assert run.info.status == "FINISHED"
        assert run.data.params["train.lr"] == str(t.params["train.lr"])
        assert run.data.params["torch_threads"] == str(t.user_attrs["torch_threads"])
        curve = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in curve] == [1, 2, 3, 4]
        assert curve[-1].value == t.user_attrs["metrics"]["val_accuracy"]
        assert run.data.metrics["train_flops"] == t.user_attrs["metrics"]["train_flops"]
        assert run.data.metrics["params"] == t.user_attrs["metrics"]["params"]

    # TensorBoard: its own event reader, one directory per trial.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dirs = sorted(p.name for p in (tmp_path / "tb" / "tiny").iterdir())
    assert dirs == ["trial_0", "trial_1", "trial_2"]
    for number, t in trials.items():
        events = EventAccumulator(str(tmp_path / "tb" / "tiny" / f"trial_{number}")).Reload()
        assert {"val_accuracy", "val_loss", "train_loss", "final/params", "final/train_flops"} <= set(
            events.Tags()["scalars"]
        )
        curve = events.Scalars("val_loss")
        assert [e.step for e in curve] == [1, 2, 3, 4]
        assert curve[-1].value == pytest.approx(t.user_attrs["metrics"]["val_loss"], rel=1e-6)  # float32 in events
        assert events.Scalars("final/params")[0].value == t.user_attrs["metrics"]["params"]


def test_log_refuses_unknown_kind_and_names_the_extra(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("search", str(TINY), "--log", "wandb:x")
    assert code == 2 and err.strip().splitlines() == [
        "error: --log wandb:x: expected mlflow:DIR or tensorboard:DIR (kinds: mlflow, tensorboard)"
    ]
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    code, _, err = run_cli("search", str(TINY), "--log", "mlflow:runs")
    assert code == 2 and err.strip().splitlines() == [
        "error: --log mlflow: the mlflow package is not installed; pip install 'resnas[tracking]'"
    ]
    assert not (tmp_path / "resnas.db").exists()  # refused before anything was stored
