"""Small factories that turn the strings of an ``Architecture`` into layers (timm-style)."""

from __future__ import annotations

import math

import torch
from torch import nn

ACT_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def get_act_layer(name: str) -> type[nn.Module]:
    return ACT_LAYERS[name]


def make_act(name: str, inplace: bool = False) -> nn.Module:
    """The activation ``name``; ``inplace`` (ReLU only: the others' backward needs their input)
    overwrites its input, for a caller whose input nothing else reads."""
    return nn.ReLU(inplace=True) if inplace and name == "relu" else ACT_LAYERS[name]()


def family(kind: str) -> str:
    """``conv2d`` / ``conv1d`` / ``mlp`` / ``transformer`` -> the layer family blocks are built from.

    A transformer's tokens are (batch, tokens, features): its layers are an mlp's.
    """
    return "mlp" if kind in ("mlp", "transformer") else kind


def make_norm(name: str, kind: str, channels: int) -> nn.Module:
    """A norm over ``channels``; ``none`` gives ``nn.Identity`` so forward reads straight through."""
    kind = family(kind)
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm2d(channels) if kind == "conv2d" else nn.BatchNorm1d(channels)
    if name == "layer":
        # Over all non-batch dims for convs (GroupNorm with one group), over features for mlp.
        return nn.LayerNorm(channels) if kind == "mlp" else nn.GroupNorm(1, channels)
    if name == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ValueError(f"unknown norm {name!r}")


def make_conv(
    kind: str, cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = False, groups: int = 1
) -> nn.Module:
    """A conv of ``kernel`` with 'same' padding, or a Linear for mlp and transformer networks."""
    if family(kind) == "mlp":
        return nn.Linear(cin, cout, bias=bias)
    conv = nn.Conv2d if kind == "conv2d" else nn.Conv1d
    return conv(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias, groups=groups)


class Scale(nn.Module):
    """A learned scale on a residual branch.

    ``rezero`` (Bachlechner et al. 2020) and ``skipinit`` (De & Smith 2020): one scalar,
    initialised at 0, so every block starts as the identity of its connections.
    ``layerscale`` (Touvron et al. 2021, CaiT): one factor per channel, initialised at a
    small epsilon that shrinks with depth (0.1 up to 18 blocks, 1e-5 up to 24, 1e-6 beyond).
    """

    def __init__(self, shape: tuple[int, ...], init: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x


def scale_shape_and_init(mode: str, kind: str, channels: int, depth: int) -> tuple[tuple[int, ...], float]:
    """The shape and initial value of a :class:`Scale` on a branch of ``channels`` in a ``depth``-block net."""
    if mode == "layerscale":
        eps = 0.1 if depth <= 18 else 1e-5 if depth <= 24 else 1e-6
        # Channels first for convs: broadcast over the spatial dimensions.
        return (channels,) + (1,) * {"conv2d": 2, "conv1d": 1}.get(kind, 0), eps
    return (), 0.0


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016), as timm's ``drop_path``: per sample, the branch
    is dropped with probability ``p`` in training and the kept ones are scaled by ``1/(1-p)``."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)
