"""Where connections may go in one concrete layout of blocks.

Shared by validation (is a count satisfiable?), sampling (pick placements) and the
space-size count, so the three can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from resnas.arch import Block
from resnas.space._model import BlockSpec

# A resolved connection: (kind, shortcut-for-gated). Two requests that resolve to the
# same pair build the same network.
Resolved = tuple[str, str | None]


@dataclass(frozen=True)
class Rules:
    kinds: tuple[str, ...]
    spans: frozenset[int]
    scope: str  # stage | network
    on_shape_change: str  # projection | pad | forbid


def make_blocks(
    stem_channels: int,
    stages: list[tuple[int, int, int]],
    block_type: str,
    expansion: int,
    groups: int = 1,
    width_per_group: int | None = None,
    compression: float = 1.0,
    heads: int = 1,
) -> list[Block]:
    """Blocks of a network whose stage s has (depth, channels, stride) = ``stages[s]``.

    Only a stage's first block strides, as in torchvision's ``_make_layer``. A ``dense``
    stage's channels are its growth rate, and every dense stage after the first starts with
    a transition that strides (DenseNet). A ``transformer`` layer is two blocks, an attention
    sublayer and a feedforward sublayer, so connections can go around each.
    """
    blocks: list[Block] = []
    in_channels = stem_channels
    for s, (depth, channels, stride) in enumerate(stages):
        if block_type == "dense":
            if s > 0:
                out = int(in_channels * compression)
                blocks.append(Block("transition", in_channels, out, out, stride, s))
                in_channels = out
            for _ in range(depth):
                blocks.append(Block("dense", in_channels, expansion * channels, in_channels + channels, 1, s))
                in_channels += channels
            continue
        if block_type == "transformer":
            for _ in range(depth):
                blocks.append(Block("attention", channels, channels, channels, 1, s, heads=heads))
                blocks.append(Block("feedforward", channels, channels * expansion, channels, 1, s))
            in_channels = channels
            continue
        out = channels * expansion if block_type == "bottleneck" else channels
        grouped = block_type == "bottleneck"
        width = channels if width_per_group is None or not grouped else int(channels * width_per_group / 64) * groups
        for b in range(depth):
            blocks.append(
                Block(block_type, in_channels, width, out, stride if b == 0 else 1, s, groups if grouped else 1)
            )
            in_channels = out
    return blocks


def block_options(block: BlockSpec) -> dict[str, Any]:
    """The ``make_blocks`` keywords a spec's block section fixes."""
    return {
        "groups": block.groups,
        "width_per_group": block.width_per_group,
        "compression": block.compression,
        "heads": block.heads,
    }


def resolve(kind: str, same_shape: bool, grows: bool, on_shape_change: str) -> Resolved | None:
    """What a requested kind becomes at a placement, or None where it cannot go."""
    if same_shape:
        if kind in ("identity", "pad"):
            return ("identity", None)
        if kind == "gated":
            return ("gated", "identity")
        return (kind, None)
    # Shapes differ: identity follows on_shape_change; pad needs channels that do not shrink.
    if kind == "identity":
        if on_shape_change == "forbid" or (on_shape_change == "pad" and not grows):
            return None
        return (on_shape_change, None)
    if kind == "pad":
        return ("pad", None) if grows else None
    if kind == "gated":
        return ("gated", "pad" if on_shape_change == "pad" and grows else "projection")
    return ("projection", None)


class Placement(NamedTuple):
    """Where a connection may go, and what each requested kind becomes there."""

    src: int
    dst: int
    kinds: list[Resolved]  # the distinct resolved kinds, in ``rules.kinds`` order
    by_request: tuple[Resolved | None, ...]  # aligned with ``rules.kinds``; None: cannot go here


def block_label(blocks: list[Block], k: int) -> str:
    """``s{stage}b{index within the stage}`` of block ``k``: the same block whatever the depth
    of earlier stages."""
    stage = blocks[k].stage
    return f"s{stage}b{sum(1 for b in blocks[:k] if b.stage == stage)}"


def placement_name(blocks: list[Block], src: int, dst: int) -> str:
    """The structural parameter name of connection (src, dst): the first and the last block it
    jumps over, as ``residual.s0b1-s0b2`` (from the input of stage 0's block 1 to the output of
    its block 2). It names the same placement in every layout that offers it."""
    return f"residual.{block_label(blocks, src)}-{block_label(blocks, dst - 1)}"


def placements(stem_channels: int, blocks: list[Block], rules: Rules) -> list[Placement]:
    """Every (src, dst) a connection may take, with its resolved kinds.

    Canonical order: by source, then destination. A placement where no requested kind
    can go is left out.
    """
    channels = [stem_channels] + [b.out_channels for b in blocks]
    n = len(blocks)
    out = []
    for i in range(n):
        stride = 1
        for j in range(i + 1, n + 1):
            stride *= blocks[j - 1].stride
            if rules.scope == "stage" and blocks[i].stage != blocks[j - 1].stage:
                break
            if blocks[j - 1].type == "transition":  # DenseNet's transitions carry no connection
                break
            if j - i not in rules.spans:
                continue
            # A dense block's output is its input with new channels concatenated: identity fits.
            same = (channels[i] == channels[j] or blocks[j - 1].type == "dense") and stride == 1
            grows = channels[j] >= channels[i]
            by_request = tuple(resolve(kind, same, grows, rules.on_shape_change) for kind in rules.kinds)
            kinds: list[Resolved] = []
            for r in by_request:
                if r is not None and r not in kinds:
                    kinds.append(r)
            if kinds:
                out.append(Placement(i, j, kinds, by_request))
    return out
