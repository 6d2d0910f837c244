"""Residual connections: each merges a carried activation ``h`` into a block's output.

``forward(out, h)`` returns the merged tensor, so the merge is visible in one line.

The additive connections take ``inplace``: the network builder sets it where ``out`` is the
block's own new tensor (see ``resnas.nn.blocks.merges_in_place``), and the sum is then written
into ``out`` as torchvision's ``out += identity``. The one-shot supernet, which feeds one
``out`` to several candidates, keeps the default, False.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnas.nn.layers import family, make_conv, make_norm


def pad_shortcut(h: torch.Tensor, stride: int, extra_channels: int) -> torch.Tensor:
    """He et al. 2016 "option A": strided subsampling and zero channels, no parameters."""
    if stride > 1:
        h = h[:, :, ::stride, ::stride] if h.dim() == 4 else h[:, :, ::stride]
    if extra_channels:
        pad = [0, 0] * (h.dim() - 2) + [0, extra_channels]
        h = F.pad(h, pad)
    return h


def add_into(out: torch.Tensor, s: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``out + s``; with ``inplace``, written into ``out`` when that gives the same tensor: the
    same dtype (under autocast a bfloat16 branch plus a float32 carried path is float32, which
    ``out`` cannot hold) and the same shape (no broadcast of ``out``)."""
    if inplace and out.dtype == s.dtype and out.shape == s.shape:
        return out.add_(s)
    return out + s


class IdentityShortcut(nn.Module):
    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return add_into(out, h, self.inplace)


class ProjectionShortcut(nn.Module):
    """``norm(conv1x1(h))``: torchvision's ``downsample``."""

    def __init__(self, kind: str, cin: int, cout: int, stride: int, norm: str, inplace: bool = False):
        super().__init__()
        self.inplace = inplace
        self.conv = make_conv(kind, cin, cout, 1, stride, bias=norm == "none")
        self.norm = make_norm(norm, kind, cout)

    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return add_into(out, self.norm(self.conv(h)), self.inplace)


class PadShortcut(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, inplace: bool = False):
        super().__init__()
        self.inplace = inplace
        self.stride = stride
        self.extra_channels = cout - cin

    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return add_into(out, pad_shortcut(h, self.stride, self.extra_channels), self.inplace)


class GatedShortcut(nn.Module):
    """A learned gate ``t = sigmoid(G(h))`` on the carried path.

    mode ``shortcut``: ``out + t * S(h)``; mode ``highway``: ``t * out + (1 - t) * S(h)``
    (Srivastava et al. 2015). S is identity, a projection (``conv``/``norm``) or padding.
    ``inplace`` adds into ``out`` in mode ``shortcut``; a highway makes a new tensor anyway.
    """

    def __init__(
        self,
        kind: str,
        cin: int,
        cout: int,
        stride: int,
        norm: str,
        mode: str,
        shortcut: str,
        bias_init: float,
        inplace: bool = False,
    ):
        super().__init__()
        self.mode = mode
        self.inplace = inplace
        self.gate = make_conv(kind, cin, cout, 1, stride, bias=True)
        nn.init.constant_(self.gate.bias, bias_init)
        self.conv = make_conv(kind, cin, cout, 1, stride, bias=norm == "none") if shortcut == "projection" else None
        self.norm = make_norm(norm, kind, cout) if shortcut == "projection" else None
        self.stride = stride if shortcut == "pad" else 1
        self.extra_channels = cout - cin if shortcut == "pad" else 0

    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(h))
        s = self.norm(self.conv(h)) if self.conv is not None else pad_shortcut(h, self.stride, self.extra_channels)
        if self.mode == "highway":
            return t * out + (1 - t) * s
        return add_into(out, t * s, self.inplace)


class ConcatShortcut(nn.Module):
    """Concatenates h in front of the block's new channels (DenseNet, Huang et al. 2017):
    the output carries every earlier feature map unchanged."""

    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, out], 1)


class FusedConcatShortcut(nn.Module):
    """Concatenates h with the output of a block of fixed width, then fuses them back to that
    width: ``norm(conv1x1([h, out]))`` (Linear for mlp and transformer features)."""

    def __init__(self, kind: str, cin: int, cout: int, norm: str):
        super().__init__()
        self.dim = -1 if family(kind) == "mlp" else 1
        self.fuse = make_conv(kind, cin + cout, cout, 1, 1, bias=norm == "none")
        self.norm = make_norm(norm, kind, cout)

    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fuse(torch.cat([h, out], self.dim)))
