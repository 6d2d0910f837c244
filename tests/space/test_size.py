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


def _enumerated(space) -> int:
    """The reference: every layout enumerated, its connection sets counted one by one."""
    import itertools

    from resnas.space._parse import layout_combos
    from resnas.space._size import _count_layout
    from resnas.space._values import discrete_values

    block = space.spec.network.block
    extra = len(discrete_values(block.activation)) * len(discrete_values(block.norm))
    return extra * sum(_count_layout(space, c) for c in itertools.product(*layout_combos(space.spec)[1]))


STAGED = """
name: staged
network:
  stem: {channels: {choice: [8, 16]}}
  block: {type: BLOCK, activation: {choice: [relu, gelu]}}
  stages:
    - {depth: {int: [1, 4]}, channels: {choice: [8, 16]}}
    - {depth: {int: [1, 3]}, channels: {choice: [16, 32]}, stride: {choice: [1, 2]}}
residual:
  kinds: KINDS
  span: {int: [1, 3]}
  count: COUNT
  on_shape_change: OSC
  gate: {mode: {choice: [shortcut, highway]}}
"""


@pytest.mark.parametrize("count", ["0", "{int: [0, 2]}", "{int: [2, 5]}", "{choice: [1, 4, 9]}", "all"])
@pytest.mark.parametrize(
    "kinds, osc, block",
    [
        ("[identity]", "projection", "basic"),
        ("[identity, projection, gated]", "pad", "bottleneck"),
        ("[pad, gated]", "forbid", "{choice: [basic, bottleneck]}"),
    ],
)
def test_stage_count_by_dynamic_programme_equals_enumeration(count, kinds, osc, block):
    text = STAGED.replace("COUNT", count).replace("KINDS", kinds).replace("OSC", osc).replace("BLOCK", block)
    space = parse_space(text)
    size = space_size(space)
    assert size.exact
    assert size.architectures == _enumerated(space) > 0


def test_deep_ranges_are_counted_exactly_without_enumeration():
    # 10**6 layouts of up to 2,000 blocks: enumeration ran past 240 s; the count is polynomial.
    space = parse_space(
        "name: deep\nnetwork:\n  stages:\n    - {depth: {int: [1, 1000]}, channels: 16}\n"
        "    - {depth: {int: [1, 1000]}, channels: 32, stride: 2}\n"
        "residual: {kinds: [identity, projection, gated], span: {int: [1, 8]}, count: {int: [0, 4]}}\n"
    )
    size = space_size(space)
    assert size.exact and str(size) == "2.804e+22"


def test_huge_counts_give_a_lower_bound_that_says_so():
    space = parse_space(
        "name: deep\nnetwork:\n  stages:\n    - {depth: {int: [1, 50]}, channels: 16}\n"
        "residual: {span: {int: [1, 4]}, count: {int: [0, 1000]}}\n"
    )
    size = space_size(space)
    assert size.lower_bound and not size.exact
    assert str(size).startswith("more than ")
