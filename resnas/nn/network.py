"""Build an ``Architecture`` into an ordinary ``torch.nn.Module``.

The builder never sees a choice and never re-validates: the architecture is trusted.
Module names are part of the interface (exported code has the same ``state_dict`` keys).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from resnas.arch import Architecture, Connection
from resnas.nn.blocks import act_in_place, block_class, block_key, merges_in_place
from resnas.nn.layers import DropPath, Scale, get_act_layer, make_act, make_conv, make_norm, scale_shape_and_init
from resnas.nn.skips import (
    ConcatShortcut,
    FusedConcatShortcut,
    GatedShortcut,
    IdentityShortcut,
    PadShortcut,
    ProjectionShortcut,
)


def make_shortcut(arch: Architecture, conn: Connection, inplace: bool = False) -> nn.Module:
    """The module of ``conn``; ``inplace``: an additive one adds into the block's output
    (only for a block whose output nothing else reads, ``merges_in_place``)."""
    cin, cout = arch.channels_at(conn.src), arch.channels_at(conn.dst)
    if conn.merge == "concat":
        # A dense block's width grows by the concatenation; any other block keeps its width.
        if arch.blocks[conn.dst - 1].type == "dense":
            return ConcatShortcut()
        return FusedConcatShortcut(arch.kind, cin, cout, arch.norm)
    stride = arch.stride_between(conn.src, conn.dst)
    if conn.kind == "identity":
        return IdentityShortcut(inplace)
    if conn.kind == "projection":
        return ProjectionShortcut(arch.kind, cin, cout, stride, arch.norm, inplace)
    if conn.kind == "pad":
        return PadShortcut(cin, cout, stride, inplace)
    if conn.kind == "gated":
        shortcut = conn.shortcut or "identity"
        return GatedShortcut(
            arch.kind, cin, cout, stride, arch.norm, arch.gate_mode, shortcut, arch.gate_bias_init, inplace
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
        # Its input is a norm's output, or the conv's: nothing else reads it.
        self.act = make_act(arch.activation, inplace=True)
        pool = nn.MaxPool2d if arch.kind == "conv2d" else nn.MaxPool1d
        self.pool = pool(3, 2, 1) if stem.pool == "max" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten is not None:
            x = self.flatten(x)
        x = self.act(self.norm(self.conv(x)))
        return x if self.pool is None else self.pool(x)


class TokenStem(nn.Module):
    """A transformer's embedding: patches of ``kernel`` positions (pixels) -> tokens, a CLS token
    when the head pools by it, and learned position embeddings (ViT, Dosovitskiy et al. 2021)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        k, d = arch.stem.kernel, arch.stem.channels
        conv = nn.Conv2d if len(arch.input_shape) == 3 else nn.Conv1d
        self.conv = conv(arch.input_shape[0], d, k, stride=k)
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if arch.head_pool == "cls" else None
        self.pos = nn.Parameter(torch.zeros(1, token_count(arch), d))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        return x + self.pos


