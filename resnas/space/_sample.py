"""Sample concrete architectures from a :class:`SearchSpace`.

Sampling is define-by-run: a *suggester* (an Optuna trial, or :class:`RandomSuggester`
for use without Optuna, or :class:`FixedSuggester` to replay stored parameters) is asked
for each value by its YAML path. Every sample satisfies its spec by construction:
connections are drawn from the placements that are valid for the depths already drawn,
so there is no rejection loop that could stall.

Connections are encoded structurally (encoding version 2): every placement the drawn
layout offers is one categorical parameter named by the blocks it jumps over
(``residual.s0b1-s0b2``, see :func:`placement_name`) with the choices ``none`` plus the
spec's kinds, the same choices everywhere. The same name therefore means the same
placement in every trial, which is what lets TPE, NSGA-II and evolution learn where
connections belong. ``count`` is kept by a deterministic repair: when the placements
switched on are more (fewer) than the nearest allowed count, the surplus is switched off
(the shortfall switched on, with the first listed kind), chosen by a generator seeded
with the drawn values, so replaying the same parameters gives the same architecture.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from resnas.arch import Architecture, Connection, Stem
from resnas.space._layout import Placement, Resolved, block_options, make_blocks, placement_name, placements
from resnas.space._parse import SearchSpace, rules_of
from resnas.space._values import Choice, FloatRange, IntRange, discrete_values


class Suggester(Protocol):
    """The subset of ``optuna.Trial`` that sampling uses."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class RandomSuggester:
    """Seeded sampling without Optuna; records what it drew in ``params``."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.params: dict[str, Any] = {}

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if log:
            value = int(min(high, math.floor(math.exp(self.rng.uniform(math.log(low), math.log(high + 1))))))
        else:
            value = int(low + step * self.rng.integers(0, (high - low) // step + 1))
        self.params[name] = value
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        if log:
            value = float(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        elif step:
            value = float(low + step * self.rng.integers(0, int(round((high - low) / step)) + 1))
        else:
            value = float(self.rng.uniform(low, high))
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = list(choices)[int(self.rng.integers(0, len(choices)))]
        self.params[name] = value
        return value


class FixedSuggester:
    """Replays a parameter dict (for example an Optuna trial's ``params``)."""

    def __init__(self, params: dict[str, Any]):
        self.params = dict(params)

    def _get(self, name: str) -> Any:
        if name not in self.params:
            raise KeyError(f"parameter {name!r} is missing from the stored parameters")
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._get(name))

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self._get(name))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._get(name)


# Version of the parameter encoding; stored on every new study (an older study's
# parameters would mean other architectures).
ENCODING_VERSION = 2
NONE = "none"


@dataclass(frozen=True)
class Candidate:
    """One sample: the architecture and the training settings it is trained with."""

    architecture: Architecture
    train: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return self.architecture.fingerprint


def draw(s: Suggester, name: str, value: Any) -> Any:
    """A fixed value as it is; a searchable one asked of the suggester under ``name``."""
    if isinstance(value, IntRange):
        return s.suggest_int(name, value.low, value.high, step=value.step, log=value.log)
    if isinstance(value, FloatRange):
        return s.suggest_float(name, value.low, value.high, step=value.step, log=value.log)
    if isinstance(value, Choice):
        return s.suggest_categorical(name, list(value.options))
    return value


