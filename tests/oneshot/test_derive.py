"""Derivation: every derived architecture obeys its spec; a planted connection ranks first."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from helpers import ROOT, SPACES, assert_obeys_spec

from resnas import SpecError, build, parse_space
from resnas.oneshot import Importance, allowed_counts, build_supernet, check_supported, derive, importance
from resnas.oneshot._space import base_candidate
from resnas.oneshot._train import train_supernet
from resnas.space._model import OneShotSettings

HEADLINE = ROOT / "experiments" / "oneshot" / "headline.yaml"


def assert_obeys(space, arch, base, available: int, run: bool = False) -> None:
    """Checked from the spec's words, not from the placement list the derivation uses."""
    assert arch.blocks == base.blocks and arch.stem == base.stem
    assert_obeys_spec(space, arch, available)
    model = build(arch).eval()
    if run and math.prod(arch.input_shape) <= 4096:  # the ImageNet presets: building them is the check
        with torch.no_grad():
            assert model(torch.randn(2, *arch.input_shape)).shape == (2, arch.num_classes)


def random_importance(net, rng: np.random.Generator) -> Importance:
    place = [float(v) for v in rng.normal(0, 1, len(net.options))]
    kinds = [[float(v) for v in rng.normal(0, 1, len(k))] for k in net.kinds]
    return Importance({"perturbation": place, "magnitude": place}, {"perturbation": kinds, "magnitude": kinds}, 0.0, 1)


def accepted(space) -> bool:
    try:
        check_supported(space)
    except SpecError:
        return False
    return True


def derive_all(space, seed: int, draws: int = 2) -> None:
    net = build_supernet(space, seed)
    base = base_candidate(space).architecture
    rng = np.random.default_rng(seed)
    counts = allowed_counts(space, len(net.options))
    for _ in range(draws):
        imp = random_importance(net, rng)
        for selection in ("perturbation", "magnitude"):
            arch = derive(net, imp, selection, counts, space.spec.residual.gate.mode)
            assert_obeys(space, arch, base, len(net.options), run=selection == "magnitude")


SHIPPED = [p for p in [*SPACES, HEADLINE] if accepted(parse_space(p.read_text(), str(p)))]


def test_some_shipped_specs_are_accepted():
    names = {p.stem for p in SHIPPED}
    assert {"headline", "resnet18", "cifar_resnet20"} <= names
    assert "plain_deep" not in names  # count 0: nothing to place


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_spec_derivations_obey_the_spec(path):
    derive_all(parse_space(path.read_text(), str(path)), 0, draws=1)


def random_spec(rng: np.random.Generator) -> dict:
    kind = str(rng.choice(["conv2d", "conv1d", "mlp"]))
    stages = []
    for s in range(int(rng.integers(1, 4))):
        stage = {"depth": int(rng.integers(1, 4)), "channels": int(rng.choice([4, 8]))}
        if kind != "mlp" and s > 0:
            stage["stride"] = int(rng.choice([1, 2]))
        stages.append(stage)
    kinds = [str(k) for k in rng.permutation(["identity", "projection", "pad", "gated"])[: rng.integers(1, 5)]]
    lo = int(rng.integers(0, 3))
    count = "all" if rng.random() < 0.15 else {"int": [lo, lo + int(rng.integers(1, 6))]}
    span_hi = int(rng.integers(1, 5))
    data = {"dataset": "digits"} if kind == "conv2d" else {"dataset": "synthetic", "classes": 3}
    if kind != "conv2d":
        data["shape"] = [1, 12] if kind == "conv1d" else [12]
    return {
        "name": "random",
        "data": data,
        "network": {
            "kind": kind,
            "stem": {"channels": 4},
            "block": {"type": str(rng.choice(["plain", "mlp"] if kind == "mlp" else ["plain", "basic"]))},
            "stages": stages,
        },
        "residual": {
            "kinds": kinds,
            "span": {"int": [1, span_hi]},
            "count": count,
            "scope": str(rng.choice(["stage", "network"])),
            "on_shape_change": str(rng.choice(["projection", "pad", "forbid"])),
            "order": str(rng.choice(["post", "pre"])),
            "gate": {"mode": str(rng.choice(["shortcut", "highway"]))},
        },
    }


def random_spaces(seed: int, draws: int):
    """(index, space) for the random specs of ``draws`` that parse and the strategy accepts."""
    rng = np.random.default_rng(seed)
    for i in range(draws):
        try:
            space = parse_space(yaml.safe_dump(random_spec(rng)), f"random spec {i}")
        except SpecError:
            continue  # an unsatisfiable count, span longer than any stage...: the parser refuses it
        if accepted(space):
            yield i, space


def test_random_small_spec_derivations_obey_the_spec():
    tried = 0
    for i, space in random_spaces(12, 80):
        derive_all(space, i)
        tried += 1
    assert tried >= 25


