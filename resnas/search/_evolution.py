"""Regularized evolution (Real et al. 2019, "Regularized Evolution for Image Classifier
Architecture Search") as an Optuna sampler.

The population is the last ``population`` finished trials of the study (aging: the
oldest leaves as a new one arrives, whatever its score). A parent is the best of
``sample_size`` of them drawn at random; the child is the parent with one mutation, which
acts on the architecture: add, remove or move one connection, change its kind or its span,
change one depth or width, or change one training value. Until the population is full,
trials are drawn at random.

It is an ordinary :class:`optuna.samplers.BaseSampler` and reads everything from the
study, so it works unchanged with several workers, PostgreSQL, the Ray backend and resume.
Connection parameters are the structural ones of ``resnas.space._sample`` (one categorical
per placement, ``none`` plus kinds): a placement that a mutated depth newly offers starts
as ``none``, so the child differs from its parent by the one mutation.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from resnas.space._sample import NONE

PLACEMENT = re.compile(r"^residual\.(s\d+b\d+)-(s\d+b\d+)$")
# Trials that do not join the population (confirmation runs repeat an earlier candidate).
NOT_IN_POPULATION = "confirms"
MAX_RETRIES = 30  # mutations tried before accepting a child that repeats an earlier trial


class RegularizedEvolutionSampler(BaseSampler):
    """Regularized evolution over resnas parameters; see the module docstring."""

    def __init__(
        self,
        population: int = 10,
        sample_size: int = 3,
        mutation: dict[str, float] | None = None,
        seed: int | None = None,
    ):
        if population < 2 or not 1 <= sample_size <= population:
            raise ValueError("need population >= 2 and 1 <= sample_size <= population")
        self.population = population
        self.sample_size = sample_size
        self.mutation = mutation or {"connection": 0.7, "network": 0.15, "train": 0.15}
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self._plans: dict[int, tuple[dict[str, Any] | None, dict[str, Any]]] = {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    # ---- Optuna's sampler interface ---------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._plans[trial.number] = self._plan(study)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        if trial.number not in self._plans:  # a trial created elsewhere (say by Ray) without before_trial
            self._plans[trial.number] = self._plan(study)
        child, _ = self._plans[trial.number]
        if child is not None:
            if param_name in child and _fits(param_distribution, child[param_name]):
                return child[param_name]
            if isinstance(param_distribution, CategoricalDistribution) and NONE in param_distribution.choices:
                return NONE  # a placement the parent's layout did not offer starts empty
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._plans.pop(trial.number, None)

    def lineage(self, number: int) -> dict[str, Any] | None:
        """The parent and the mutation of trial ``number`` while it runs (None: drawn at random)."""
        plan = self._plans.get(number)
        return None if plan is None or plan[0] is None else plan[1]

    # ---- evolution ----------------------------------------------------------------
    def _plan(self, study: optuna.Study) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        trials = study.get_trials(deepcopy=False)
        done = [
            t
            for t in trials
            if t.state == TrialState.COMPLETE and t.values is not None and NOT_IN_POPULATION not in t.user_attrs
        ]
        population = done[-self.population :]
        if len(population) < self.population:
            return None, {}
        picks = self._rng.choice(len(population), size=self.sample_size, replace=False)
        parent = _best([population[i] for i in picks], study.directions)
        seen = {json.dumps(t.params, sort_keys=True, default=str) for t in trials}
        for _ in range(MAX_RETRIES):
            child, what = self._mutate(parent)
            if json.dumps(child, sort_keys=True, default=str) not in seen:
                break
        return child, {"parent": parent.number, "mutation": what}

    def _mutate(self, parent: FrozenTrial) -> tuple[dict[str, Any], str]:
        params, dists = dict(parent.params), parent.distributions
        parts = {
            "connection": [n for n in params if PLACEMENT.match(n)],
            "network": [n for n in params if n.startswith(("network.", "residual.gate."))],
            "train": [n for n in params if n.startswith("train.")],
        }
        names = [p for p in parts if parts[p] and self.mutation.get(p, 0) > 0]
        if not names:
            return params, "none"
        weights = np.array([self.mutation[p] for p in names], dtype=float)
        part = names[self._rng.choice(len(names), p=weights / weights.sum())]
        if part == "connection":
            return self._mutate_connection(params, dists, parts["connection"])
        name = parts[part][self._rng.randint(len(parts[part]))]
        params[name] = self._neighbour(dists[name], params[name])
        return params, f"{name}={params[name]}"

    def _mutate_connection(
        self, params: dict[str, Any], dists: dict[str, BaseDistribution], names: list[str]
    ) -> tuple[dict[str, Any], str]:
        on = [n for n in names if params[n] != NONE]
        off = [n for n in names if params[n] == NONE]

        def kinds(name: str) -> list[Any]:
            return [c for c in dists[name].choices if c != NONE]

        def same_source(name: str) -> list[str]:
            src = PLACEMENT.match(name).group(1)
            return [m for m in off if PLACEMENT.match(m).group(1) == src]

        ops = []
        if off:
            ops.append("add")
        if on:
            ops.append("remove")
            if off:
                ops.append("move")
            if any(len(kinds(n)) > 1 for n in on):
                ops.append("kind")
            if any(same_source(n) for n in on):
                ops.append("span")
        if not ops:  # count: all with a single kind: nothing to change
            return params, "none"
        op = ops[self._rng.randint(len(ops))]
        pick = self._pick
        if op == "add":
            n = pick(off)
            params[n] = pick(kinds(n))
            return params, f"add {n}={params[n]}"
        if op == "remove":
            n = pick(on)
            params[n] = NONE
            return params, f"remove {n}"
        if op == "kind":
            n = pick([n for n in on if len(kinds(n)) > 1])
            params[n] = pick([k for k in kinds(n) if k != params[n]])
            return params, f"kind {n}={params[n]}"
        n = pick(on if op == "move" else [n for n in on if same_source(n)])
        m = pick(off if op == "move" else same_source(n))
        params[m], params[n] = params[n], NONE
        return params, f"{op} {n}->{m}"

    def _pick(self, items: list[Any]) -> Any:
        return items[self._rng.randint(len(items))]

    def _neighbour(self, dist: BaseDistribution, value: Any) -> Any:
        """A nearby different value: the next int step, another choice, a perturbed float."""
        if isinstance(dist, CategoricalDistribution):
            others = [c for c in dist.choices if c != value]
            return self._pick(others) if others else value
        if isinstance(dist, IntDistribution):
            step = dist.step
            moves = [v for v in (value - step, value + step) if dist.low <= v <= dist.high]
            return self._pick(moves) if moves else value
        if isinstance(dist, FloatDistribution):
            if dist.step is not None:
                moves = [v for v in (value - dist.step, value + dist.step) if dist.low <= v <= dist.high]
                return self._pick(moves) if moves else value
            if dist.log:
                lo, hi, x = math.log(dist.low), math.log(dist.high), math.log(value)
                return float(math.exp(np.clip(x + self._rng.normal(0, 0.2 * (hi - lo)), lo, hi)))
            return float(np.clip(value + self._rng.normal(0, 0.2 * (dist.high - dist.low)), dist.low, dist.high))
        return value


def _fits(dist: BaseDistribution, value: Any) -> bool:
    """Whether the parent's value is a value of this (maybe changed) distribution."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, IntDistribution | FloatDistribution):
        if not isinstance(value, int | float) or not dist.low <= value <= dist.high:
            return False
        return dist.step is None or math.isclose((value - dist.low) / dist.step, round((value - dist.low) / dist.step))
    return False


def _best(trials: list[FrozenTrial], directions: list[StudyDirection]) -> FrozenTrial:
    """The tournament winner: for several objectives, a non-dominated trial of the sample
    (ties broken by the first objective, then the youngest: drift along plateaus)."""
    signs = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions])
    values = np.array([t.values for t in trials], dtype=float) * signs  # minimise everything
    front = [
        i
        for i in range(len(trials))
        if not any(np.all(values[j] <= values[i]) and np.any(values[j] < values[i]) for j in range(len(trials)))
    ]
    return trials[min(front, key=lambda i: (values[i][0], -trials[i].number))]
