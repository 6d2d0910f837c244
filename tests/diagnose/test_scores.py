"""Every training-free score against a hand computation on a two-layer network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from resnas import scores

A, B, C, N = 5, 8, 3, 6  # inputs, hidden units, classes, samples


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(A, B, bias=False), nn.ReLU(), nn.Linear(B, C, bias=False)).double()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, A, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])


def hand_grads(net, x, y):
    """dL/dW1, dL/dW2 of mean cross-entropy, by the chain rule (no autograd)."""
    w1, w2 = net[0].weight.detach(), net[2].weight.detach()
    z = x @ w1.T
    h = z.clamp(min=0)
    logits = h @ w2.T
    p = torch.softmax(logits, 1)
    d_logits = (p - torch.eye(C, dtype=x.dtype)[y]) / len(y)
    g2 = d_logits.T @ h
    d_z = (d_logits @ w2) * (z > 0)
    g1 = d_z.T @ x
    return w1, w2, g1, g2


def test_grad_norm(net, batch):
    _, _, g1, g2 = hand_grads(net, *batch)
    assert scores.grad_norm(net, *batch) == pytest.approx((g1.norm() + g2.norm()).item(), rel=1e-9)


def test_snip(net, batch):
    w1, w2, g1, g2 = hand_grads(net, *batch)
    assert scores.snip(net, *batch) == pytest.approx(((w1 * g1).abs().sum() + (w2 * g2).abs().sum()).item(), rel=1e-9)


def test_synflow_is_twice_the_positive_path_sum_and_leaves_the_weights(net, batch):
    # With |W| and an all-ones input, relu passes everything: R = 1^T |W2| |W1| 1, and for a
    # bias-free two-layer net sum |W * dR/dW| = 2R (each path is counted once per layer).
    w1, w2 = net[0].weight.detach().clone(), net[2].weight.detach().clone()
    r = (w2.abs() @ w1.abs() @ torch.ones(A, dtype=torch.float64)).sum().item()
    assert scores.synflow(net, batch[0]) == pytest.approx(math.log10(2 * r), rel=1e-12)
    assert torch.equal(net[0].weight, w1) and torch.equal(net[2].weight, w2)


def test_synflow_does_not_overflow_on_a_deep_net():
    torch.manual_seed(0)
    deep = nn.Sequential(*[nn.Linear(64, 64) for _ in range(200)])  # float32 would overflow to inf
    value = scores.synflow(deep, torch.randn(2, 64))
    assert math.isfinite(value) and value > 38


def test_jacob_cov(net, batch):
    x = batch[0]
    w1, w2 = net[0].weight.detach(), net[2].weight.detach()
    # d(sum f)/dx_n = W1^T diag(z_n > 0) W2^T 1
    jac = np.stack(
        [(w1.T @ ((x[n] @ w1.T > 0).double() * (w2.T @ torch.ones(C, dtype=x.dtype)))).numpy() for n in range(N)]
    )
    corr = np.corrcoef(jac)
    v = np.linalg.eigvals(corr).real
    k = 1e-5
    expected = -np.sum(np.log(v + k) + 1 / (v + k))
    assert scores.jacob_cov(net, x) == pytest.approx(expected, rel=1e-6)


def test_naswot(net, batch):
    x = batch[0]
    c = (x @ net[0].weight.detach().T > 0).double()  # the codes the relu sees
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = np.linalg.slogdet(kernel.numpy())
    assert sign != 0
    assert scores.naswot(net, x) == pytest.approx(logdet, rel=1e-9)


def test_params_and_flops(net, batch):
    assert scores.params(net, batch[0]) == A * B + B * C
    # forward 2AB + 2BC; backward: dW2 2BC, dh 2BC, dW1 2AB (no gradient for the input)
    assert scores.flops(net.float(), batch[0].float()) == 4 * A * B + 6 * B * C


def test_grad_flow_ratio_against_manual_backprop():
    """A resnas mlp: stem, two plain tanh blocks, head; the block gradients by hand."""
    from resnas import Architecture, Block, Stem, build
    from resnas.diagnose import gradient_profile

    arch = Architecture(
        kind="mlp",
        input_shape=(A,),
        num_classes=C,
        stem=Stem(B),
        activation="tanh",
        norm="none",
        blocks=(Block("plain", B, B, B), Block("plain", B, B, B)),
    )
    torch.manual_seed(0)
    model = build(arch).double()
    x, y = torch.randn(N, A, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    w = [model.stem.conv.weight, model.blocks[0].fc.weight, model.blocks[1].fc.weight, model.head.fc.weight]
    b = [model.stem.conv.bias, model.blocks[0].fc.bias, model.blocks[1].fc.bias, model.head.fc.bias]
    w, b = [t.detach() for t in w], [t.detach() for t in b]
    h0 = torch.tanh(x @ w[0].T + b[0])
    h1 = torch.tanh(h0 @ w[1].T + b[1])
    h2 = torch.tanh(h1 @ w[2].T + b[2])
    p = torch.softmax(h2 @ w[3].T + b[3], 1)
    d_logits = (p - torch.eye(C, dtype=x.dtype)[y]) / N
    d_z2 = (d_logits @ w[3]) * (1 - h2**2)
    d_h1 = d_z2 @ w[2]
    d_z1 = d_h1 * (1 - h1**2)
    d_h0 = d_z1 @ w[1]
    block0 = math.hypot((d_z1.T @ h0).norm().item(), d_z1.sum(0).norm().item())
    block1 = math.hypot((d_z2.T @ h1).norm().item(), d_z2.sum(0).norm().item())
    profile = gradient_profile(model, x, y)
    assert profile.weight == pytest.approx((block0, block1), rel=1e-9)
    assert profile.input == pytest.approx((d_h0.norm().item(), d_h1.norm().item()), rel=1e-9)
    assert profile.ratio == pytest.approx(block1 / block0, rel=1e-9)
    assert scores.grad_flow(model, x, y) == pytest.approx(-abs(math.log10(block1 / block0)), rel=1e-9)


def test_zero_cost_scores_times_each_and_leaves_no_gradients(net, batch):
    values, ms = scores.zero_cost_scores(net, *batch, names=("grad_norm", "snip", "naswot"))
    assert set(values) == {"grad_norm", "snip", "naswot"}
    assert set(ms) == {"grad_norm", "naswot"} and all(v >= 0 for v in ms.values())  # one backward for both
    assert values["snip"] == pytest.approx(scores.snip(net, *batch), rel=1e-12)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("path", ["search_spaces/adaptive.yaml", "tests/data/tiny.yaml"])
def test_a_trials_shared_pass_gives_each_scores_own_value(path):
    """The diagnostics a trial records share one forward pass; every score and the gradient
    profile must be what its own function computes on the network as it starts training."""
    import optuna
    from helpers import ROOT

    from resnas.diagnose import diagnosis_batch, gradient_profile, initial_model
    from resnas.screening import SCORE_BATCH, candidate_diagnostics
    from resnas.space import load_space, sample

    space = load_space(str(ROOT / path))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    x, y = diagnosis_batch(space, SCORE_BATCH)
    for seed in range(3):
        candidate = sample(space, study.ask())
        record = candidate_diagnostics(space, candidate, seed)
        model = initial_model(candidate.architecture, seed)
        alone, _ = scores.zero_cost_scores(model, x, y)
        assert set(record["scores"]) == set(scores.SCORES)
        for name, value in alone.items():
            assert record["scores"][name] == pytest.approx(value, rel=1e-5, abs=1e-9), name
        profile = gradient_profile(initial_model(candidate.architecture, seed), x, y)
        assert record["grad_profile"] == profile.to_dict()
        assert record["score_ms"] > 0
