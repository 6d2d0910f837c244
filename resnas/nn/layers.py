"""Small factories that turn the strings of an ``Architecture`` into layers (timm-style)."""

from __future__ import annotations

import math

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


def family(kind: str) -> str:
    """``conv2d`` / ``conv1d`` / ``mlp`` -> the layer family blocks are built from."""
    return "mlp" if kind == "mlp" else kind


def make_norm(name: str, kind: str, channels: int) -> nn.Module:
    """A norm over ``channels``; ``none`` gives ``nn.Identity`` so forward reads straight through."""
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


def make_conv(kind: str, cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = False) -> nn.Module:
    """A conv of ``kernel`` with 'same' padding, or a Linear for mlp networks."""
    if kind == "mlp":
        return nn.Linear(cin, cout, bias=bias)
    conv = nn.Conv2d if kind == "conv2d" else nn.Conv1d
    return conv(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)
