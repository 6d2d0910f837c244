"""Build an ``Architecture`` into an ordinary ``torch.nn.Module``.

The builder never sees a choice and never re-validates: the architecture is trusted.
Module names are part of the interface (exported code has the same ``state_dict`` keys).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from resnas.arch import Architecture, Connection
from resnas.nn.blocks import block_class
from resnas.nn.layers import get_act_layer, make_conv, make_norm
from resnas.nn.skips import GatedShortcut, IdentityShortcut, PadShortcut, ProjectionShortcut


def make_shortcut(arch: Architecture, conn: Connection) -> nn.Module:
    cin, cout = arch.channels_at(conn.src), arch.channels_at(conn.dst)
    stride = arch.stride_between(conn.src, conn.dst)
    if conn.kind == "identity":
        return IdentityShortcut()
    if conn.kind == "projection":
        return ProjectionShortcut(arch.kind, cin, cout, stride, arch.norm)
    if conn.kind == "pad":
        return PadShortcut(cin, cout, stride)
    if conn.kind == "gated":
        return GatedShortcut(
            arch.kind, cin, cout, stride, arch.norm, arch.gate_mode, conn.shortcut or "identity", arch.gate_bias_init
        )
    raise ValueError(f"unknown connection kind {conn.kind!r}")


class Stem(nn.Module):
    """conv-norm-act (and an optional max pool) for conv nets; flatten-linear-norm-act for mlp."""

    def __init__(self, arch: Architecture):
        super().__init__()
        # An mlp flattens its input: the stem's Linear takes every feature.
        in_channels = math.prod(arch.input_shape) if arch.kind == "mlp" else arch.input_shape[0]
        stem = arch.stem
        self.flatten = nn.Flatten() if arch.kind == "mlp" else None
        self.conv = make_conv(arch.kind, in_channels, stem.channels, stem.kernel, stem.stride, arch.norm == "none")
        self.norm = make_norm(arch.norm, arch.kind, stem.channels)
        self.act = get_act_layer(arch.activation)()
        pool = nn.MaxPool2d if arch.kind == "conv2d" else nn.MaxPool1d
        self.pool = pool(3, 2, 1) if stem.pool == "max" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten is not None:
            x = self.flatten(x)
        x = self.act(self.norm(self.conv(x)))
        return x if self.pool is None else self.pool(x)


class Head(nn.Module):
    """(pre order: the final norm and activation of ResNet v2), global pool, dropout, classifier."""

    def __init__(self, arch: Architecture):
        super().__init__()
        channels = arch.channels_at(arch.num_blocks)
        pre = arch.order == "pre"
        self.norm = make_norm(arch.norm, arch.kind, channels) if pre else None
        self.act = get_act_layer(arch.activation)() if pre else None
        if arch.kind == "mlp":
            self.pool = None
        elif arch.head_pool == "max":
            self.pool = nn.AdaptiveMaxPool2d(1) if arch.kind == "conv2d" else nn.AdaptiveMaxPool1d(1)
        else:
            self.pool = nn.AdaptiveAvgPool2d(1) if arch.kind == "conv2d" else nn.AdaptiveAvgPool1d(1)
        self.dropout = nn.Dropout(arch.head_dropout) if arch.head_dropout > 0 else None
        self.fc = nn.Linear(channels, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.act(self.norm(x))
        if self.pool is not None:
            x = torch.flatten(self.pool(x), 1)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)


class ResidualNetwork(nn.Module):
    """Stem, blocks b0..b(N-1), head. ``h[k]`` is the input of block k."""

    def __init__(self, arch: Architecture):
        super().__init__()
        act_layer = get_act_layer(arch.activation)
        self.stem = Stem(arch)
        self.blocks = nn.ModuleList()
        for k, block in enumerate(arch.blocks):
            shortcuts = {c.src: make_shortcut(arch, c) for c in arch.incoming(k)}
            cls = block_class(arch.kind, block.type)
            self.blocks.append(cls(arch.kind, block, arch.norm, arch.order == "pre", act_layer, shortcuts))
        self.head = Head(arch)
        if arch.init == "kaiming":
            init_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = [self.stem(x)]
        for block in self.blocks:
            h.append(block(h[-1], h))
        return self.head(h[-1])


def init_kaiming(model: nn.Module) -> None:
    """He et al. 2015 init for convs (fan_out, as torchvision's ResNet); norms to identity.

    Gate biases keep their ``bias_init``.
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d) and not name.endswith(".gate"):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build(arch: Architecture) -> ResidualNetwork:
    """The network an architecture describes, as an ordinary ``nn.Module``."""
    return ResidualNetwork(arch)
