"""200 samples of each searched spec of the newer residual families obey their spec, build,
export to the same function, and run forward and backward."""

from __future__ import annotations

import types

import pytest
import torch

from resnas import build, load_space, sample
from resnas.export import export_source
from resnas.space._layout import placements
from resnas.space._parse import rules_of
from resnas.space._values import FloatRange, IntRange, discrete_values

SPECS = ["mnist1d_transformer", "resnext_digits"]


def exported(arch) -> torch.nn.Module:
    module = types.ModuleType("exported")
    exec(compile(export_source(arch, "Net"), "exported.py", "exec"), module.__dict__)
    return module.build()


def obeys(space, arch) -> None:
    spec = space.spec
    res, net = spec.residual, spec.network
    valid = {(p.src, p.dst): p.kinds for p in placements(arch.stem.channels, list(arch.blocks), rules_of(spec))}
    count = res.count
    low, high = (count.low, count.high) if isinstance(count, IntRange) else (count, count)
    assert low <= len(arch.connections) <= min(high, len(valid))
    for c in arch.connections:
        assert c.span in discrete_values(res.span) and c.merge in discrete_values(res.merge)
        assert (c.src, c.dst) in valid
        if c.merge == "concat":  # carries h unchanged, at one spatial size
            assert (c.kind, c.shortcut) == ("identity", None) and arch.stride_between(c.src, c.dst) == 1
        else:
            assert (c.kind, c.shortcut) in valid[(c.src, c.dst)]
    connected = bool(arch.connections)
    assert arch.branch_scale in (discrete_values(res.branch_scale) if connected else ["none"])
    drop = spec.train.drop_path
    assert drop.low <= arch.drop_path <= drop.high if connected and isinstance(drop, FloatRange) else True
    if not connected:
        assert arch.drop_path == 0.0
    depths = discrete_values(net.stages[0].depth)
    if net.kind == "transformer":
        layers = len(arch.blocks) // 2
        assert [b.type for b in arch.blocks] == ["attention", "feedforward"] * layers and layers in depths
        assert all(b.heads == net.block.heads and b.in_channels % b.heads == 0 for b in arch.blocks[::2])
    else:
        assert all(b.type == "bottleneck" and b.groups == net.block.groups for b in arch.blocks)
        assert all(b.width % b.groups == 0 for b in arch.blocks)


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS)
def test_200_samples_obey_build_export_and_train(name):
    space = load_space(f"search_spaces/{name}.yaml")
    seen_scales, seen_drop, merges = set(), 0, set()
    for seed in range(200):
        arch = sample(space, seed).architecture
        obeys(space, arch)
        seen_scales.add(arch.branch_scale)
        seen_drop += arch.drop_path > 0
        merges |= {c.merge for c in arch.connections}
        torch.manual_seed(seed)
        model = build(arch)
        x = torch.randn(2, *arch.input_shape)
        loss = model(x).logsumexp(1).sum()
        loss.backward()
        assert torch.isfinite(loss) and model.head.fc.weight.grad is not None
        copy = exported(arch)
        assert sorted(copy.state_dict()) == sorted(model.state_dict())
        copy.load_state_dict(model.state_dict())
        model.eval(), copy.eval()
        with torch.no_grad():
            torch.testing.assert_close(copy(x), model(x), rtol=0, atol=0)
    # The search reaches every branch scale and merge, and drops paths.
    assert seen_scales == set(discrete_values(space.spec.residual.branch_scale)) and seen_drop > 50
    assert merges == {"add", "concat"}
