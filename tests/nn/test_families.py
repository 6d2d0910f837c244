"""ResNeXt, DenseNet and transformer blocks built by resnas compute what the reference
implementations compute with the same weights."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torchvision_reference import DenseNet, ResNeXt

from resnas import build, load_space, parse_space, sample


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


TRANSFORMER = """
name: t
data: {dataset: synthetic, shape: [3, 10], classes: 4}
network:
  kind: transformer
  stem: {channels: 16, kernel: 1}
  block: {type: transformer, heads: 4, expansion: 3, activation: ACT, norm: layer}
  stages: [{depth: 2, channels: 16}]
  head: {pool: cls}
residual: {kinds: [identity], count: all, order: ORDER}
"""


@pytest.mark.parametrize(("order", "activation"), [("pre", "gelu"), ("post", "relu")])
def test_transformer_layer_equals_torchs_encoder_layer(order, activation):
    arch = sample(parse_space(TRANSFORMER.replace("ORDER", order).replace("ACT", activation)), 0).architecture
    assert [b.type for b in arch.blocks] == ["attention", "feedforward"] * 2
    assert [(c.src, c.dst) for c in arch.connections] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    model = build(arch).eval()
    randomised(model)
    torch.manual_seed(2)
    x = torch.randn(5, 11, 16)  # 10 tokens and the CLS token
    h = [x]
    for layer in range(2):
        attention, feedforward = model.blocks[2 * layer], model.blocks[2 * layer + 1]
        reference = nn.TransformerEncoderLayer(
            16, 4, 48, dropout=0.0, activation=activation, batch_first=True, norm_first=order == "pre"
        ).eval()
        reference.self_attn.load_state_dict(attention.attn.state_dict())
        reference.norm1.load_state_dict(attention.norm.state_dict())
        reference.linear1.load_state_dict(feedforward.fc1.state_dict())
        reference.linear2.load_state_dict(feedforward.fc2.state_dict())
        reference.norm2.load_state_dict(feedforward.norm.state_dict())
        # Gradients on: torch's fused inference path (a different kernel) is for no_grad only.
        expected = reference(h[-1])
        h.append(attention(h[-1], h))
        h.append(feedforward(h[-1], h))
        torch.testing.assert_close(h[-1], expected, rtol=0, atol=0)


CONNECTED = """
name: s
network:
  stem: {channels: 8}
  block: {type: plain, activation: tanh, norm: none}
  stages: [{depth: 5, channels: 8}]
residual: {kinds: [identity], count: all, order: pre, branch_scale: SCALE}
train: {drop_path: DROP}
"""


def connected(scale: str = "none", drop: float = 0.0):
    return sample(parse_space(CONNECTED.replace("SCALE", scale).replace("DROP", str(drop))), 0).architecture


def test_rezero_and_skipinit_start_every_block_as_its_identity_connection():
    x = torch.randn(4, 1, 8, 8)
    for scale in ("rezero", "skipinit"):
        model = build(connected(scale)).eval()
        with torch.no_grad():
            assert torch.equal(model(x), model.head(model.stem(x)))
        assert all(block.scale.weight.shape == () for block in model.blocks)


def test_layerscale_is_per_channel_and_small():
    model = build(connected("layerscale"))
    assert all(b.scale.weight.shape == (8, 1, 1) and torch.all(b.scale.weight == 0.1) for b in model.blocks)


def test_drop_path_decays_linearly_and_a_dropped_branch_passes_its_connection_through():
    arch = connected(drop=0.8)
    model = build(arch)
    assert [b.drop_path.p if b.drop_path else 0.0 for b in model.blocks] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    block = model.blocks[-1].train()
    x = torch.randn(256, 8, 8, 8)
    torch.manual_seed(0)
    out = block(x, [x] * 5)
    kept = x + block.branch(x) / 0.2  # timm: kept branches are scaled by 1 / (1 - p)
    dropped = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert 0.7 < dropped.float().mean() < 0.9
    torch.testing.assert_close(out[~dropped], kept[~dropped])
    block.eval()
    torch.testing.assert_close(block(x, [x] * 5), x + block.branch(x))


def test_architectures_without_the_new_options_keep_their_json():
    arch = sample(load_space("search_spaces/resnet18.yaml"), 0).architecture
    text = arch.to_json()
    assert not any(key in text for key in ('"groups"', '"heads"', '"merge"', '"branch_scale"', '"drop_path"'))
    assert type(arch).from_json(text) == arch
    dense = sample(load_space("search_spaces/densenet121.yaml"), 0).architecture
    assert type(dense).from_json(dense.to_json()) == dense and '"merge":"concat"' in dense.to_json()
