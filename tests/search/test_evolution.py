"""Samplers learn placement: a planted optimum, found without training.

The objective scores a trial by how many of three chosen placements, each with a chosen
kind, its architecture has. TPE and regularized evolution must reach all three in at most
half the trials random search needs (median over 20 seeds), and the models of TPE
(multivariate) and NSGA-II must see the connection parameters.
"""

from __future__ import annotations

import statistics
import warnings

import optuna
import pytest

from resnas import parse_space, sample
from resnas.errors import SpecError
from resnas.search import RegularizedEvolutionSampler
from resnas.search._study import make_sampler

SPEC = """
name: planted
data: {dataset: digits}
network:
  stem: {channels: 8}
  stages:
    - {depth: DEPTH, channels: 8}
    - {depth: 3, channels: 16, stride: 2}
residual: {kinds: [identity, projection, gated], span: {int: [1, 2]}, count: {int: [0, 10]}, scope: stage}
search: {trials: 60, sampler: SAMPLER, seed: SEED}
"""
# (src, dst, kind): an identity over blocks 0-1, a gate around block 3, a projection over blocks 4-5.
TARGET = {(0, 2, "identity"), (3, 4, "gated"), (4, 6, "projection")}
BUDGET = 150


def space_for(sampler: str, seed: int = 0, depth: str = "3"):
    return parse_space(SPEC.replace("SAMPLER", sampler).replace("SEED", str(seed)).replace("DEPTH", depth))


def score(arch) -> int:
    return len(TARGET & {(c.src, c.dst, c.kind) for c in arch.connections})


def trials_to_optimum(sampler: str, seed: int) -> int:
    space = space_for(sampler, seed)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(space, BUDGET, seed))
    for n in range(BUDGET):
        trial = study.ask()
        value = score(sample(space, trial).architecture)
        study.tell(trial, value)
        if value == len(TARGET):
            return n + 1
    return BUDGET + 1  # not reached: counts as worse than any reached


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.slow
def test_tpe_and_evolution_find_a_planted_optimum_in_half_the_trials_of_random():
    median = {
        s: statistics.median(trials_to_optimum(s, seed) for seed in range(20)) for s in ("random", "tpe", "evolution")
    }
    assert median["tpe"] <= median["random"] / 2, median
    assert median["evolution"] <= median["random"] / 2, median


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
@pytest.mark.parametrize("depth", ["3", "{int: [2, 3]}"])
def test_relative_search_space_holds_the_connection_parameters(sampler, depth):
    space = space_for(sampler, depth=depth)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(space, 40))
    for _ in range(20):
        trial = study.ask()
        study.tell(trial, score(sample(space, trial).architecture))
    relative = study.sampler.infer_relative_search_space(study, study.trials[-1])
    asked_always = set.intersection(*(set(t.params) for t in study.trials))
    connections = {n for n in asked_always if n.startswith("residual.s")}
    # every placement that every trial was asked (all of them at a fixed depth) is modelled
    assert len(connections) >= (10 if depth == "3" else 8)
    assert connections <= set(relative), connections - set(relative)


def test_evolution_children_differ_from_their_parent_by_one_mutation():
    space = space_for("evolution")
    study = optuna.create_study(direction="maximize", sampler=make_sampler(space, 40))
    lineage = {}
    for _ in range(30):
        trial = study.ask()
        info = study.sampler.lineage(trial.number)
        value = score(sample(space, trial).architecture)
        study.tell(trial, value)
        if info is not None:
            lineage[trial.number] = info
    assert len(lineage) == 20  # the first 10 (the population) are drawn at random
    for number, info in lineage.items():
        parent, child = study.trials[info["parent"]].params, study.trials[number].params
        changed = {n for n in child if child[n] != parent.get(n)}
        assert 1 <= len(changed) <= 2, (info, changed)  # a move changes two placements
        assert info["mutation"].split()[0] in ("add", "remove", "move", "kind", "span")


@pytest.mark.parametrize(
    "bad, where",
    [
        ("evolution: {population: 1}", "population"),
        ("evolution: {population: 5, sample_size: 6}", "sample_size"),
        ("evolution: {mutation: {connection: 0, network: 0, train: 0}}", "mutation"),
        ("evolution: {mutation: {connection: -1}}", "connection"),
    ],
)
def test_evolution_options_out_of_range_are_spec_errors(bad, where):
    text = SPEC.replace("SAMPLER", "evolution").replace("SEED", "0").replace("DEPTH", "3")
    text = text.replace("sampler: evolution,", f"sampler: evolution, {bad},")
    with pytest.raises(SpecError) as err:
        parse_space(text, "s.yaml")
    assert where in str(err.value) and "s.yaml:" in str(err.value)


def test_sampler_rejects_bad_options_from_python():
    with pytest.raises(ValueError):
        RegularizedEvolutionSampler(population=4, sample_size=5)


@pytest.mark.slow
def test_evolution_with_two_workers_reads_the_shared_study(cli, tmp_path):
    from helpers import TINY, complete, load

    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        TINY.read_text().replace("sampler: random", "sampler: evolution, evolution: {population: 4, sample_size: 2}")
    )
    proc = cli("search", spec, "--trials", "12", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    done = complete(load(tmp_path))
    assert len(done) == 12 and len({t.user_attrs["pid"] for t in done}) == 2
    children = [t for t in done if "evolution" in t.user_attrs]
    assert children, "no trial was bred from the population"
    for t in children:  # each parent finished before its child was proposed
        assert t.user_attrs["evolution"]["parent"] < t.number
