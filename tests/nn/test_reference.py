"""The classic residual block, hand-written, against the resnas-built network."""

from __future__ import annotations

import torch
from torch import nn

from resnas import build, parse_space, sample


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn, plus identity or a 1x1 conv + BN downsample, then relu."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Reference(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layers = nn.Sequential(
            ResidualBlock(16, 16), ResidualBlock(16, 16), ResidualBlock(16, 32, 2), ResidualBlock(32, 32)
        )
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


SPEC = """
name: classic
network:
  stem: {channels: 16}
  stages:
    - {depth: 2, channels: 16}
    - {depth: 2, channels: 32, stride: 2}
residual: {kinds: [identity], count: all, on_shape_change: projection}
"""


def translate(name: str) -> str:
    """A resnas state_dict key -> the reference's."""
    name = name.replace("stem.conv.", "conv1.").replace("stem.norm.", "bn1.").replace("head.fc.", "fc.")
    name = name.replace("blocks.", "layers.").replace("norm1", "bn1").replace("norm2", "bn2")
    return name.replace(".shortcuts.h2.conv.", ".downsample.0.").replace(".shortcuts.h2.norm.", ".downsample.1.")


def test_classic_block_reproduced_exactly():
    torch.manual_seed(0)
    model = build(sample(parse_space(SPEC), 0).architecture)
    reference = Reference()
    ours = model.state_dict()
    theirs = reference.state_dict()
    assert len(ours) == len(theirs)
    # Randomise every tensor (BN running stats too) so eval mode is a real check.
    with torch.no_grad():
        for value in ours.values():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5)
    reference.load_state_dict({translate(k): v for k, v in ours.items()})
    x = torch.randn(4, 1, 8, 8)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        getattr(reference, mode)()
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
