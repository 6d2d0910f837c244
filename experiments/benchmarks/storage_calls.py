"""CPU per storage call a trial makes, resnas's storage against Optuna's own ``RDBStorage``
method where there is one, on a new SQLite study (5 finished trials, one running):

    python experiments/benchmarks/storage_calls.py [--calls 300]

Each figure is the mean process CPU of ``--calls`` calls after one warm-up call, both methods
timed in the same process, alternating; a ratio below 1 means resnas's call is cheaper.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna


def cpu_ms(call, calls: int) -> float:
    call()
    start = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - start) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    calls = parser.parse_args().calls
    from resnas.search._names import CONFIRMS, FINISHED
    from resnas.search._storage import lean, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = optuna.storages.RDBStorage
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{Path(tmp) / 'calls.db'}", heartbeat=False)
        study = optuna.create_study(storage=lean(storage), sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(5):
            trial = study.ask()
            trial.suggest_float("lr", 1e-3, 1.0, log=True)
            trial.suggest_int("depth", 1, 9)
            for epoch in range(4):
                trial.report(0.1 * epoch, epoch)
            study.tell(trial, 0.5)
        running = study.ask()
        running.suggest_float("lr", 1e-3, 1.0, log=True)
        tid, sid = running._trial_id, study._study_id
        attrs = {f"key{i}": {"value": i, "list": [1.5, None, "x"]} for i in range(8)}
        waiting = (optuna.trial.TrialState.WAITING,)

        def optuna_attrs() -> None:
            for key, value in attrs.items():
                rdb.set_trial_user_attr(storage, tid, key, value)

        rows = [
            ("get_trial (a running trial)", lambda: storage.get_trial(tid), lambda: rdb.get_trial(storage, tid)),
            (
                "get_all_trials (the waiting queue)",
                lambda: storage.get_all_trials(sid, deepcopy=False, states=waiting),
                lambda: rdb.get_all_trials(storage, sid, deepcopy=False, states=waiting),
            ),
            (
                "8 user attributes (one upsert / one write a key)",
                lambda: storage.set_trial_user_attrs(tid, attrs),
                optuna_attrs,
            ),
            ("trial_counts (one query)", lambda: storage.trial_counts(sid, FINISHED, CONFIRMS), None),
            ("finished_numbers", lambda: storage.finished_numbers(sid), None),
        ]
        print(f"| call | resnas CPU ms | Optuna's CPU ms | resnas / Optuna | ({calls} calls each)")
        print("|---|---|---|---|")
        for name, ours, theirs in rows:
            mine = cpu_ms(ours, calls)
            if theirs is None:
                print(f"| {name} | {mine:.3f} | - | - |")
                continue
            other = cpu_ms(theirs, calls)
            mine = (mine + cpu_ms(ours, calls)) / 2  # alternating: ours, theirs, ours
            print(f"| {name} | {mine:.3f} | {other:.3f} | {mine / other:.2f}x |")


if __name__ == "__main__":
    main()