def token_count(arch: Architecture) -> int:
    """Tokens a transformer sees: one per patch, plus the CLS token."""
    k = arch.stem.kernel
    return math.prod(n // k for n in arch.input_shape[1:]) + (arch.head_pool == "cls")


class Head(nn.Module):
    """(pre order: the final norm and activation of ResNet v2), global pool, dropout, classifier."""

    def __init__(self, arch: Architecture):
        super().__init__()
        channels = arch.channels_at(arch.num_blocks)
        pre = arch.order == "pre"
        tokens = arch.kind == "transformer"
        self.norm = make_norm(arch.norm, arch.kind, channels) if pre else None
        # A pre-LN transformer ends with a norm alone (ViT); a v2 ResNet with norm and activation.
        # In place after a norm; without one its input is the last block's output, h[N].
        self.act = make_act(arch.activation, inplace=arch.norm != "none") if pre and not tokens else None
        if arch.kind == "mlp":
            self.pool = None
        elif tokens:
            self.pool = TokenPool(arch.head_pool)
        elif arch.head_pool == "max":
            self.pool = nn.AdaptiveMaxPool2d(1) if arch.kind == "conv2d" else nn.AdaptiveMaxPool1d(1)
        else:
            self.pool = nn.AdaptiveAvgPool2d(1) if arch.kind == "conv2d" else nn.AdaptiveAvgPool1d(1)
        self.dropout = nn.Dropout(arch.head_dropout) if arch.head_dropout > 0 else None
        self.fc = nn.Linear(channels, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        if self.pool is not None:
            x = torch.flatten(self.pool(x), 1)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)


class TokenPool(nn.Module):
    """(batch, tokens, features) -> (batch, features, 1): the CLS token, or the mean or max over tokens."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            x = x[:, 0]
        elif self.mode == "max":
            x = x.amax(1)
        else:
            x = x.mean(1)
        return x.unsqueeze(-1)


class ResidualNetwork(nn.Module):
    """Stem, blocks b0..b(N-1), head. ``h[k]`` is the input of block k."""

    def __init__(self, arch: Architecture):
        super().__init__()
        act_layer = get_act_layer(arch.activation)
        self.stem = TokenStem(arch) if arch.kind == "transformer" else Stem(arch)
        self.blocks = nn.ModuleList()
        rates = drop_path_rates(arch)
        for k, block in enumerate(arch.blocks):
            incoming = arch.incoming(k)
            key = block_key(arch.kind, block.type)
            shortcuts = {c.src: make_shortcut(arch, c, merges_in_place(key)) for c in incoming}
            cls = block_class(arch.kind, block.type)
            module = cls(arch.kind, block, arch.norm, arch.order == "pre", act_layer, shortcuts)
            if act_in_place(key, arch.order == "pre", arch.norm, arch.activation):
                module.act.inplace = True
            if arch.branch_scale != "none" and scaled(arch, k):
                module.scale = Scale(
                    *scale_shape_and_init(arch.branch_scale, arch.kind, block.out_channels, arch.num_blocks)
                )
            if rates[k] > 0:
                module.drop_path = DropPath(rates[k])
            self.blocks.append(module)
        self.head = Head(arch)
        if arch.init == "kaiming":
            init_kaiming(self)
        # Computed from the shortcuts, so a network that replaces them (the one-shot supernet) can redo it.
        self.free_after = free_after(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: list[torch.Tensor | None] = [self.stem(x)]
        for block, done in zip(self.blocks, self.free_after):
            h.append(block(h[-1], h))
            # Drop the inputs no later block reads: the forward holds only live ones.
            for k in done:
                h[k] = None
        return self.head(h[-1])


def free_after(blocks: nn.ModuleList) -> list[list[int]]:
    """For each block j, the h[k] that no block after j reads (block k reads its input
    h[k]; a connection from k is read by the block it ends at)."""
    last = list(range(len(blocks)))
    for j, block in enumerate(blocks):
        for source in block.shortcuts:
            k = int(source[1:])
            last[k] = max(last[k], j)
    done: list[list[int]] = [[] for _ in last]
    for k, reader in enumerate(last):
        done[reader].append(k)
    return done


def scaled(arch: Architecture, k: int) -> bool:
    """Branch scales and dropped paths sit on blocks that a connection adds into: with no
    connection a zero scale or a dropped branch would cut the network."""
    return any(c.merge == "add" for c in arch.incoming(k)) and arch.blocks[k].type != "dense"


def drop_path_rates(arch: Architecture) -> list[float]:
    """Linear decay over depth, as timm: block k of N gets ``drop_path * k / (N - 1)``."""
    n = arch.num_blocks
    return [arch.drop_path * k / max(n - 1, 1) if scaled(arch, k) else 0.0 for k in range(n)]


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
