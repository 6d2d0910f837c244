"""Hand-written baselines following torchvision's ``models/resnet.py`` (BasicBlock, ResNet),
and the translation of a resnas-built network's weights into them.

``resnet18()`` is torchvision's ResNet-18; ``resnet20()`` is its CIFAR form (He et al. 2016,
section 4.2: a 3x3 stem of 16 channels, three stages of 16, 32 and 64 channels, n = 3), with
torchvision's 1x1 conv + BN downsample where the shape changes.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from resnas import Architecture, build, parse_space, sample

RESNET20 = """
name: bench_resnet20
data: {dataset: synthetic, shape: [3, 32, 32], classes: 10, samples: 512}
network:
  stem: {channels: 16, kernel: 3}
  stages:
    - {depth: 3, channels: 16}
    - {depth: 3, channels: 32, stride: 2}
    - {depth: 3, channels: 64, stride: 2}
  init: kaiming
residual: {kinds: [identity], span: 1, count: all, scope: stage, on_shape_change: projection}
search: {trials: 1}
"""

RESNET18 = """
name: bench_resnet18
data: {dataset: synthetic, shape: [3, 64, 64], classes: 1000, samples: 64}
network:
  stem: {channels: 64, kernel: 7, stride: 2, pool: max}
  stages:
    - {depth: 2, channels: 64}
    - {depth: 2, channels: 128, stride: 2}
    - {depth: 2, channels: 256, stride: 2}
    - {depth: 2, channels: 512, stride: 2}
  init: kaiming
residual: {kinds: [identity], span: 1, count: all, scope: stage, on_shape_change: projection}
search: {trials: 1}
"""


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet with BasicBlocks; ``cifar`` swaps in a 3x3 stem without pooling."""

    def __init__(self, layers: list[int], widths: list[int], num_classes: int, cifar: bool):
        super().__init__()
        self.inplanes = widths[0]
        if cifar:
            self.conv1 = conv3x3(3, self.inplanes)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layers = nn.Sequential(
            *[self._make_layer(w, n, 1 if i == 0 else 2) for i, (w, n) in enumerate(zip(widths, layers))]
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20() -> ResNet:
    return ResNet([3, 3, 3], [16, 32, 64], 10, cifar=True)


def resnet18() -> ResNet:
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], 1000, cifar=False)


def architecture(name: str) -> Architecture:
    return sample(parse_space(RESNET20 if name == "resnet20" else RESNET18), 0).architecture


def pair(name: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(hand-written, resnas-built) with the same weights: the built net's, randomised BN stats."""
    arch = architecture(name)
    torch.manual_seed(seed)
    built = build(arch)
    with torch.no_grad():  # non-trivial BN statistics, so eval mode compares them too
        for key, value in built.state_dict().items():
            if "running" in key:
                value.uniform_(0.5, 1.5)
    hand = resnet20() if name == "resnet20" else resnet18()
    hand.load_state_dict(translate(built.state_dict(), arch))
    return hand, built


def translate(state: dict[str, torch.Tensor], arch: Architecture) -> dict[str, torch.Tensor]:
    """A resnas state_dict under the hand-written net's names."""
    stage_of, index, stage = [], {}, -1
    for k, block in enumerate(arch.blocks):
        stage += k == 0 or block.stride != 1  # every stage but the first starts with a stride
        index[stage] = index.get(stage, -1) + 1
        stage_of.append(f"layers.{stage}.{index[stage]}")
    out = {}
    for key, value in state.items():
        new = key.replace("stem.conv.", "conv1.").replace("stem.norm.", "bn1.").replace("head.fc.", "fc.")
        m = re.match(r"blocks\.(\d+)\.(.*)", new)
        if m:
            rest = re.sub(r"shortcuts\.h\d+\.conv\.", "downsample.0.", m.group(2))
            rest = re.sub(r"shortcuts\.h\d+\.norm\.", "downsample.1.", rest)
            new = f"{stage_of[int(m.group(1))]}.{rest.replace('norm1', 'bn1').replace('norm2', 'bn2')}"
        out[new] = value
    return out
