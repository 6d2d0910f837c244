"""The space size is exact: it equals the number of distinct fingerprints sampling can reach."""

from __future__ import annotations

import pytest

from resnas import parse_space, sample, space_size

TINY = """
name: tiny
network:
  stages:
    - {depth: {int: [1, 2]}, channels: {choice: [8, 16]}}
    - {depth: 1, channels: 16, stride: 2}
residual:
  kinds: [identity, projection, gated]
  span: {int: [1, 2]}
  count: {int: [0, 2]}
  scope: network
  gate: {mode: {choice: [shortcut, highway]}}
"""


@pytest.mark.parametrize("extra", ["", "  on_shape_change: pad\n"])
def test_exact_size_matches_enumeration(extra):
    space = parse_space(TINY.replace("  scope: network\n", "  scope: network\n" + extra))
    size = space_size(space)
    assert size.exact
    reached = {sample(space, seed).architecture.fingerprint for seed in range(40_000)}
    assert len(reached) == size.architectures


def test_fixed_presets_are_one_architecture():
    from resnas import load_space

    assert space_size(load_space("search_spaces/resnet50.yaml")).architectures == 1
