"""The one-shot strategy as trials of a resnas study.

Phase 1, the supernet, is one trial: it ends PRUNED (it is not a candidate, so it never
counts towards ``--trials`` nor ranks on the leaderboard) and carries ``oneshot:
supernet``, both importance rankings, the architecture-weight trajectory per epoch, the
derived architectures and its compute. Phase 2 retrains the derived architecture from
scratch as an ordinary trial (``origin: oneshot``) that the leaderboard, reports and
export treat like any other. Both phases run under ``study.optimize`` (so heartbeats
fail a killed run's trial); running the strategy again resumes after the last completed
phase, and once both are done it does nothing.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
import torch

from resnas.costs import flops_per_sample
from resnas.data import load_data
from resnas.errors import ResnasError
from resnas.oneshot._derive import SELECTIONS, derive, importance, public, ranking
from resnas.oneshot._space import allowed_counts, base_candidate, check_supported, options_of
from resnas.oneshot._supernet import Supernet
from resnas.oneshot._train import train_supernet
from resnas.search._objective import (
    FINISHED,
    candidate_attrs,
    candidate_key,
    device_name,
    earlier_result,
    keep_weights,
    measure_and_train,
    versions,
)
from resnas.search._storage import set_trial_attrs
from resnas.search._study import artifact_dir, open_study
from resnas.space import Candidate, SearchSpace
from resnas.train import StopRequested, TrialFailure, resolve_device

TrialState = optuna.trial.TrialState
PHASE = "oneshot"  # trial user attr: "supernet" on the supernet trial
ORIGIN = "origin"  # trial user attr: "oneshot" on the derived trial


def build_supernet(space: SearchSpace, seed: int) -> Supernet:
    check_supported(space)
    torch.manual_seed(seed)
    base = base_candidate(space).architecture
    return Supernet(base, options_of(space), space.spec.residual.gate.mode)


def forward_flops(net: Supernet, input_shape: tuple[int, ...], starts: list[int]) -> int:
    """Forward FLOPs of one sample in eval mode, summed over perturbation passes that
    recompute the network from block ``start`` on (0: the whole network)."""
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    per_start = {}
    with torch.no_grad():
        states = net.states(torch.randn(2, *input_shape))
        for start in sorted(set(starts)):
            with FlopCounterMode(display=False) as counter:
                if start == 0:
                    net(torch.randn(2, *input_shape))
                else:
                    net.logits_from(states, start)
            per_start[start] = counter.get_total_flops() // 2
    return sum(per_start[s] for s in starts)


def run_supernet(space: SearchSpace, device: torch.device, stop: Any = None, report: Any = None) -> dict[str, Any]:
    """Train the supernet, rank the connections, derive the architecture. Returns the record."""
    settings = space.spec.search.oneshot
    seed = space.spec.search.seed
    cfg = base_candidate(space).train
    net = build_supernet(space, seed)
    data = load_data(space.spec.data, seed)
    shape = tuple(data.x_train.shape[1:])
    per_sample = flops_per_sample(net, shape)
    torch.manual_seed(seed)
    net = build_supernet(space, seed)  # fresh weights: measuring ran a backward pass
    counts = allowed_counts(space, len(net.options))
    limit = None if space.spec.residual.count == "all" else max(counts)
    trained = train_supernet(
        net, data, cfg, settings, seed=seed, device=device, stop=stop, on_epoch=report, limit=limit
    )
    start = time.perf_counter()
    autocast = device.type == "cuda" and cfg.get("precision", "auto") in ("auto", "bf16")
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    imp = importance(net, x_val, y_val, autocast, counts)
    gate_mode = space.spec.residual.gate.mode
    derived = {s: derive(net, imp, s, counts, gate_mode) for s in SELECTIONS}
    derive_seconds = time.perf_counter() - start
    train_flops = per_sample * (trained.weight_samples + trained.arch_samples)
    net.cpu()
    net.arch_to(torch.device("cpu"))
    derive_flops = forward_flops(net, shape, imp.starts) * len(y_val)
    return {
        "selection": settings.select,
        "derived": {s: a.to_dict() for s, a in derived.items()},
        "derived_fingerprint": {s: a.fingerprint for s, a in derived.items()},
        "ranking": {s: public(ranking(net, imp, s)) for s in SELECTIONS},
        "trajectory": trained.history,
        "placements": len(net.options),
        "supernet_params": sum(p.numel() for p in net.parameters()),
        "base_val_loss": imp.base_val_loss,
        "derive_passes": imp.evaluations,
        "metrics": {
            "train_seconds": trained.seconds,
            "derive_seconds": derive_seconds,
            "search_seconds": trained.seconds + derive_seconds,
            "train_flops": float(train_flops),
            "derive_flops": float(derive_flops),
            "search_flops": float(train_flops + derive_flops),
            "val_accuracy": trained.history[-1]["val_accuracy"],
            "val_loss": trained.history[-1]["val_loss"],
        },
        "train": cfg,
        "seed": seed,
        "epochs": settings.epochs,
        "settings": settings.model_dump(mode="json"),
    }


def _find(study: optuna.Study) -> tuple[optuna.trial.FrozenTrial | None, optuna.trial.FrozenTrial | None]:
    """The last finished supernet trial, and the finished derived trial that came from it."""
    trials = study.get_trials(deepcopy=False)
    supernets = [t for t in trials if t.user_attrs.get(PHASE) == "supernet" and t.state == TrialState.PRUNED]
    supernets = [t for t in supernets if "derived" in t.user_attrs]
    if not supernets:
        return None, None
    sup = supernets[-1]
    derived = [
        t
        for t in trials
        if t.user_attrs.get(ORIGIN) == "oneshot"
        and t.user_attrs.get("supernet_trial") == sup.number
        and t.state == TrialState.COMPLETE
    ]
    return sup, (derived[-1] if derived else None)


def _record_failure(trial: optuna.Trial, exc: TrialFailure) -> ResnasError:
    set_trial_attrs(trial, {"fail_reason": exc.reason, "fail_detail": exc.detail[:500]})
    return ResnasError(f"one-shot trial {trial.number} failed: {exc}")


def run_oneshot(
    space: SearchSpace | None,
    storage: str | None = None,
    study: str | None = None,
    *,
    device: str | None = None,
    keep_weights_: bool = False,
    artifacts: str | None = None,
    stop: Any = None,
    log: Any = print,
) -> optuna.Study:
    """Run (or resume) the one-shot strategy in the study of ``space``; returns the study."""
    if space is not None:
        check_supported(space)  # before anything is written
    st, space = open_study(space, storage, study, artifacts=artifacts)
    check_supported(space)
    dev = resolve_device(device)
    optuna.storages.fail_stale_trials(st)
    sup, done = _find(st)
    if sup is None:
        log(f"study {st.study_name}: one-shot phase 1 of 2, training the supernet")

        def supernet_trial(trial: optuna.Trial) -> float:
            set_trial_attrs(trial, {PHASE: "supernet", "device": device_name(dev), "versions": versions()})

            def on_epoch(epoch: int, rec: dict[str, Any]) -> None:
                trial.set_user_attr("epochs", epoch)
                log(f"  supernet epoch {epoch}: val_accuracy {rec['val_accuracy']:.4g}, val_loss {rec['val_loss']:.4g}")

            try:
                record = run_supernet(space, dev, stop, on_epoch)
            except TrialFailure as exc:
                raise _record_failure(trial, exc) from None
            except (StopRequested, KeyboardInterrupt):
                trial.set_user_attr("fail_reason", "interrupted")
                raise
            set_trial_attrs(trial, record)
            raise optuna.TrialPruned("the supernet is not a candidate; its derived architecture is trained next")

        st.optimize(supernet_trial, n_trials=1, catch=())
        sup, done = _find(st)
        if sup is None:
            raise ResnasError(f"study {st.study_name}: the supernet trial did not finish")
    if done is not None:
        log(f"study {st.study_name}: one-shot search already done (supernet trial {sup.number}, derived {done.number})")
        return st
    log(f"study {st.study_name}: one-shot phase 2 of 2, retraining the derived architecture from scratch")
    from resnas.arch import Architecture

    selection = sup.user_attrs["selection"]
    arch = Architecture.from_dict(sup.user_attrs["derived"][selection])
    candidate = Candidate(arch, sup.user_attrs["train"])
    metric_names = [m for m, _ in space.objectives]

    def derived_trial(trial: optuna.Trial) -> list[float]:
        seed = space.spec.search.seed + trial.number
        # One write at the start (the candidate and where it came from), one at the end.
        start = {
            **candidate_attrs(candidate, seed, dev),
            ORIGIN: "oneshot",
            "supernet_trial": sup.number,
            "selection": selection,
            "search_flops": sup.user_attrs["metrics"]["search_flops"],
            "search_seconds": sup.user_attrs["metrics"]["search_seconds"],
        }
        set_trial_attrs(trial, start)
        end: dict[str, Any] = {}
        earlier = earlier_result(trial.study, candidate_key(candidate))
        if earlier is not None:
            end["repeat_of"] = earlier.number
            metrics, epochs = earlier.user_attrs["metrics"], earlier.user_attrs["epochs"]
        else:
            try:
                metrics, epochs, model = measure_and_train(space, candidate, seed, dev, stop=stop)
            except TrialFailure as exc:
                raise _record_failure(trial, exc) from None
            except (StopRequested, KeyboardInterrupt):
                trial.set_user_attr("fail_reason", "interrupted")
                raise
            if keep_weights_:
                keep_weights(trial, model, artifact_dir(trial.study))
        set_trial_attrs(trial, {**end, "metrics": metrics, "epochs": epochs, FINISHED: True})
        return [float(metrics[m]) for m in metric_names]

    st.optimize(derived_trial, n_trials=1, catch=())
    return st
