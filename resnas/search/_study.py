"""Create or resume the Optuna study of a spec; the spec's text and hash live on the study."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import optuna

from resnas.errors import SpecError, StudyError
from resnas.search._baselines import BASELINE, baselines
from resnas.search._storage import lean, open_storage, sqlite_path, storage_url
from resnas.space import SearchSpace, parse_space
from resnas.space._parse import canonical
from resnas.space._sample import ENCODING_VERSION
from resnas.space._values import discrete_values, high_value

# Study user attributes.
SPEC_TEXT = "spec_text"
SPEC_HASH = "spec_hash"
SPEC_SOURCE = "spec_source"
REQUESTED = "requested_trials"
ARTIFACT_DIR = "artifact_dir"
ENCODING = "encoding_version"  # how parameters name connections (see resnas.space._sample)


def artifact_dir(study: optuna.Study) -> str:
    """The directory where this study keeps trained weights (created on first use)."""
    root = study.user_attrs[ARTIFACT_DIR]
    os.makedirs(root, exist_ok=True)
    return root


def sampler_seed(space: SearchSpace, existing_trials: int, worker: int = 0) -> int:
    """The spec's seed, moved on by the trials already in the study and by the worker index:
    a resumed run or a second worker does not replay the first run's proposals, and a fresh
    single-worker run is reproducible."""
    return space.spec.search.seed + existing_trials + 100_003 * worker


def make_sampler(space: SearchSpace, trials: int, seed: int | None = None) -> optuna.samplers.BaseSampler:
    search = space.spec.search
    name = search.sampler
    seed = search.seed if seed is None else seed
    several = len(space.objectives) > 1
    if name == "auto":
        name = "nsga2" if several else "tpe"
    if name == "evolution":
        from resnas.search._evolution import RegularizedEvolutionSampler

        evo = search.evolution
        return RegularizedEvolutionSampler(evo.population, evo.sample_size, evo.mutation.model_dump(), seed=seed)
    if name == "tpe":
        # multivariate + group model the conditional connection parameters jointly;
        # constant_liar keeps parallel workers from proposing the same point.
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=min(10, max(4, trials // 3))
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(6, min(50, trials // 3)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    grid = {
        path: discrete_values(value)
        for path, value in space.searchable()
        if path not in ("residual.span", "residual.count")
    }
    return optuna.samplers.GridSampler(grid, seed=seed)


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    pruner = space.spec.search.pruner
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=int(high_value(space.spec.train.epochs)))
    return optuna.pruners.NopPruner()


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        out = {}
        for i, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: json.dumps(data, sort_keys=True)}


def changed_keys(old: SearchSpace, new: SearchSpace) -> list[str]:
    a, b = _flatten(canonical(old.raw)), _flatten(canonical(new.raw))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def spec_text(study: optuna.Study) -> str | None:
    """The stored spec: a study system attr, which Optuna's own views (``optuna studies``) do not
    print; studies made by an older resnas hold it as a user attr."""
    return study._storage.get_study_system_attrs(study._study_id).get(SPEC_TEXT) or study.user_attrs.get(SPEC_TEXT)


def stored_space(study: optuna.Study) -> SearchSpace:
    text = spec_text(study)
    if text is None:
        raise StudyError(f"study {study.study_name!r} was not made by resnas (it has no stored spec)")
    try:
        return parse_space(text, f"study {study.study_name}")
    except SpecError as exc:
        raise StudyError(f"the spec stored on study {study.study_name!r} no longer validates: {exc}") from None


def check_encoding(study: optuna.Study) -> None:
    """Refuse to add trials to a study whose parameters name connections differently."""
    if spec_text(study) is None:
        return  # not (yet) a resnas study: stored_space says so
    found = study.user_attrs.get(ENCODING, 1)
    if found != ENCODING_VERSION:
        raise StudyError(
            f"study {study.study_name!r} was made with connection encoding {found} "
            f"(parameters residual.connections[c].*); this resnas names connections by placement "
            f"(encoding {ENCODING_VERSION}), so its trials cannot be continued; its trials are untouched. "
            f"Search into a new study: --study {study.study_name}-2"
        )


def load_study(name: str | None, url: str | None = None, *, heartbeat: bool = False) -> optuna.Study:
    """An existing study; with no name, the only study in the storage."""
    storage = open_storage(url, heartbeat=heartbeat, must_exist=True, write=heartbeat)
    names = optuna.get_all_study_names(storage)
    if name is None:
        if len(names) != 1:
            known = ", ".join(sorted(names)) or "none"
            raise StudyError(f"--study: name a study (studies in {storage_url(url)}: {known})")
        name = names[0]
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise StudyError(f"--study: no study named {name!r} in {storage_url(url)} (studies there: {known})")
    return optuna.load_study(study_name=name, storage=lean(storage))


# One study handle per process and thread: a search opens its study once, whichever of its
# parts (the command, the backend, the worker) asks. Keyed by storage URL, study name, thread,
# and for SQLite the file's identity (a database replaced at the same path is opened anew).
_HANDLES: dict[tuple, tuple[optuna.Study, SearchSpace]] = {}


def _handle_key(url: str, name: str) -> tuple | None:
    db = sqlite_path(url)
    ident = None
    if db is not None:
        try:
            st = os.stat(db)
        except OSError:
            return None
        ident = (st.st_dev, st.st_ino)
    return url, name, threading.get_ident(), os.getpid(), ident


def _reuse(key: tuple | None, space: SearchSpace | None) -> tuple[optuna.Study, SearchSpace] | None:
    """The handle this process and thread opened on the study before, if it still names it."""
    found = _HANDLES.get(key) if key is not None else None
    if found is None:
        return None
    study, stored = found
    if space is not None and space.hash != stored.hash:
        return None  # the full path below says what changed
    try:
        if study._storage.get_study_id_from_name(study.study_name) == study._study_id:
            return found
    except KeyError:
        pass
    del _HANDLES[key]
    return None


def open_study(
    space: SearchSpace | None,
    url: str | None,
    name: str | None,
    trials: int | None = None,
    artifacts: str | None = None,
    worker: int = 0,
) -> tuple[optuna.Study, SearchSpace]:
    """Resume the study (refusing a changed spec) or create it; returns it with its space."""
    url = storage_url(url)
    name = name or (space.name if space is not None else None)
    if name is None:
        raise StudyError("give a spec file or --study NAME")
    key = _handle_key(url, name)
    again = _reuse(key, space)
    if again is not None:
        study, stored = again
        _set_request(study, url, trials or stored.spec.search.trials, artifacts)
        return study, stored if space is None else space  # the same hash; the settings outside it as given now
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    if name in names:
        probe = optuna.load_study(study_name=name, storage=lean(storage))
        check_encoding(probe)
        stored = stored_space(probe)
        if space is not None and space.hash != stored.hash:
            keys = ", ".join(changed_keys(stored, space))
            raise StudyError(
                f"study {name!r} in {url} was made from a different spec (changed: {keys}); "
                f"its trials are untouched. To search the new spec, name a new study: --study {name}-2"
            )
        space = stored if space is None else space
    elif space is None:
        known = ", ".join(sorted(names)) or "none"
        raise StudyError(f"--study: no study named {name!r} in {url} (studies there: {known})")
    trials = trials or space.spec.search.trials
    references = baselines(space) if name not in names else {}  # a bad request fails before anything is stored
    existing = storage.trial_counts(probe._study_id)[2] if name in names else 0  # counted, not loaded
    study = optuna.create_study(
        study_name=name,
        storage=lean(storage),
        directions=[d for _, d in space.objectives],
        sampler=make_sampler(space, trials, sampler_seed(space, existing, worker)),
        pruner=make_pruner(space),
        load_if_exists=True,
    )
    if spec_text(study) is None:
        study.set_user_attr(ENCODING, ENCODING_VERSION)  # before the spec: a resuming worker checks it
        study._storage.set_study_system_attr(study._study_id, SPEC_TEXT, space.text)
        study.set_user_attr(SPEC_HASH, space.hash)
        study.set_user_attr(SPEC_SOURCE, space.source)
        study.set_user_attr("objectives", [list(o) for o in space.objectives])
        study.set_metric_names([m for m, _ in space.objectives])
        for label, params in references.items():  # trained first: the reference points of the leaderboard
            study.enqueue_trial(params, user_attrs={BASELINE: label}, skip_if_exists=True)
    _set_request(study, url, trials, artifacts)
    key = key or _handle_key(url, name)  # a new SQLite file exists now
    if key is not None:
        _HANDLES[key] = (study, space)
    return study, space


def _set_request(study: optuna.Study, url: str, trials: int, artifacts: str | None) -> None:
    """Record the trials asked for and where weights go (written only when they change)."""
    attrs = study.user_attrs
    if attrs.get(REQUESTED) != trials:
        study.set_user_attr(REQUESTED, trials)
    if artifacts is not None or ARTIFACT_DIR not in attrs:
        db = sqlite_path(url)
        default = (db.parent if db is not None else Path.cwd()) / "resnas-artifacts"
        where = str(Path(artifacts or default).resolve())
        if attrs.get(ARTIFACT_DIR) != where:
            study.set_user_attr(ARTIFACT_DIR, where)
