"""The stale-trial check never fails a live trial of another machine between two of its heartbeats."""

from __future__ import annotations

import time

import optuna

from resnas.search._storage import HEARTBEAT_SECONDS, OWNER, ResnasStorage


def test_a_grace_below_two_heartbeats_spares_a_live_trial_of_another_machine(tmp_path):
    assert HEARTBEAT_SECONDS >= 3
    storage = ResnasStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=HEARTBEAT_SECONDS, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="grace")
    trial = study.ask()
    storage.set_trial_user_attr(trial._trial_id, OWNER, {"host": "another-machine", "pid": 1, "backend": "optuna"})
    storage.record_heartbeat(trial._trial_id)
    time.sleep(3)  # past the 1 s grace asked for, within one heartbeat interval: the trial may well be alive
    assert storage.lost_trials(study._study_id) == []
