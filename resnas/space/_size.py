"""How many distinct architectures a spec describes."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from resnas.space._layout import placements
from resnas.space._parse import SearchSpace, combo_blocks, layout_combos, rules_of
from resnas.space._values import discrete_values

MAX_ENUMERATED = 50_000


@dataclass(frozen=True)
class SpaceSize:
    architectures: int
    exact: bool

    def __str__(self) -> str:
        n = f"{self.architectures:,}" if self.architectures < 10**15 else f"{self.architectures:.3e}"
        return n if self.exact else f"about {n} (estimated from a sample of layouts)"


def _subsets_by_size(weights: list[int], sizes: list[int] | None) -> int:
    """Sum over allowed sizes c of e_c(weights): ways to pick c placements and a kind for each."""
    poly = [1]
    for w in weights:
        nxt = poly + [0]
        for c in range(len(poly)):
            nxt[c + 1] += poly[c] * w
        poly = nxt
    if sizes is None:  # every placement carries a connection
        return poly[len(weights)]
    return sum(poly[min(c, len(weights))] for c in sizes)


def _count_layout(space: SearchSpace, combo: tuple) -> int:
    spec = space.spec
    stem_channels, blocks = combo_blocks(spec, combo)
    options = placements(stem_channels, blocks, rules_of(spec))
    count = spec.residual.count
    sizes = None if count == "all" else sorted({min(c, len(options)) for c in discrete_values(count)})
    every = _subsets_by_size([len(p.kinds) for p in options], sizes)
    modes = len(discrete_values(spec.residual.gate.mode))
    if modes == 1:
        return every
    # The gate mode is one choice for the whole network, and only matters where a gate is.
    no_gate = _subsets_by_size([sum(1 for k in p.kinds if k[0] != "gated") for p in options], sizes)
    return no_gate + modes * (every - no_gate)


def space_size(space: SearchSpace, seed: int = 0) -> SpaceSize:
    """Exact where the layouts can be enumerated, else an estimate that says it is one."""
    spec = space.spec
    _, values = layout_combos(spec)
    extra = len(discrete_values(spec.network.block.activation)) * len(discrete_values(spec.network.block.norm))
    total = math.prod(len(v) for v in values)
    if total <= MAX_ENUMERATED:
        return SpaceSize(extra * sum(_count_layout(space, c) for c in itertools.product(*values)), True)
    rng = np.random.default_rng(seed)
    draws = 2000
    acc = 0
    for _ in range(draws):
        combo = tuple(v[int(rng.integers(0, len(v)))] for v in values)
        acc += _count_layout(space, combo)
    return SpaceSize(extra * total * acc // draws, False)
