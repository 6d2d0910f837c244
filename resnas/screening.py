"""What a trial records before training (placements, training-free scores, gradient flow),
and screening: draw a pool of candidates, score them without training, train the best.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import ExitStack, nullcontext
from typing import Any

import optuna
import torch
import torch.nn.functional as F

from resnas.arch import Architecture
from resnas.costs import count_params, flops_per_sample
from resnas.diagnose import block_inputs, diagnosis_batch, initial_model, profile_of
from resnas.scores import SCORES, activation_codes, gradient_scores_of, jacob_cov_from, naswot_of, synflow
from resnas.space import Candidate, SearchSpace

TrialState = optuna.trial.TrialState
SCORE_BATCH = 64  # NASLib's batch size for the proxies; the recorded gradient profile uses it too
SCREENED_OUT = "screened_out"  # trial user attr of a candidate screening did not train


def placement_text(arch: Architecture) -> list[str]:
    """Each connection as a person reads it: ``2→4 gated``, ``0→3 projection``."""
    out = []
    for c in arch.connections:
        kind = c.kind if c.kind != "gated" or c.shortcut in (None, "identity") else f"gated {c.shortcut}"
        out.append(f"{c.src}→{c.dst} {kind}")
    return out


def placements_record(arch: Architecture) -> str:
    """What a trial records as ``placements``: every connection, or ``none``."""
    return ", ".join(placement_text(arch)) or "none"


def candidate_diagnostics(
    space: SearchSpace, candidate: Candidate, seed: int, model: torch.nn.Module | None = None
) -> dict[str, Any]:
    """The trial's record before training: placements, every score (and its milliseconds) and
    the gradient-flow profile, all of the network as it starts training.

    The data scores share one forward pass: its loss's backward gives ``grad_norm``, ``snip``
    and the gradient profile, the backward of its summed output the input Jacobians
    (``jacob_cov``), and the activations' codes (``naswot``) are read on the way; the same
    values as each score's own pass (``tests/diagnose``), in about half the time. ``model``: the
    network as built for the trial with this seed (built here if None); its weights are left as
    they were, its gradients cleared, its batch-norm statistics moved by the passes.
    """
    arch = candidate.architecture
    x, y = diagnosis_batch(space, SCORE_BATCH)
    model = initial_model(arch, seed) if model is None else model
    start = time.perf_counter()
    model.train()
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with block_inputs(model) as inputs, activation_codes(model, len(x)) as kernel:
        out = model(x)
    loss = F.cross_entropy(out, y)
    loss.backward(retain_graph=True)
    values = gradient_scores_of(model)
    profile = profile_of(model, inputs, loss)
    (jacobian,) = torch.autograd.grad(out.sum(), x)
    del out, loss, inputs
    model.zero_grad(set_to_none=True)
    values.update(jacob_cov=jacob_cov_from(jacobian), naswot=naswot_of(kernel))
    values["synflow"] = synflow(model, x)
    values["params"] = float(count_params(model))
    values["flops"] = float(flops_per_sample(model, tuple(x.shape[1:]), key=arch.fingerprint))
    ratio = profile.ratio
    values["grad_flow"] = -abs(math.log10(ratio)) if 0 < ratio < math.inf else -1e9
    ms = (time.perf_counter() - start) * 1000
    return {
        "placements": placements_record(arch),
        "scores": {k: float(f"{values[k]:.6g}") for k in SCORES},
        "score_ms": round(ms, 1),
        "grad_profile": profile.to_dict(),
    }


def record_diagnostics(
    trial: optuna.Trial,
    space: SearchSpace,
    candidate: Candidate,
    seed: int,
    into: dict | None = None,
    model: torch.nn.Module | None = None,
) -> dict[str, float]:
    """Record :func:`candidate_diagnostics` on the trial (once: screening may have done it);
    with ``into``, add them to that dict instead, for the caller's next write."""
    if "scores" in trial.user_attrs:
        return trial.user_attrs["scores"]
    try:
        record = candidate_diagnostics(space, candidate, seed, model)
    except Exception as exc:  # a score that cannot be computed never costs the trial
        record = {"scores_error": f"{type(exc).__name__}: {exc}"[:300]}
    if into is not None:
        into.update(record)
    else:
        from resnas.search._storage import set_trial_attrs

        set_trial_attrs(trial, record)  # one write
    return record.get("scores", {})


def _heartbeat(study: optuna.Study, trial: optuna.Trial):
    """Optuna's heartbeat for a trial run outside ``study.optimize`` (a killed worker's trial is
    then failed and retried like any other)."""
    try:
        from optuna._heartbeat import get_heartbeat_thread
    except ImportError:  # pragma: no cover - a future Optuna
        return nullcontext()
    return get_heartbeat_thread(trial._trial_id, study._storage)


def screen_round(study: optuna.Study, objective: Any, score: str, pool: int, keep: int, catch: tuple) -> None:
    """Ask the sampler for ``pool`` candidates, train the ``keep`` best by ``score``, record the
    others PRUNED with ``screened_out`` (the score and its rank). A candidate screened out or
    trained before in this study ranks last, so it is not drawn again while others remain."""
    from resnas.search._objective import candidate_key, record_candidate
    from resnas.search._storage import params_written_once
    from resnas.space import sample

    space = objective.space
    earlier = {
        t.user_attrs.get("candidate_key")
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    }
    drawn = []
    with ExitStack() as beats:  # every asked trial has a heartbeat: a killed worker's pool is failed and retried
        for _ in range(pool):
            with warnings.catch_warnings():  # heartbeats are kept here and by run_asked, as optimize would
                warnings.filterwarnings("ignore", message=".*Heartbeat.*")
                trial = study.ask()
            queued = bool(trial.user_attrs)  # queued with a purpose (a baseline, a retried winner): trained
            if queued and not drawn:
                beats.close()
                run_asked(study, objective, trial, catch)
                return
            beats.enter_context(_heartbeat(study, trial))
            with params_written_once(trial):
                candidate = sample(space, trial)
            seed = space.spec.search.seed + trial.number
            record_candidate(trial, candidate, seed, objective.device)
            value = record_diagnostics(trial, space, candidate, seed).get(score, -math.inf)
            key = candidate_key(candidate)
            seen = key in earlier or key in {d[4] for d in drawn}
            drawn.append((not queued, seen, -value, trial, key))
    drawn.sort(key=lambda d: d[:3] + (d[3].number,))
    for rank, (_, _, neg, trial, _) in enumerate(drawn[keep:], start=keep + 1):
        trial.set_user_attr(SCREENED_OUT, {"score": score, "value": -neg, "rank": rank, "pool": pool})
        trial.set_user_attr("fail_reason", SCREENED_OUT)  # progress lines and reports show why
        trial.set_user_attr("fail_detail", f"{score} {-neg:.4g}, rank {rank} of {pool}")
        study.tell(trial, state=TrialState.PRUNED)
    for *_, trial, _ in drawn[:keep]:
        trial.set_user_attr("screened_in", {"score": score, "pool": pool})
        run_asked(study, objective, trial, catch)


def run_asked(study: optuna.Study, objective: Any, trial: optuna.Trial, catch: tuple) -> None:
    """``objective(trial)`` and tell the study its outcome, as ``study.optimize`` would."""
    with _heartbeat(study, trial):
        try:
            values = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return
        except catch:
            study.tell(trial, state=TrialState.FAIL)
            return
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
    study.tell(trial, values)


__all__ = ["SCREENED_OUT", "candidate_diagnostics", "placement_text", "record_diagnostics", "screen_round"]
