"""ResNeXt, DenseNet and transformer blocks built by resnas compute what the reference
implementations compute with the same weights."""

from __future__ import annotations

import re

import torch
from torch import nn
from torchvision_reference import DenseNet, ResNeXt

from resnas import build, load_space, sample


def randomised(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every floating tensor (BN running statistics too) drawn at random, so eval mode is a real check."""
    torch.manual_seed(1)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) * 0.2 + 0.9 if value.dim() <= 1 else torch.randn_like(value) * 0.05)
    return model.state_dict()


def assert_same_function(ours: nn.Module, reference: nn.Module, translate, x: torch.Tensor) -> None:
    state = randomised(ours)
    mapped = {translate(k): v for k, v in state.items()}
    assert sorted(mapped) == sorted(reference.state_dict())
    reference.load_state_dict(mapped)
    for mode in ("eval", "train"):  # eval first: train mode updates the BN statistics
        getattr(ours, mode)()
        getattr(reference, mode)()
        with torch.no_grad():
            torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def resnext_key(key: str, starts: list[int]) -> str:
    """resnas ``blocks.5.conv2.weight`` -> torchvision ``layer2.1.conv2.weight``."""
    key = key.replace("stem.conv.", "conv1.").replace("stem.norm.", "bn1.").replace("head.fc.", "fc.")
    match = re.match(r"blocks\.(\d+)\.(.*)", key)
    if not match:
        return key
    k, rest = int(match[1]), match[2]
    stage = max(s for s, first in enumerate(starts) if first <= k)
    rest = re.sub(r"norm(\d)", r"bn\1", rest)
    rest = re.sub(r"shortcuts\.h\d+\.conv\.", "downsample.0.", rest)
    rest = re.sub(r"shortcuts\.h\d+\.norm\.", "downsample.1.", rest)
    return f"layer{stage + 1}.{k - starts[stage]}.{rest}"


def densenet_key(key: str, blocks) -> str:
    """resnas ``blocks.7.conv1.weight`` -> torchvision ``features.denseblock2.denselayer1.conv1.weight``."""
    key = key.replace("stem.conv.", "features.conv0.").replace("stem.norm.", "features.norm0.")
    key = key.replace("head.norm.", "features.norm5.").replace("head.fc.", "classifier.")
    match = re.match(r"blocks\.(\d+)\.(.*)", key)
    if not match:
        return key
    k, rest = int(match[1]), match[2]
    block = blocks[k]
    if block.type == "transition":
        return f"features.transition{block.stage}.{rest}"
    layer = sum(1 for b in blocks[:k] if b.stage == block.stage and b.type == "dense") + 1
    return f"features.denseblock{block.stage + 1}.denselayer{layer}.{rest}"


def test_resnext50_32x4d_equals_torchvisions():
    arch = sample(load_space("search_spaces/resnext50_32x4d.yaml"), 0).architecture
    ours = build(arch)
    assert sum(p.numel() for p in ours.parameters()) == 25_028_904
    starts = [next(k for k, b in enumerate(arch.blocks) if b.stage == s) for s in range(4)]
    assert_same_function(ours, ResNeXt(), lambda k: resnext_key(k, starts), torch.randn(2, 3, 32, 32))


def test_densenet121_equals_torchvisions():
    arch = sample(load_space("search_spaces/densenet121.yaml"), 0).architecture
    ours = build(arch)
    assert sum(p.numel() for p in ours.parameters()) == 7_978_856
    assert all(c.merge == "concat" and c.span == 1 for c in arch.connections) and len(arch.connections) == 58
    assert_same_function(ours, DenseNet(), lambda k: densenet_key(k, arch.blocks), torch.randn(2, 3, 32, 32))
