"""500 samples from every shipped spec: each obeys its spec, builds, runs forward and backward;
a parameter name means the same structural placement in every sample that asks it."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from helpers import SPACES, assert_obeys_spec

from resnas import Architecture, build, load_space, sample
from resnas.space import FixedSuggester, RandomSuggester
from resnas.space._values import discrete_values

N_SAMPLES = 500


def input_for(arch: Architecture, batch: int = 2) -> torch.Tensor:
    shape = list(arch.input_shape)
    if arch.kind == "conv2d" and shape[-1] > 64:
        shape = [shape[0], 64, 64]  # ImageNet-shaped presets: a smaller image runs the same graph
    return torch.randn(batch, *shape)


@pytest.mark.parametrize("spec", SPACES, ids=lambda p: p.stem)
def test_samples_obey_spec_build_and_train(spec):
    space = load_space(spec)
    seen: dict[str, Architecture] = {}
    for seed in range(N_SAMPLES):
        arch = sample(space, seed).architecture
        assert_obeys_spec(space, arch)
        again = Architecture.from_json(arch.to_json())
        assert again == arch and again.fingerprint == arch.fingerprint
        seen.setdefault(arch.fingerprint, arch)
    budget = 3 if math.prod(space.input_shape) > 10_000 else 25  # building is the slow part
    for arch in list(seen.values())[:budget]:
        model = build(arch)
        x = input_for(arch)
        out = model(x)
        assert out.shape == (x.shape[0], arch.num_classes)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_same_parameters_same_architecture():
    space = load_space("search_spaces/digits_cnn.yaml")
    for seed in range(20):
        rs = RandomSuggester(seed)
        first = sample(space, rs)
        replay = sample(space, FixedSuggester(rs.params))
        assert replay == first


def test_optuna_trial_sampling_uses_yaml_paths_and_is_conditional():
    space = load_space("search_spaces/digits_cnn.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    names: set[str] = set()
    for _ in range(30):
        trial = study.ask()
        cand = sample(space, trial)
        study.tell(trial, 0.0)
        assert_obeys_spec(space, cand.architecture)
        assert sample(space, FixedSuggester(trial.params)) == cand
        asked = {n: v for n, v in trial.params.items() if n.startswith("residual.s")}
        # every placement the drawn layout offers is asked, once
        assert len(asked) == len(placements_of(space, cand.architecture))
        names |= set(trial.params)
    assert {"network.stages[0].depth", "network.stages[1].channels", "train.lr", "residual.s0b0-s0b0"} <= names
    assert not any(n.startswith("residual.connections") or n == "residual.count" for n in names)


def test_fingerprint_changes_with_the_network():
    import dataclasses

    space = load_space("search_spaces/adaptive.yaml")
    arch = next(a for a in (sample(space, s).architecture for s in range(50)) if len(a.connections) >= 2)
    variants = [
        dataclasses.replace(arch, activation="gelu"),
        dataclasses.replace(arch, norm="group"),
        dataclasses.replace(arch, order="pre"),
        dataclasses.replace(arch, num_classes=11),
        dataclasses.replace(arch, blocks=arch.blocks[:-1]),
        dataclasses.replace(arch, connections=arch.connections[1:]),
        dataclasses.replace(arch, head_dropout=0.5),
    ]
    prints = {v.fingerprint for v in variants} | {arch.fingerprint}
    assert len(prints) == len(variants) + 1
    # Connection order in the value does not matter: the merge order is canonical.
    shuffled = dataclasses.replace(arch, connections=tuple(reversed(arch.connections)))
    assert shuffled.fingerprint == arch.fingerprint


def placements_of(space, arch: Architecture) -> dict[str, tuple[int, int]]:
    """Parameter name -> (src, dst) for every placement this architecture's layout offers."""
    from resnas.space._layout import placement_name, placements
    from resnas.space._parse import rules_of

    blocks = list(arch.blocks)
    return {
        placement_name(blocks, p.src, p.dst): (p.src, p.dst)
        for p in placements(arch.stem.channels, blocks, rules_of(space.spec))
    }


def structural(arch: Architecture, src: int, dst: int) -> tuple:
    """A placement as (stage, index in stage) of the first and the last block it jumps over."""

    def where(k: int) -> tuple[int, int]:
        stage = arch.blocks[k].stage
        return stage, sum(1 for b in arch.blocks[:k] if b.stage == stage)

    return where(src), where(dst - 1)


@pytest.mark.parametrize("spec", SPACES, ids=lambda p: p.stem)
def test_a_parameter_name_is_the_same_placement_in_every_sample(spec):
    space = load_space(spec)
    meaning: dict[str, tuple] = {}
    for seed in range(100):
        rs = RandomSuggester(seed)
        arch = sample(space, rs).architecture
        names = placements_of(space, arch)
        for name, (src, dst) in names.items():
            assert meaning.setdefault(name, structural(arch, src, dst)) == structural(arch, src, dst), name
        asked_on = {names[n] for n, v in rs.params.items() if n in names and v != "none"}
        on = {(c.src, c.dst) for c in arch.connections}
        count = space.spec.residual.count
        if count == "all" or len(asked_on) in discrete_values(count):
            # no count repair needed: the connections are exactly the placements switched on
            assert on == (set(names.values()) if count == "all" else asked_on)
    assert len(meaning) > 0 or space.spec.residual.count in (0, "all")
