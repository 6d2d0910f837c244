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


def block_key(kind: str, block_type: str) -> str:
    """mlp networks build their ``plain`` blocks from Linear layers."""
    return "linear" if kind == "mlp" and block_type == "plain" else block_type


def block_class(kind: str, block_type: str) -> type[ResidualBlock]:
    return BLOCKS[block_key(kind, block_type)]


# In-place operations (torchvision's ``nn.ReLU(inplace=True)`` and ``out += identity``) save an
# allocation and a pass over memory each. An op may overwrite a tensor only if no one reads it
# afterwards: no later op of the forward (h[k] is read by every connection from k, by hooks
# that keep block inputs) and no autograd node that saved it for the backward. The outputs of
# conv, linear, pool, batch/layer/group norm layers are saved by no node (their backward needs
# their input), nor is a sum or a concatenation, and only the next op of the branch reads them.
# Blocks registered from outside are not in these sets: their ops stay out of place.

# Branches that end with a conv, linear, norm, pool or attention projection: a new tensor.
_FRESH_BRANCH = frozenset(
    {"basic", "bottleneck", "plain", "linear", "mlp", "dense", "transition", "attention", "feedforward"}
)
# Branches that start act(norm(x)) in pre order (dense and transition in either order).
_ACT_ON_NORMED_INPUT = frozenset({"basic", "bottleneck", "plain", "linear", "mlp"})


def merges_in_place(key: str) -> bool:
    """Whether a block's additive connections may add into ``out``, the branch's output.

    ``out`` is then a new tensor that no node saved; each in-place sum leaves it so (an add
    saves neither operand), and so do the merges that make a new tensor (a highway, a
    concatenation); ``Scale`` and ``DropPath`` multiply into a new tensor and save their
    inputs, not ``out``. The carried ``h[k]`` is only read, never written.
    """
    return key in _FRESH_BRANCH


def act_in_place(key: str, pre: bool, norm: str, activation: str) -> bool:
    """Whether a block's activation may overwrite its input (``nn.ReLU(inplace=True)``).

    ReLU's backward needs its output only. Every input a block's activation sees is a norm's
    output, a conv's or linear's, or (post order) the merged sum: a new tensor no node saved,
    except where the branch starts ``act(norm(x))`` without a norm (``nn.Identity``): that
    activation sees x, h[k] itself, and stays out of place. GELU and SiLU need their input.
    """
    if activation != "relu" or key not in _FRESH_BRANCH:
        return False
    on_input = key in ("dense", "transition") or (pre and key in _ACT_ON_NORMED_INPUT)
    return norm != "none" or not on_input


class ResidualBlock(nn.Module):
    """Base: ``forward(x, h)`` where ``h`` holds every earlier block input (``h[0]`` = stem output)."""

    def __init__(self, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]):
        super().__init__()
        self.pre = pre
        self.act = act_layer()
        # Keyed "h<source>", in merge order: state_dict keys read blocks.7.shortcuts.h5.conv.weight.
        self.shortcuts = nn.ModuleDict({f"h{src}": m for src, m in shortcuts.items()})
        # Set by the network builder on blocks a connection ends at (None: not used).
        self.scale: nn.Module | None = None
        self.drop_path: nn.Module | None = None

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """After the merge: the last activation (post order) or nothing (pre)."""
        return out if self.pre else self.act(out)

    def forward(self, x: torch.Tensor, h: list[torch.Tensor]) -> torch.Tensor:
        out = self.branch(x)
        if self.scale is not None:
            out = self.scale(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        for source, shortcut in self.shortcuts.items():
            out = shortcut(out, h[int(source[1:])])
        return self.finish(out)


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
    """1x1 reduce, 3x3 (with the stride: "ResNet v1.5", as torchvision), 1x1 expand.

    With ``groups`` > 1 the 3x3 conv is grouped: ResNeXt (Xie et al. 2017), as torchvision.
    """

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        bias = norm == "none"
        self.conv1 = make_conv(kind, block.in_channels, block.width, 1, 1, bias)
        self.norm1 = make_norm(norm, kind, block.in_channels if pre else block.width)
        self.conv2 = make_conv(kind, block.width, block.width, 3, block.stride, bias, block.groups)
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


@register_block("dense")
class DenseBlock(ResidualBlock):
    """DenseNet's layer (Huang et al. 2017, as torchvision's ``_DenseLayer``): norm-act-1x1 conv
    to ``width`` (bn_size * growth), norm-act-3x3 conv to ``growth`` new channels. Its span-1
    connection concatenates the input in front of them, so it outputs in + growth channels."""

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        growth = block.out_channels - block.in_channels
        self.norm1 = make_norm(norm, kind, block.in_channels)
        self.conv1 = make_conv(kind, block.in_channels, block.width, 1, 1, norm == "none")
        self.norm2 = make_norm(norm, kind, block.width)
        self.conv2 = make_conv(kind, block.width, growth, 3, 1, norm == "none")

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.norm1(x)))
        return self.conv2(self.act(self.norm2(out)))


@register_block("transition")
class TransitionBlock(ResidualBlock):
    """DenseNet's transition between dense stages: norm-act-1x1 conv (compression), average pool."""

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        self.norm = make_norm(norm, kind, block.in_channels)
        self.conv = make_conv(kind, block.in_channels, block.out_channels, 1, 1, norm == "none")
        pool = nn.AvgPool2d if kind == "conv2d" else nn.AvgPool1d
        self.pool = pool(block.stride, block.stride) if block.stride > 1 else None

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.act(self.norm(x)))
        return out if self.pool is None else self.pool(out)


@register_block("attention")
class AttentionBlock(ResidualBlock):
    """A transformer's self-attention sublayer on (batch, tokens, features).

    pre (pre-LN): ``x + attn(norm(x))``; post (post-LN, Vaswani et al. 2017): ``norm(x + attn(x))``,
    the norm standing where a conv block has its last activation. With a span-1 identity
    connection around it and the feedforward sublayer after it, the pair computes what
    ``nn.TransformerEncoderLayer(norm_first=pre)`` computes.
    """

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        self.norm = nn.LayerNorm(block.in_channels)
        self.attn = nn.MultiheadAttention(block.in_channels, block.heads, batch_first=True)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x) if self.pre else x
        return self.attn(y, y, y, need_weights=False)[0]

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.pre else self.norm(out)


@register_block("feedforward")
class FeedForwardBlock(ResidualBlock):
    """A transformer's MLP sublayer: Linear to ``width``, activation, Linear back (pre- or post-LN)."""

    def __init__(
        self, kind: str, block: Block, norm: str, pre: bool, act_layer: type[nn.Module], shortcuts: dict[int, nn.Module]
    ):
        super().__init__(pre, act_layer, shortcuts)
        self.norm = nn.LayerNorm(block.in_channels)
        self.fc1 = nn.Linear(block.in_channels, block.width)
        self.fc2 = nn.Linear(block.width, block.out_channels)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x) if self.pre else x
        return self.fc2(self.act(self.fc1(y)))

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.pre else self.norm(out)