def sample(space: SearchSpace, suggester: Suggester | int = 0) -> Candidate:
    """Draw one :class:`Candidate`; an int suggester means ``RandomSuggester(seed)``."""
    s = RandomSuggester(suggester) if isinstance(suggester, int) else suggester
    spec = space.spec
    net, res = spec.network, spec.residual

    stem_channels = draw(s, "network.stem.channels", net.stem.channels)
    block_type = draw(s, "network.block.type", net.block.type)
    activation = draw(s, "network.block.activation", net.block.activation)
    norm = draw(s, "network.block.norm", net.block.norm)
    stages = []
    for i, st in enumerate(net.stages):
        stages.append(
            (
                draw(s, f"network.stages[{i}].depth", st.depth),
                draw(s, f"network.stages[{i}].channels", st.channels),
                draw(s, f"network.stages[{i}].stride", st.stride),
            )
        )
    blocks = make_blocks(stem_channels, stages, block_type, net.block.expansion, **block_options(net.block))

    options = placements(stem_channels, blocks, rules_of(spec))
    connections = [
        # Add or concatenate, drawn per connection under the placement's name where it is a choice.
        Connection(
            place.src, place.dst, *resolved, draw(s, f"{placement_name(blocks, place.src, place.dst)}.merge", res.merge)
        )
        for place, resolved in _draw_connections(s, blocks, options, res.kinds, res.count)
    ]

    gated = any(c.kind == "gated" for c in connections)
    arch = Architecture(
        kind=net.kind,
        input_shape=space.input_shape,
        num_classes=space.num_classes,
        stem=Stem(stem_channels, net.stem.kernel, net.stem.stride, net.stem.pool),
        blocks=tuple(blocks),
        connections=tuple(connections),
        activation=activation,
        norm=norm,
        order=res.order,
        gate_mode=draw(s, "residual.gate.mode", res.gate.mode) if gated else "shortcut",
        gate_bias_init=res.gate.bias_init,
        head_pool=net.head.pool,
        head_dropout=net.head.dropout,
        init=net.init,
        branch_scale=draw(s, "residual.branch_scale", res.branch_scale) if connections else "none",
    )
    train = {key: draw(s, f"train.{key}", getattr(spec.train, key)) for key in type(spec.train).model_fields}
    # Stochastic depth changes the network trained, so it lives in the architecture.
    drop_path = train.pop("drop_path")
    if drop_path and connections:
        arch = dataclasses.replace(arch, drop_path=drop_path)
    return Candidate(arch, train)


def _repair(chosen: dict[int, str], asked: list[tuple[int, str]], sizes: list[int], fill: str) -> dict[int, str]:
    """Switch placements on or off until the count is the allowed size nearest to it."""
    target = min(sizes, key=lambda c: (abs(c - len(chosen)), c))
    if target == len(chosen):
        return chosen
    digest = hashlib.sha256(json.dumps(asked).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    if target < len(chosen):
        keep = sorted(rng.choice(sorted(chosen), size=target, replace=False).tolist())
        return {i: chosen[i] for i in keep}
    off = [i for i, _ in asked if i not in chosen]
    extra = rng.choice(off, size=target - len(chosen), replace=False).tolist()
    return {**chosen, **{int(i): fill for i in extra}}


def _draw_connections(
    s: Suggester, blocks: list, options: list[Placement], kinds: list[str], count: Any
) -> list[tuple[Placement, Resolved]]:
    """One categorical per placement (see the module docstring); returns (placement, resolved kind)."""
    if count == 0 or not options:
        return []
    every = count == "all"
    if every and len(kinds) == 1:
        chosen = {i: kinds[0] for i in range(len(options))}
    else:
        choices = list(kinds) if every else [NONE, *kinds]
        asked = [
            (i, s.suggest_categorical(placement_name(blocks, p.src, p.dst), choices)) for i, p in enumerate(options)
        ]
        chosen = {i: kind for i, kind in asked if kind != NONE}
        if not every:
            sizes = sorted({min(c, len(options)) for c in discrete_values(count)})
            chosen = _repair(chosen, asked, sizes, kinds[0])
    out = []
    for i in sorted(chosen):
        place, index = options[i], kinds.index(chosen[i])
        # A kind that cannot go here (say identity across a shape change under forbid) maps
        # deterministically onto one that can.
        out.append((place, place.by_request[index] or place.kinds[index % len(place.kinds)]))
    return out
