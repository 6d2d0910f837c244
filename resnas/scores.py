"""Training-free ("zero-cost") scores of an untrained network, from the papers.

Definitions follow NASLib's ``predictors/utils/pruners/measures`` (Abdelfattah et al. 2021,
"Zero-Cost Proxies for Lightweight NAS"; White et al. 2022), summed over the weights of
every convolution and linear layer:

- ``grad_norm``: sum over layers of ``||dL/dW||_2`` (cross-entropy on one batch).
- ``snip``: ``sum |W * dL/dW|`` (Lee et al. 2019, connection sensitivity).
- ``synflow``: ``sum |W * dR/dW|`` with ``R = sum(f_|W|(1))``: every weight made positive
  (the sign trick), an all-ones input, no data (Tanaka et al. 2020). Computed in float64
  on a copy in eval mode (batch norm becomes an affine map) so it does not overflow on
  deep networks; reported as ``log10`` because it grows exponentially with depth.
- ``jacob_cov``: ``-sum(log(v + k) + 1/(v + k))``, ``v`` the eigenvalues of the correlation
  matrix of the per-sample input Jacobians, ``k = 1e-5`` (Mellor et al. 2020, v1 of
  "Neural Architecture Search without Training").
- ``naswot``: ``log|det K|``, ``K = c c^T + (1 - c)(1 - c)^T``, ``c`` the binary codes of
  which units every activation sees positive (Mellor et al. 2021, ICML).
- ``grad_flow``: ``-|log10 r|``, ``r`` the last/first block gradient ratio of
  :mod:`resnas.diagnose` (0 is a perfectly flowing gradient).
- ``params`` and ``flops`` (forward + backward per sample, ``torch.utils.flop_counter``):
  NASLib's baselines, which correlate with accuracy about as well as most proxies.

For every score, higher predicts better accuracy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resnas.nn.layers import ACT_LAYERS

SCORES = ("grad_norm", "snip", "synflow", "jacob_cov", "naswot", "grad_flow", "params", "flops")


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]


def _backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def gradient_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """``grad_norm`` and ``snip`` from one backward pass."""
    _backward(model, x, y)
    scores = gradient_scores_of(model)
    model.zero_grad(set_to_none=True)
    return scores


def gradient_scores_of(model: nn.Module) -> dict[str, float]:
    """``grad_norm`` and ``snip`` of the gradients a backward pass of the loss left on ``model``."""
    layers = [m for m in weighted_layers(model) if m.weight.grad is not None]
    with torch.no_grad():
        norms = [m.weight.grad.norm() for m in layers]
        sensitivities = [(m.weight.grad * m.weight).abs().sum() for m in layers]
    return {
        "grad_norm": float(sum(t.item() for t in norms)),
        "snip": float(sum(t.item() for t in sensitivities)),
    }


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return gradient_scores(model, x, y)["grad_norm"]


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return gradient_scores(model, x, y)["snip"]


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """log10 of the synaptic flow, of the weights made positive, in float64 and eval mode; the
    model's own weights, buffers and gradients are not touched (its mode is restored)."""
    from torch.func import functional_call

    params = {n: p.detach().double().abs().requires_grad_(True) for n, p in model.named_parameters()}
    buffers = {n: b.double() if b.is_floating_point() else b for n, b in model.named_buffers()}
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    was_training = model.training
    model.eval()
    try:
        out = functional_call(model, {**params, **buffers}, (ones,), tie_weights=False)
    finally:
        model.train(was_training)
    layers = {id(m.weight) for m in weighted_layers(model)}
    wanted = [n for n, p in model.named_parameters() if id(p) in layers]
    grads = torch.autograd.grad(out.sum(), [params[n] for n in wanted], allow_unused=True)
    total = sum((params[n] * g).abs().sum().item() for n, g in zip(wanted, grads) if g is not None)
    return math.log10(total) if total > 0 else -math.inf


