"""Gradient flow through a built network: does the gradient reach the first blocks?

On one batch, per block: the norm of the gradient of the block's own weights (its
residual branch, not its shortcuts) and the norm of the gradient of the loss with respect
to the block's input ``h[k]``. A deep plain network's gradient shrinks by a roughly
constant factor per block (Glorot & Bengio 2010; He et al. 2016, figure 1): the ratio of
the last block's weight-gradient norm to the first's grows exponentially with depth.
Residual connections carry the gradient back and keep it near 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GradientProfile:
    """Per-block gradient norms of one backward pass (block 0 first)."""

    weight: tuple[float, ...]  # ||dL/dW|| of each block's branch weights
    input: tuple[float, ...]  # ||dL/dh_k|| of each block's input
    loss: float

    @property
    def ratio(self) -> float:
        """Last block's weight-gradient norm over the first's: how much the gradient shrank
        on its way back from the last block to the first (1 = no loss; 1000 = vanished)."""
        if not self.weight:
            return math.nan
        first, last = self.weight[0], self.weight[-1]
        return last / first if first > 0 else math.inf

    def to_dict(self, digits: int = 4) -> dict:
        """A few rounded numbers: what a trial records."""

        def r(v: float) -> float:
            return float(f"{v:.{digits}g}") if math.isfinite(v) else v

        data = asdict(self)
        return {
            "weight": [r(v) for v in data["weight"]],
            "input": [r(v) for v in data["input"]],
            "loss": r(self.loss),
            "ratio": r(self.ratio),
        }

    @classmethod
    def from_dict(cls, data: dict) -> GradientProfile:
        return cls(tuple(data["weight"]), tuple(data["input"]), float(data.get("loss", math.nan)))


def branch_parameters(block: nn.Module) -> list[nn.Parameter]:
    """A block's own weights: everything but its shortcut modules."""
    return [p for name, p in block.named_parameters() if not name.startswith("shortcuts.")]


@contextmanager
def block_inputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While inside, every forward pass of ``model`` (a resnas network) keeps each block's
    input, with its gradient retained, in the yielded list (block 0 first)."""
    inputs: list[torch.Tensor] = []

    def keep_input(module: nn.Module, args: tuple) -> None:
        h = args[0]
        if h.requires_grad:
            h.retain_grad()
        inputs.append(h)

    handles = [b.register_forward_pre_hook(keep_input) for b in model.blocks]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def profile_of(model: nn.Module, inputs: list[torch.Tensor], loss: torch.Tensor) -> GradientProfile:
    """The profile of a backward pass of ``loss`` that has just run (``inputs`` from :func:`block_inputs`)."""
    weight = []
    for block in model.blocks:
        grads = [p.grad.detach().flatten() for p in branch_parameters(block) if p.grad is not None]
        weight.append(torch.cat(grads).norm().item() if grads else 0.0)
    input_norms = [h.grad.norm().item() if h.grad is not None else 0.0 for h in inputs]
    return GradientProfile(tuple(weight), tuple(input_norms), loss.item())


def gradient_profile(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> GradientProfile:
    """One forward and backward pass of ``model`` (a resnas network) on ``(x, y)``.

    The model's gradients are cleared afterwards; its weights and mode are unchanged.
    """
    model.zero_grad(set_to_none=True)
    with block_inputs(model) as inputs:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    profile = profile_of(model, inputs, loss)
    model.zero_grad(set_to_none=True)
    return profile


def diagnosis_batch(space, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch every diagnosis and score uses: the first ``size`` training samples of the
    spec's data (the split is fixed by the search seed, so every candidate sees the same batch)."""
    from resnas.data import load_data

    data = load_data(space.spec.data, space.spec.search.seed)
    return data.x_train[:size], data.y_train[:size]


def initial_model(arch, seed: int) -> nn.Module:
    """The network as a trial with this seed starts training it."""
    from resnas.nn import build

    torch.manual_seed(seed)
    return build(arch)


__all__ = [
    "GradientProfile",
    "block_inputs",
    "branch_parameters",
    "diagnosis_batch",
    "gradient_profile",
    "initial_model",
    "profile_of",
]
