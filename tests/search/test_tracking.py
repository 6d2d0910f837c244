"""--log mlflow:DIR, tensorboard:DIR and wandb:DIR: one run per trial with params, per-epoch metrics, final costs."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest
from helpers import TINY, load, resnas_cmd, session_pids

pytest.importorskip("mlflow", reason="the tracking extra is not installed (pip install 'resnas[tracking]')")
pytest.importorskip("tensorboard", reason="the tracking extra is not installed (pip install 'resnas[tracking]')")


@pytest.mark.slow
def test_three_trial_search_logs_one_run_per_trial_to_each_tracker(spawn, tmp_path):
    wandb_here = importlib.util.find_spec("wandb") is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["WANDB_BASE_URL"] = "http://127.0.0.1:9"  # were anything sent to W&B, it would fail here, not reach a server
    logs = ["--log", "mlflow:mlruns", "--log", "tensorboard:tb", *(["--log", "wandb:wb"] if wandb_here else [])]
    proc = spawn(
        resnas_cmd("search", TINY, "--trials", "3", *logs),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    deadline = time.monotonic() + 10  # nothing a tracker started (W&B's service process) outlives the search
    # (W&B's service process runs in a session of its own, so it is looked for by its --pid)
    while (left := session_pids(proc.pid, 0) + wandb_core_of(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"processes left after the search: {left}"
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

    # W&B, offline: its run logs read back (see wandb_run).
    if not wandb_here:
        pytest.skip("wandb is not installed (pip install 'resnas[tracking]'): MLflow and TensorBoard checked, W&B not")
    assert "wandb" not in (out + err).lower()  # W&B's console output is silenced
    runs = {r["name"]: r for r in map(wandb_run, sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")))}
    assert sorted(runs) == ["trial 0", "trial 1", "trial 2"]
    for number, t in trials.items():
        run = runs[f"trial {number}"]
        metrics = t.user_attrs["metrics"]
        assert run["project"] == "tiny" and run["exit_code"] == 0
        assert run["config"]["train.lr"] == t.params["train.lr"]
        assert run["config"]["seed"] == t.user_attrs["seed"]
        assert run["config"]["torch_threads"] == t.user_attrs["torch_threads"]
        curve = [(row["_step"], row["val_accuracy"]) for row in run["history"] if "val_accuracy" in row]
        assert [step for step, _ in curve] == [1, 2, 3, 4]
        assert curve[-1][1] == metrics["val_accuracy"]
        assert run["summary"]["val_accuracy"] == metrics["val_accuracy"]
        assert run["summary"]["train_flops"] == metrics["train_flops"]
        assert run["summary"]["params"] == metrics["params"]
        assert run["summary"]["state"] == "COMPLETE"


def test_log_refuses_unknown_kind_and_names_the_extra(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("search", str(TINY), "--log", "comet:x")
    assert code == 2 and err.strip().splitlines() == [
        "error: --log comet:x: expected mlflow:DIR, tensorboard:DIR or wandb:DIR (kinds: mlflow, tensorboard, wandb)"
    ]
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    code, _, err = run_cli("search", str(TINY), "--log", "mlflow:runs")
    assert code == 2 and err.strip().splitlines() == [
        "error: --log mlflow: the mlflow package is not installed; pip install 'resnas[tracking]'"
    ]
    monkeypatch.setitem(sys.modules, "wandb", None)
    code, _, err = run_cli("search", str(TINY), "--log", "wandb:wb")
    assert code == 2 and err.strip().splitlines() == [
        "error: --log wandb: the wandb package is not installed; pip install 'resnas[tracking]'"
    ]
    assert not (tmp_path / "resnas.db").exists()  # refused before anything was stored


def wandb_records(path: Path) -> list:
    """The records of a W&B run's transaction log (``run-ID.wandb``), as wandb's own protobuf ``Record``s.

    W&B offline writes nothing else to read a run back from (no summary or history file, and its
    public ``wandb.Api`` needs a server), and wandb 0.31 no longer ships its Python reader
    (``wandb.sdk.internal.datastore``). The framing below is wandb's internal one (LevelDB's log
    format behind a ``:W&B`` header): 32 KiB blocks of chunks, each ``crc32 u32, length u16, type u8``
    (1 whole record, 2 first, 3 middle, 4 last part); a block's tail shorter than a chunk header is padding.
    """
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    records, pos, parts = [], 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding at the end of the file
            break
        parts = data[pos + 7 : pos + 7 + length] if kind in (1, 2) else parts + data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(parts))
    return records


def wandb_run(path: Path) -> dict:
    """A W&B run read back: name, project, config, history rows (by step), summary, exit code."""
    run = {"config": {}, "history": [], "summary": {}, "exit_code": None}

    def items(updates) -> dict:
        return {u.key or ".".join(u.nested_key): json.loads(u.value_json) for u in updates}

    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(name=record.run.display_name, project=record.run.project)
            run["config"].update(items(record.run.config.update))
        elif kind == "config":
            run["config"].update(items(record.config.update))
        elif kind == "history":
            run["history"].append(items(record.history.item))
        elif kind == "summary":
            run["summary"].update(items(record.summary.update))
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def wandb_core_of(pid: int) -> list[int]:
    """Live W&B service processes (``wandb-core --pid PID``) started for process ``pid``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"wandb-core") and b"--pid" in args and args[args.index(b"--pid") + 1] == b"%d" % pid:
            found.append(int(cmdline.parent.name))
    return found


def child_pids() -> set[int]:
    """Live child processes of this process."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X"):
            found.add(int(stat.parent.name))
    return found


def test_wandb_run_of_a_failed_trial_ends_with_exit_code_1_and_close_ends_wandb_core(tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'resnas[tracking]')")
    import optuna

    from resnas.tracking import open_trackers

    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL,
        params={"train.lr": 0.1},
        distributions={"train.lr": optuna.distributions.CategoricalDistribution([0.1, 0.01])},
        user_attrs={"seed": 7, "fail_reason": "diverged", "metrics": {"params": 120}},
    )
    before = child_pids()
    [tracker] = open_trackers([f"wandb:{tmp_path / 'wb'}"])
    try:
        tracker.log_trial("a study", trial, [{"val_accuracy": 0.5, "val_loss": 1.0}])
        assert child_pids() - before  # W&B's service process (wandb-core) ...
    finally:
        tracker.close()
    deadline = time.monotonic() + 10
    while (left := child_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"W&B processes left after close(): {left}"  # ... ended by close(), not only at exit
    [log] = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    run = wandb_run(log)
    assert run["project"] == "a_study" and run["exit_code"] == 1
    assert run["summary"]["state"] == "FAIL" and run["summary"]["fail_reason"] == "diverged"
    assert [row["_step"] for row in run["history"]] == [1]