def jacobians(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-sample gradient of the summed output with respect to the input, flattened."""
    x = x.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    # The gradient of the sum is the all-ones backward; passing the ones tensor instead makes
    # autograd import sympy on first use (about a second per process).
    model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return x.grad.detach().reshape(len(x), -1)


def jacob_cov_of(jacob: np.ndarray, k: float = 1e-5) -> float:
    corrs = np.corrcoef(jacob)
    v = np.linalg.eigvalsh(corrs)  # symmetric: real eigenvalues (NASLib's eig gives the same)
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def jacob_cov(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    return jacob_cov_from(jacobians(model, x))


def jacob_cov_from(jacobian: torch.Tensor) -> float:
    """``jacob_cov`` of per-sample input Jacobians (``len(x)`` rows)."""
    jacob = jacobian.detach().reshape(len(jacobian), -1).double().cpu().numpy()
    with np.errstate(all="ignore"):
        score = jacob_cov_of(jacob)
    return score if math.isfinite(score) else -1e12  # a constant Jacobian (dead network) has no correlation


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    with activation_codes(model, len(x)) as kernel, torch.no_grad():
        model(x)
    return naswot_of(kernel)


@contextmanager
def activation_codes(model: nn.Module, n: int) -> Iterator[torch.Tensor]:
    """While inside, a forward pass of ``n`` samples adds the binary codes of every activation
    layer's input to the yielded kernel ``K`` (``naswot``'s)."""
    acts = tuple(ACT_LAYERS.values())
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def add_codes(module: nn.Module, args: tuple) -> None:
        c = (args[0].detach().reshape(n, -1) > 0).double().cpu()
        # Agreements of two codes, c·c' + (1-c)·(1-c)' = 2 c·c' + d - |c| - |c'|: one matrix
        # product instead of two; whole numbers, exact in float64, so the same kernel to the bit.
        ones = c.sum(1)
        kernel.add_(2 * (c @ c.t()) + c.shape[1] - ones[:, None] - ones[None, :])

    handles = [m.register_forward_pre_hook(add_codes) for m in model.modules() if isinstance(m, acts)]
    try:
        yield kernel
    finally:
        for h in handles:
            h.remove()


def naswot_of(kernel: torch.Tensor) -> float:
    return float(torch.linalg.slogdet(kernel)[1])


def grad_flow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    from resnas.diagnose import gradient_profile

    ratio = gradient_profile(model, x, y).ratio
    return -abs(math.log10(ratio)) if 0 < ratio < math.inf else -1e9


def params(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    from resnas.costs import count_params

    return float(count_params(model))


def flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    from resnas.costs import flops_per_sample

    return float(flops_per_sample(model, tuple(x.shape[1:]), x.device))


SCORE_FUNCTIONS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], float]] = {
    "grad_norm": grad_norm,
    "snip": snip,
    "synflow": synflow,
    "jacob_cov": jacob_cov,
    "naswot": naswot,
    "grad_flow": grad_flow,
    "params": params,
    "flops": flops,
}


def zero_cost_scores(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: tuple[str, ...] = SCORES
) -> tuple[dict[str, float], dict[str, float]]:
    """Every score in ``names`` on one batch, and the milliseconds each took.

    The model is left in train mode with its weights unchanged and no gradients.
    """
    model.train()
    scores, ms = {}, {}
    for name in names:
        if name in scores:
            continue
        start = time.perf_counter()
        if name in ("grad_norm", "snip"):  # one backward pass serves both
            both = gradient_scores(model, x, y)
            scores.update({k: v for k, v in both.items() if k in names})
        else:
            scores[name] = SCORE_FUNCTIONS[name](model, x, y)
        ms[name] = (time.perf_counter() - start) * 1000
        model.train()
    return scores, ms


__all__ = [
    "SCORES",
    "SCORE_FUNCTIONS",
    "activation_codes",
    "gradient_scores",
    "gradient_scores_of",
    "jacob_cov_from",
    "jacob_cov_of",
    "naswot_of",
    "zero_cost_scores",
    *SCORES,
]