PLANTED = """
name: planted
data: {dataset: synthetic, shape: [16], classes: 4, samples: 800}
network:
  kind: mlp
  stem: {channels: 32}
  block: {type: plain, activation: tanh, norm: none}
  stages: [{depth: 1, channels: 32}, {depth: 3, channels: 4}, {depth: 2, channels: 32}]
residual: {kinds: [identity], span: {choice: [1, 4]}, count: {int: [1, 3]}, scope: network, on_shape_change: forbid}
train: {epochs: 1, batch_size: 64, optimizer: adam, lr: 0.01, weight_decay: 0.0}
search: {seed: 0, oneshot: {epochs: 6, warmup: 2, arch_lr: 0.05}}
"""


@pytest.mark.parametrize("seed", [0, 1])
def test_perturbation_ranks_a_planted_connection_first(seed):
    """The middle stage (blocks b1..b3, 4 wide) is dead: zero, frozen weights, so its
    blocks pass nothing on. Identity connections cannot change width (forbid), so of the
    five placements (0->1, 2->3, 3->4, 5->6 of span 1 and 1->5 of span 4) only the span-4
    connection 1->5 carries the stem's features past it."""
    from resnas.data import load_data

    space = parse_space(PLANTED.replace("seed: 0", f"seed: {seed}"), "planted")
    net = build_supernet(space, seed)
    keys = [f"{p.src}->{p.dst}" for p in net.options]
    assert sorted(keys) == ["0->1", "1->5", "2->3", "3->4", "5->6"]
    for k in range(1, 4):
        for p in net.blocks[k].parameters():
            p.data.zero_()
            p.requires_grad_(False)
    data = load_data(space.spec.data, seed)
    settings = space.spec.search.oneshot
    train_supernet(net, data, base_candidate(space).train, settings, seed=seed, device=torch.device("cpu"))
    imp = importance(net, data.x_val, data.y_val)
    pert = imp.placement["perturbation"]
    ranked = sorted(range(len(keys)), key=lambda i: -pert[i])
    assert keys[ranked[0]] == "1->5", [(keys[i], round(pert[i], 4)) for i in ranked]
    assert pert[ranked[0]] > 0.3  # removing it costs most of what the network learned
    arch = derive(net, imp, "perturbation", allowed_counts(space, len(keys)), "shortcut")
    assert (1, 5) in {(c.src, c.dst) for c in arch.connections}


def test_oneshot_settings_defaults_are_consistent():
    s = OneShotSettings()
    assert 0 <= s.warmup < s.epochs and s.temperature[0] >= s.temperature[1] > 0


def supernets_of_random_specs(count: int):
    found = 0
    for i, space in random_spaces(7, 200):
        net = build_supernet(space, i)
        for a in net.alphas:
            a.data.normal_(0, 1)
        yield space, net
        found += 1
        if found == count:
            return


def test_fused_mixture_equals_the_kind_by_kind_mixture():
    """The supernet's fast mixture (one product per carried tensor) computes what the
    kind-by-kind sum does, outputs and architecture gradients, for every kind and merge."""
    kinds = set()
    for space, net in supernets_of_random_specs(12):
        x = torch.randn(3, *base_candidate(space).architecture.input_shape)
        torch.manual_seed(0)
        fast = net(x)
        grads = torch.autograd.grad(fast.sum(), net.alphas)
        for m in net.mixed:
            m.forward = m.reference
            kinds |= set(m.ops)
        slow = net(x)
        slow_grads = torch.autograd.grad(slow.sum(), net.alphas)
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
        for g, h in zip(grads, slow_grads):
            torch.testing.assert_close(g, h, rtol=1e-3, atol=1e-5)
    assert {"identity", "projection", "pad", "gated_identity"} <= kinds


def test_perturbation_from_the_changed_block_on_equals_full_passes():
    """Each perturbed pass recomputes only the blocks at and after the perturbed placement;
    its losses are those of whole passes, and measuring the kinds only where a placement
    could be kept derives the same architecture as measuring them everywhere."""
    from resnas.train import evaluate

    for space, net in supernets_of_random_specs(4):
        arch = base_candidate(space).architecture
        gen = torch.Generator().manual_seed(0)
        x, y = (
            torch.randn(40, *arch.input_shape, generator=gen),
            torch.randint(0, arch.num_classes, (40,), generator=gen),
        )
        full = importance(net, x, y, batch_size=16)
        assert full.evaluations == 1 + sum(1 + (len(k) if len(k) > 1 else 0) for k in net.kinds)
        base = evaluate(net, x, y)[1]
        assert full.base_val_loss == pytest.approx(base, abs=1e-5)
        for i, m in enumerate(net.mixed):
            m.removed = frozenset(m.ops)
            assert full.placement["perturbation"][i] == pytest.approx(evaluate(net, x, y)[1] - base, abs=1e-5)
            for k, name in enumerate(m.ops):
                m.removed = frozenset([name])
                if len(m.ops) > 1:
                    want = evaluate(net, x, y)[1] - base
                    assert full.kind["perturbation"][i][k] == pytest.approx(want, abs=1e-5)
            m.removed = frozenset()
        counts = allowed_counts(space, len(net.options))
        pruned = importance(net, x, y, counts=counts, batch_size=16)
        assert pruned.evaluations <= full.evaluations
        gate_mode = space.spec.residual.gate.mode
        assert derive(net, pruned, "perturbation", counts, gate_mode) == derive(
            net, full, "perturbation", counts, gate_mode
        )
