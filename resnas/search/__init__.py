"""Run a search: trials of sampled architectures recorded in an Optuna study."""

from __future__ import annotations

import os

import optuna

from resnas._lazy import lazy_attributes
from resnas.errors import ResnasError
from resnas.search._progress import is_finished, optuna_quiet
from resnas.search._storage import DEFAULT_STORAGE, ClaimLock, named_faults, open_storage, storage_url
from resnas.space import SearchSpace

# The parts that train (torch) load on first use, so that read commands (leaderboard, studies)
# importing resnas.search.* never load torch.
_LAZY = {
    "Backend": "resnas.search._backend",
    "SearchRequest": "resnas.search._backend",
    "get_backend": "resnas.search._backend",
    "baselines": "resnas.search._baselines",
    "confirm": "resnas.search._confirm",
    "RegularizedEvolutionSampler": "resnas.search._evolution",
    "Objective": "resnas.search._objective",
    "measure_and_train": "resnas.search._objective",
    "load_study": "resnas.search._study",
    "open_study": "resnas.search._study",
    "stored_space": "resnas.search._study",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "DEFAULT_STORAGE",
    "Backend",
    "Objective",
    "RegularizedEvolutionSampler",
    "baselines",
    "confirm",
    "SearchRequest",
    "get_backend",
    "is_finished",
    "load_study",
    "measure_and_train",
    "open_storage",
    "open_study",
    "search",
    "stored_space",
]


def search(
    space: SearchSpace | None = None,
    *,
    storage: str | None = None,
    study: str | None = None,
    trials: int | None = None,
    backend: str = "optuna",
    strategy: str | None = None,
    **options,
) -> optuna.Study:
    """Search ``space`` until its study holds ``trials`` finished trials; resume if it exists.

    With ``space=None`` the spec stored on study ``study`` is used. ``options`` are the
    other fields of :class:`SearchRequest` (jobs, device, trial_timeout, ...), and ``confirm``
    (retrain the best K afterwards; default ``search.confirm``) with ``seeds`` more seeds each.
    ``strategy`` (default: the spec's ``search.strategy``) ``oneshot`` runs
    :func:`resnas.oneshot.run_oneshot` instead of sampling trials.
    """
    with optuna_quiet():  # resnas prints a line per trial; Optuna's INFO lines would repeat them
        return _search(space, storage, study, trials, backend, strategy, options)


def _search(space, storage, study, trials, backend, strategy, options) -> optuna.Study:
    from resnas.data import require_code_allowed
    from resnas.search._backend import SearchRequest, get_backend
    from resnas.search._confirm import check_confirm, confirm
    from resnas.search._study import open_study

    url = storage_url(storage)
    top = options.pop("confirm", None)
    seeds = options.pop("seeds", 2)
    if strategy not in (None, "sample", "oneshot"):
        raise ResnasError(f"--strategy: unknown strategy {strategy!r} (use sample or oneshot)")
    if strategy is None and space is not None:
        strategy = space.spec.search.strategy
    if space is not None:
        require_code_allowed(space.spec.data)
    if strategy == "oneshot":
        return _oneshot(space, url, study, backend, options)
    if space is not None:
        top = space.spec.search.confirm if top is None else top
        check_confirm(top, trials or space.spec.search.trials, seeds)  # before anything is stored
    # Several machines starting at once create the study (and queue its baselines) one at a time.
    with named_faults(url), ClaimLock(url, study or (space.name if space is not None else "")).hold():
        created, space = open_study(space, url, study, trials, options.get("artifacts"))
    require_code_allowed(space.spec.data)  # a resumed study's spec comes from the storage
    if strategy is None and space.spec.search.strategy == "oneshot":
        return _oneshot(space, url, created.study_name, backend, options)
    trials = trials or space.spec.search.trials
    top = space.spec.search.confirm if top is None else top
    check_confirm(top, trials, seeds)
    if backend == "ray" and space.spec.search.screen is not None:
        raise ResnasError("search.screen: screening runs on the optuna backend only (--backend optuna)")
    timeout = options.pop("trial_timeout", None) or space.spec.search.trial_timeout
    request = SearchRequest(
        space=space, storage=url, study=created.study_name, trials=trials, trial_timeout=timeout, **options
    )
    if backend == "ray":
        # resnas prints its own progress; Ray's experiment box points at results it deletes.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        if request.address is None:
            # A local Ray instance binds loopback only when this is set before ray is imported;
            # left alone, Ray picks the machine's outward-facing address.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    get_backend(backend).run(request)
    if top:
        confirm(created, space, top, seeds, options.get("device"))
    return optuna.load_study(study_name=created.study_name, storage=created._storage)  # this process's handle


def _oneshot(space: SearchSpace | None, url: str, study: str | None, backend: str, options: dict) -> optuna.Study:
    if backend != "optuna":
        raise ResnasError("--strategy oneshot trains one supernet in this process; use --backend optuna")
    from resnas.oneshot import run_oneshot

    return run_oneshot(
        space,
        url,
        study,
        device=options.get("device"),
        keep_weights_=options.get("keep_weights", False),
        artifacts=options.get("artifacts"),
    )
