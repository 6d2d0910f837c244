"""Spec checks for the residual families beyond the plain ResNet: grouped bottlenecks
(ResNeXt), dense blocks (DenseNet), transformers, branch scales (ReZero, SkipInit,
LayerScale) and stochastic depth.

Called by the parser's checker; every failure names the YAML path and line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resnas.space._model import SpecModel
from resnas.space._values import FloatRange, discrete_values, high_value

Fail = Callable[..., None]


def _values(value: Any) -> list:
    return [value.low, value.high] if isinstance(value, FloatRange) else discrete_values(value)


def check_families(spec: SpecModel, shape: tuple[int, ...], fail: Fail) -> None:
    _check_groups(spec, fail)
    _check_dense(spec, fail)
    _check_transformer(spec, shape, fail)
    _check_connection_options(spec, fail)


def _check_groups(spec: SpecModel, fail: Fail) -> None:
    block, stages = spec.network.block, spec.network.stages
    grouped = block.groups != 1 or block.width_per_group is not None
    if not grouped:
        return
    if discrete_values(block.type) != ["bottleneck"]:
        fail("groups and width_per_group apply to bottleneck blocks only (ResNeXt)", "network", "block", "groups")
    for s, stage in enumerate(stages):
        for channels in discrete_values(stage.channels):
            if block.width_per_group is None:
                width = channels
                if width % block.groups:
                    fail(
                        f"groups {block.groups} does not divide the bottleneck width {width} "
                        f"of network.stages[{s}].channels",
                        "network",
                        "block",
                        "groups",
                    )
            elif channels * block.width_per_group // 64 < 1:
                fail(
                    f"width_per_group {block.width_per_group} leaves no width for the {channels} channels "
                    f"of network.stages[{s}] (inner width = int(channels * width_per_group / 64) * groups)",
                    "network",
                    "block",
                    "width_per_group",
                )


def _check_dense(spec: SpecModel, fail: Fail) -> None:
    net, res = spec.network, spec.residual
    dense = "dense" in discrete_values(net.block.type)
    if not dense:
        if net.block.compression != 1.0:
            fail("compression applies to dense blocks only", "network", "block", "compression")
        return
    if discrete_values(net.block.type) != ["dense"]:
        fail("dense blocks cannot be a choice beside other block types", "network", "block", "type")
    if discrete_values(res.merge) != ["concat"]:
        fail("a dense network concatenates: set merge: concat", "residual", "merge")
    if res.order != "pre":
        fail("a dense layer is pre-activation (norm, activation, conv): set order: pre", "residual", "order")
    if res.count != "all":
        fail("a dense network concatenates around every dense layer: set count: all", "residual", "count")
    if discrete_values(res.span) != [1]:
        fail(
            "concat needs maps of one spatial size: a dense connection jumps one layer (span: 1); a longer "
            "one would join maps from before a transition (another spatial size) or before earlier concats",
            "residual",
            "span",
        )
    if list(res.kinds) != ["identity"]:
        fail("a dense network concatenates its input unchanged: set kinds: [identity]", "residual", "kinds")
    if high_value(net.stages[0].stride) != 1:
        fail(
            "concat needs maps of one spatial size: the first dense stage cannot stride "
            "(later stages stride in their transition; use the stem's stride)",
            "network",
            "stages",
            0,
            "stride",
        )


def _check_transformer(spec: SpecModel, shape: tuple[int, ...], fail: Fail) -> None:
    net = spec.network
    types = discrete_values(net.block.type)
    if net.kind != "transformer":
        if net.head.pool == "cls":
            fail("pool: cls takes a transformer's CLS token; use avg or max", "network", "head", "pool")
        if net.block.heads != 1:
            fail("heads apply to transformer blocks only", "network", "block", "heads")
        return
    if types != ["transformer"]:
        fail("a transformer network is built of transformer blocks: set type: transformer", "network", "block", "type")
    if len(shape) not in (2, 3):
        fail(f"a transformer takes (channels, length) or (channels, h, w) inputs, not {list(shape)}", "network", "kind")
    if net.stem.stride != 1 or net.stem.pool != "none":
        fail(
            "a transformer's stem embeds patches of stem.kernel positions: it takes no stride or pool",
            "network",
            "stem",
        )
    if min(shape[1:], default=0) < net.stem.kernel:
        fail(f"patches of {net.stem.kernel} do not fit inputs of shape {list(shape)}", "network", "stem", "kernel")
    if discrete_values(net.block.norm) != ["layer"]:
        fail("a transformer's sublayers use LayerNorm: set norm: layer", "network", "block", "norm")
    if len(net.stages) != 1:
        fail("a transformer has one stage (its depth is the number of layers)", "network", "stages")
    stage = net.stages[0]
    if net.stem.channels != stage.channels:
        fail(
            "a transformer's stem embeds to the model width: stem.channels must equal network.stages[0].channels",
            "network",
            "stem",
            "channels",
        )
    if high_value(stage.stride) != 1:
        fail("a transformer stage cannot stride (conv networks only)", "network", "stages", 0, "stride")
    for width in discrete_values(stage.channels):
        if width % net.block.heads:
            fail(
                f"{net.block.heads} heads do not divide the model width {width} (network.stages[0].channels)",
                "network",
                "block",
                "heads",
            )


def _check_connection_options(spec: SpecModel, fail: Fail) -> None:
    res = spec.residual
    no_connections = res.count != "all" and high_value(res.count) == 0
    concat_only = discrete_values(res.merge) == ["concat"]
    if discrete_values(res.branch_scale) != ["none"] and (no_connections or concat_only):
        why = "residual.count is 0" if no_connections else "its connections concatenate"
        fail(
            f"a branch scale multiplies the branch of a block a connection adds into; this network has none ({why})",
            "residual",
            "branch_scale",
        )
    drop = _values(spec.train.drop_path)
    if max(drop) >= 1:
        fail(f"a drop rate is below 1, got {max(drop)}", "train", "drop_path")
    if max(drop) > 0 and (no_connections or concat_only):
        fail(
            "drop_path drops a block's branch and keeps its connection; this network has no connection "
            "to keep (residual.count is 0" + (")" if no_connections else ", or only concatenations)"),
            "train",
            "drop_path",
        )
