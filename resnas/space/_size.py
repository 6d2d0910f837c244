"""How many distinct architectures a spec describes.

Under ``scope: stage`` a connection stays inside its stage, so a layout's count is a
product over stages, and every block of a stage after its first has the stage's shape.
The count is then a dynamic programme over stages (state: the previous stage's output
channels), polynomial in the ranges, with no enumeration of layouts. Under
``scope: network`` layouts are enumerated when that is cheap, else sampled.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from resnas.space._layout import Rules, placements, resolve
from resnas.space._parse import SearchSpace, combo_blocks, layout_combos, rules_of
from resnas.space._values import discrete_values

MAX_ENUMERATED = 50_000
MAX_WORK = 300_000  # block-span pairs looked at when layouts are enumerated or sampled
MAX_DEGREE = 128  # connection counts above this are left out of an exact count (a lower bound)


@dataclass(frozen=True)
class SpaceSize:
    architectures: int
    exact: bool
    lower_bound: bool = False  # "more than N": exact counting would cost too much

    def __str__(self) -> str:
        n = f"{self.architectures:,}" if self.architectures < 10**15 else _scientific(self.architectures)
        if self.lower_bound:
            return f"more than {n}"
        return n if self.exact else f"about {n} (estimated from a sample of layouts)"


def _scientific(n: int) -> str:
    """``1.234e+5678``, for integers too large for a float (or for ``str``)."""
    exponent = math.log10(n)
    whole = math.floor(exponent)
    return f"{10 ** (exponent - whole):.3f}e+{whole}"


def _subsets_by_size(weights: list[int], sizes: list[int] | None) -> int:
    """Sum over allowed sizes c of e_c(weights): ways to pick c placements and a kind for each."""
    if sizes is None:  # every placement carries a connection
        return math.prod(weights)
    cap = max(sizes)
    poly = [1]
    for w in weights:
        nxt = poly + [0] if len(poly) <= cap else poly[:]
        for c in range(min(len(poly), cap)):
            nxt[c + 1] += poly[c] * w
        poly = nxt
    return sum(poly[c] for c in sizes if c < len(poly))


def _choices_at(place, blocks: list, spec) -> int:
    """Distinct connections at a placement: its resolved kinds, and one concatenation where
    the merge may be concat and h and the output have one spatial size (else concat adds)."""
    merges = set(discrete_values(spec.residual.merge))
    if "concat" not in merges or math.prod(b.stride for b in blocks[place.src : place.dst]) != 1:
        return len(place.kinds)
    return 1 if merges == {"concat"} else len(place.kinds) + 1


def _count_layout(space: SearchSpace, combo: tuple) -> int:
    spec = space.spec
    stem_channels, blocks = combo_blocks(spec, combo)
    options = placements(stem_channels, blocks, rules_of(spec))
    count = spec.residual.count
    sizes = None if count == "all" else sorted({min(c, len(options)) for c in discrete_values(count)})
    every = _subsets_by_size([_choices_at(p, blocks, spec) for p in options], sizes)
    modes = len(discrete_values(spec.residual.gate.mode))
    if modes > 1:
        # The gate mode is one choice for the whole network, and only matters where a gate is.
        no_gate = _subsets_by_size(
            [sum(1 for k in p.kinds if k[0] != "gated") + _choices_at(p, blocks, spec) - len(p.kinds) for p in options],
            sizes,
        )
        every = no_gate + modes * (every - no_gate)
    # The branch scale is one choice for the whole network, and only matters where a connection is.
    empty = 1 if 0 in (sizes if sizes is not None else [len(options)]) else 0
    return empty + len(discrete_values(spec.residual.branch_scale)) * (every - empty)


# --- scope: stage -------------------------------------------------------------------

Poly = list[int]  # coefficients of x^0, x^1, ... (x counts connections)


def _mul(a: Poly, b: Poly, cap: int | None) -> Poly:
    """Product, truncated after x^cap (no truncation for None)."""
    size = len(a) + len(b) - 1 if cap is None else min(len(a) + len(b) - 1, cap + 1)
    if len(a) > len(b):
        a, b = b, a
    out = [0] * size
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b[: size - i]):
                out[i + j] += x * y
    return out


def _add(a: Poly, b: Poly) -> Poly:
    if len(a) < len(b):
        a, b = b, a
    return [x + (b[i] if i < len(b) else 0) for i, x in enumerate(a)]


def _binomial(n: int, w: int, cap: int | None) -> Poly:
    """(1 + w x)^n: choose k of n placements, each in one of w kinds."""
    top = n if cap is None else min(n, cap)
    out = [1]
    for k in range(1, top + 1):
        out.append(out[-1] * (n - k + 1) * w // k)
    return out


def _weights(kinds: tuple[str, ...], same: bool, grows: bool, on_shape_change: str) -> tuple[int, int]:
    """(kinds, kinds without a gate) a connection can take at one placement, as ``placements`` resolves them."""
    resolved = {r for r in (resolve(k, same, grows, on_shape_change) for k in kinds) if r is not None}
    return len(resolved), sum(1 for r in resolved if r[0] != "gated")


@dataclass(frozen=True)
class _Stage:
    """One stage's placements: ``first`` from the stage input (its shape may differ), ``inner``
    between its blocks (shapes equal); and how many kinds (without a gate: ``g``) each takes."""

    first: int
    w1: int
    g1: int
    inner: int
    w2: int
    g2: int

    def polys(self, cap: int | None) -> tuple[Poly, Poly]:
        every = _mul(_binomial(self.first, self.w1, cap), _binomial(self.inner, self.w2, cap), cap)
        no_gate = _mul(_binomial(self.first, self.g1, cap), _binomial(self.inner, self.g2, cap), cap)
        return every, no_gate

    @property
    def n(self) -> int:
        return self.first + self.inner

    def all_carry(self) -> tuple[int, int]:
        """(every, no gate) ways for a connection at every placement of the stage."""
        return self.w1**self.first * self.w2**self.inner, self.g1**self.first * self.g2**self.inner


def _stage(rules: Rules, prev: int, out: int, stride: int, depth: int) -> _Stage:
    # From the stage input (block 0's input: prev channels, strided) a connection may have
    # any allowed span k <= depth; from block i >= 1, any k <= depth - i, shapes all equal.
    first = sum(1 for k in rules.spans if k <= depth)
    inner = sum(max(0, depth - k) for k in rules.spans)
    w1, g1 = _weights(rules.kinds, prev == out and stride == 1, out >= prev, rules.on_shape_change)
    w2, g2 = _weights(rules.kinds, True, True, rules.on_shape_change)
    # a placement no kind can take is no placement
    return _Stage(first if w1 else 0, w1, g1, inner if w2 else 0, w2, g2)


def _layouts_by_stage(space: SearchSpace):
    """For each (stem channels, block type): per stage, its (depth, out channels, stride) choices."""
    spec = space.spec
    for stem, block_type in itertools.product(
        discrete_values(spec.network.stem.channels), discrete_values(spec.network.block.type)
    ):
        factor = spec.network.block.expansion if block_type == "bottleneck" else 1
        stages = [
            [
                (d, c * factor, s)
                for d, c, s in itertools.product(
                    discrete_values(st.depth), discrete_values(st.channels), discrete_values(st.stride)
                )
            ]
            for st in spec.network.stages
        ]
        yield stem, stages


def _mix(every: int, no_gate: int, modes: int) -> int:
    # The gate mode is one choice for the whole network, and only matters where a gate is.
    return no_gate + modes * (every - no_gate) if modes > 1 else every


def _count_by_stage(space: SearchSpace) -> tuple[int, bool]:
    """Exact count under ``scope: stage`` (or a lower bound, flagged, for counts above MAX_DEGREE)."""
    res = space.spec.residual
    rules = rules_of(space.spec)
    counts = sorted(set(discrete_values(res.count)))
    partial = counts[-1] > MAX_DEGREE
    if partial:
        counts = [c for c in counts if c <= MAX_DEGREE] or [0]
    cap = counts[-1]
    modes = len(discrete_values(res.gate.mode))
    total = 0
    for stem, stages in _layouts_by_stage(space):
        # previous output channels -> (every, no-gate) polynomials, summed over the layouts so far
        states: dict[int, tuple[Poly, Poly]] = {stem: ([1], [1])}
        # A count c above a layout's n placements means n ("min(c, n)"): for layouts with
        # n < cap, keep (channels, n) -> (every, no-gate) ways for a connection everywhere.
        tops: dict[tuple[int, int], tuple[int, int]] = {(stem, 0): (1, 1)}
        for choices in stages:
            new: dict[int, tuple[Poly, Poly]] = {}
            for prev, (pe, pg) in states.items():
                grouped: dict[int, tuple[Poly, Poly]] = {}
                for depth, out, stride in choices:
                    se, sg = _stage(rules, prev, out, stride, depth).polys(cap)
                    e, g = grouped.get(out, ([0], [0]))
                    grouped[out] = (_add(e, se), _add(g, sg))
                for out, (se, sg) in grouped.items():
                    e, g = new.get(out, ([0], [0]))
                    new[out] = (_add(e, _mul(pe, se, cap)), _add(g, _mul(pg, sg, cap)))
            new_tops: dict[tuple[int, int], tuple[int, int]] = defaultdict(lambda: (0, 0))
            few: dict[int, list[tuple[int, int, int, int]]] = {}  # prev -> stages of under cap placements
            for (prev, n), (te, tg) in tops.items():
                if prev not in few:
                    found = [
                        (st.n, out, *st.all_carry())
                        for d, out, s in choices
                        if (st := _stage(rules, prev, out, s, d)).n < cap
                    ]
                    few[prev] = found
                for sn, out, se, sg in few[prev]:
                    if n + sn < cap:
                        a, b = new_tops[(out, n + sn)]
                        new_tops[(out, n + sn)] = (a + te * se, b + tg * sg)
            states, tops = new, dict(new_tops)
        every = sum(pe[c] for pe, _ in states.values() for c in counts if c < len(pe))
        no_gate = sum(pg[c] for _, pg in states.values() for c in counts if c < len(pg))
        for (_, n), (te, tg) in tops.items():
            if n not in counts:  # n < cap: some count above n means n
                every += te
                no_gate += tg
        total += _mix(every, no_gate, modes)
    return total, partial


def _count_all_by_stage(space: SearchSpace) -> int:
    """``count: all`` under ``scope: stage``: a product of weights per layout, summed by DP."""
    rules = rules_of(space.spec)
    modes = len(discrete_values(space.spec.residual.gate.mode))
    total = 0
    for stem, stages in _layouts_by_stage(space):
        states: dict[int, tuple[int, int]] = {stem: (1, 1)}
        for choices in stages:
            new: dict[int, tuple[int, int]] = defaultdict(lambda: (0, 0))
            for prev, (pe, pg) in states.items():
                for depth, out, stride in choices:
                    se, sg = _stage(rules, prev, out, stride, depth).all_carry()
                    a, b = new[out]
                    new[out] = (a + pe * se, b + pg * sg)
            states = dict(new)
        total += _mix(sum(e for e, _ in states.values()), sum(g for _, g in states.values()), modes)
    return total


def space_size(space: SearchSpace, seed: int = 0) -> SpaceSize:
    """Exact under ``scope: stage`` (a lower bound, said so, for counts above 256);
    under ``scope: network`` exact where the layouts can be enumerated, else an estimate."""
    spec = space.spec
    extra = len(discrete_values(spec.network.block.activation)) * len(discrete_values(spec.network.block.norm))
    if spec.residual.scope == "stage":
        if spec.residual.count == "all":
            return SpaceSize(extra * _count_all_by_stage(space), True)
        total, partial = _count_by_stage(space)
        return SpaceSize(extra * total, not partial, lower_bound=partial)
    _, values = layout_combos(spec)
    total = math.prod(len(v) for v in values)
    # The work of one layout: its blocks times the spans a connection may have.
    blocks = sum(max(discrete_values(s.depth)) for s in spec.network.stages)
    work = blocks * len(discrete_values(spec.residual.span))
    if total <= MAX_ENUMERATED and total * work <= MAX_WORK:
        return SpaceSize(extra * sum(_count_layout(space, c) for c in itertools.product(*values)), True)
    rng = np.random.default_rng(seed)
    draws = max(10, min(2000, MAX_WORK // max(1, work)))
    acc = 0
    for _ in range(draws):
        combo = tuple(v[int(rng.integers(0, len(v)))] for v in values)
        acc += _count_layout(space, combo)
    return SpaceSize(extra * total * acc // draws, False)
