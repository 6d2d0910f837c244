"""The exported module runs the builder's in-place operations: the same ReLUs in place, the
same sums written into the block's output, and outputs, gradients and batch-norm statistics
identical to the bit, on architectures sampled from every shipped space."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import SPACES, TINY
from torch import nn

from resnas import build, load_space, sample
from resnas.export import export_source


def sampled() -> list[tuple[str, object]]:
    out = []
    for spec in [*SPACES, TINY]:
        space = load_space(spec)
        seeds = [0] if space.spec.search.trials == 1 else range(5)
        out += [(f"{spec.stem}_{seed}", sample(space, seed).architecture) for seed in seeds]
    return out


ARCHS = sampled()


def exported(arch, name: str) -> nn.Module:
    namespace: dict = {}
    exec(compile(export_source(arch, "Net"), f"{name}.py", "exec"), namespace)
    return namespace["build"]()


def relus(model: nn.Module) -> dict[str, bool]:
    return {name: m.inplace for name, m in model.named_modules() if isinstance(m, nn.ReLU)}


def step(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """A train-mode forward and backward, then an eval forward: everything they produce."""
    model.train()
    x = x.clone().requires_grad_(True)
    torch.manual_seed(0)  # the same DropPath masks and dropout
    out = model(x)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    result = {"output": out.detach(), "input grad": x.grad}
    result |= {f"{name} grad": p.grad for name, p in model.named_parameters()}
    result |= dict(model.named_buffers())
    model.eval()
    with torch.no_grad():
        result["eval output"] = model(x.detach())
    return result


def variants() -> list[tuple[str, object]]:
    """Each space's first architecture as a ReLU network, with and without a norm, pre and post
    order: where the activations may run in place and where they may not."""
    out = []
    for name, arch in ARCHS:
        if name.endswith("_0") and not any(b.type in ("dense", "transition") for b in arch.blocks):
            norms = ("layer",) if arch.kind == "transformer" else ("batch", "none")
            for norm in norms:
                for order in ("post", "pre"):
                    variant = dataclasses.replace(arch, activation="relu", norm=norm, order=order)
                    out.append((f"{name}_relu_{norm}_{order}", variant))
    return out


@pytest.mark.parametrize("name,arch", ARCHS + variants(), ids=[n for n, _ in ARCHS + variants()])
def test_exported_module_runs_in_place_as_the_built_one(name, arch):
    torch.manual_seed(0)
    built = build(arch)
    net = exported(arch, name)
    net.load_state_dict(built.state_dict())
    assert relus(net) == relus(built)
    shape = list(arch.input_shape)
    if len(shape) == 3 and shape[-1] > 32:
        shape = [shape[0], 32, 32]
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    got, want = step(net, x), step(built, x)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if value is None:
            assert got[key] is None, f"{name}: {key}"
        else:  # to the bit (a NaN of a diverging variant equals a NaN)
            torch.testing.assert_close(got[key], value, rtol=0, atol=0, equal_nan=True, msg=f"{name}: {key}")


def test_resnet20_export_adds_into_the_block_output():
    arch = sample(load_space(next(p for p in SPACES if p.stem == "cifar_resnet20")), 0).architecture
    source = export_source(arch)
    assert "return add_into(out, h)" in source
    assert "return add_into(out, pad_shortcut(h, self.stride, self.extra_channels))" in source
    assert source.count("nn.ReLU(inplace=True)") == 2 and "nn.ReLU()" not in source  # the block's and the stem's
