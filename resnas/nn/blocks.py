"""Block bodies. Each computes its residual branch F(x), merges the incoming connections
(in source order), then applies its last activation (``post``, ResNet v1) or not (``pre``,
ResNet v2, whose branch starts with norm and activation instead; He et al. 2016,
"Identity Mappings in Deep Residual Networks").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from resnas.arch import Block
from resnas.nn.layers import make_conv, make_norm

BLOCKS: dict[str, type[ResidualBlock]] = {}


def register_block(name: str) -> Callable[[type[ResidualBlock]], type[ResidualBlock]]:
    def add(cls: type[ResidualBlock]) -> type[ResidualBlock]:
        if name in BLOCKS:
            raise ValueError(f"block {name!r} is registered twice")
        BLOCKS[name] = cls
        return cls

    return add


def block_class(kind: str, block_type: str) -> type[ResidualBlock]:
    """mlp networks build their ``plain`` blocks from Linear layers."""
    return BLOCKS["linear" if kind == "mlp" and block_type == "plain" else block_type]


class ResidualBlock(nn.Module):
    """Base: ``forward(x, h)`` where ``h`` holds every earlier block input (``h[0]`` = stem output)."""

    def __init__(self, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]):
        super().__init__()
        self.pre = pre
        self.act = act_layer()
        # Keyed "h<source>", in merge order: state_dict keys read blocks.7.shortcuts.h5.conv.weight.
        self.shortcuts = nn.ModuleDict({f"h{src}": m for src, m in shortcuts.items()})

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, h: list[torch.Tensor]) -> torch.Tensor:
        out = self.branch(x)
        for source, shortcut in self.shortcuts.items():
            out = shortcut(out, h[int(source[1:])])
        return out if self.pre else self.act(out)


@register_block("basic")
class BasicBlock(ResidualBlock):
    """Two 3x3 convs (torchvision's BasicBlock); the stride is on the first."""

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        bias = norm == "none"
        self.conv1 = make_conv(kind, block.in_channels, block.width, 3, block.stride, bias)
        self.norm1 = make_norm(norm, kind, block.in_channels if pre else block.width)
        self.conv2 = make_conv(kind, block.width, block.out_channels, 3, 1, bias)
        self.norm2 = make_norm(norm, kind, block.width if pre else block.out_channels)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            out = self.conv1(self.act(self.norm1(x)))
            return self.conv2(self.act(self.norm2(out)))
        out = self.act(self.norm1(self.conv1(x)))
        return self.norm2(self.conv2(out))


@register_block("bottleneck")
class BottleneckBlock(ResidualBlock):
    """1x1 reduce, 3x3 (with the stride: "ResNet v1.5", as torchvision), 1x1 expand."""

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        bias = norm == "none"
        self.conv1 = make_conv(kind, block.in_channels, block.width, 1, 1, bias)
        self.norm1 = make_norm(norm, kind, block.in_channels if pre else block.width)
        self.conv2 = make_conv(kind, block.width, block.width, 3, block.stride, bias)
        self.norm2 = make_norm(norm, kind, block.width)
        self.conv3 = make_conv(kind, block.width, block.out_channels, 1, 1, bias)
        self.norm3 = make_norm(norm, kind, block.width if pre else block.out_channels)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            out = self.conv1(self.act(self.norm1(x)))
            out = self.conv2(self.act(self.norm2(out)))
            return self.conv3(self.act(self.norm3(out)))
        out = self.act(self.norm1(self.conv1(x)))
        out = self.act(self.norm2(self.conv2(out)))
        return self.norm3(self.conv3(out))


@register_block("plain")
class PlainBlock(ResidualBlock):
    """One 3x3 conv: the unit of a deep plain network."""

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        self.conv = make_conv(kind, block.in_channels, block.out_channels, 3, block.stride, norm == "none")
        self.norm = make_norm(norm, kind, block.in_channels if pre else block.out_channels)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            return self.conv(self.act(self.norm(x)))
        return self.norm(self.conv(x))


@register_block("linear")
class LinearBlock(ResidualBlock):
    """One Linear layer: the ``plain`` block of an mlp network."""

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        self.fc = nn.Linear(block.in_channels, block.out_channels, bias=norm == "none")
        self.norm = make_norm(norm, kind, block.in_channels if pre else block.out_channels)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            return self.fc(self.act(self.norm(x)))
        return self.norm(self.fc(x))


@register_block("mlp")
class MlpBlock(ResidualBlock):
    """Two Linear layers, as a transformer's MLP."""

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        bias = norm == "none"
        self.fc1 = nn.Linear(block.in_channels, block.width, bias=bias)
        self.norm1 = make_norm(norm, kind, block.in_channels if pre else block.width)
        self.fc2 = nn.Linear(block.width, block.out_channels, bias=bias)
        self.norm2 = make_norm(norm, kind, block.width if pre else block.out_channels)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            out = self.fc1(self.act(self.norm1(x)))
            return self.fc2(self.act(self.norm2(out)))
        out = self.act(self.norm1(self.fc1(x)))
        return self.norm2(self.fc2(out))
