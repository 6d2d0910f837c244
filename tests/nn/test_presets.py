"""The language expresses the classic networks exactly, with no search."""

from __future__ import annotations

import dataclasses

import pytest

from resnas import build, load_space, sample


def params_of(spec: str, **residual) -> int:
    space = load_space(f"search_spaces/{spec}.yaml")
    arch = sample(space, 0).architecture
    return sum(p.numel() for p in build(arch).parameters())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032), ("cifar_resnet20", 269_722)],
)
def test_preset_parameter_counts(spec, expected):
    assert params_of(spec) == expected


def test_cifar_resnet20_with_projection_shortcuts():
    from resnas import parse_space

    text = (
        open("search_spaces/cifar_resnet20.yaml").read().replace("on_shape_change: pad", "on_shape_change: projection")
    )
    arch = sample(parse_space(text), 0).architecture
    assert sum(c.kind == "projection" for c in arch.connections) == 2
    assert sum(p.numel() for p in build(arch).parameters()) == 272_474


def test_plain_deep_has_no_connections():
    arch = sample(load_space("search_spaces/plain_deep.yaml"), 0).architecture
    assert arch.num_blocks >= 30 and arch.connections == ()
    assert dataclasses.replace(arch).fingerprint == arch.fingerprint
