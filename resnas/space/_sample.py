"""Sample concrete architectures from a :class:`SearchSpace`.

Sampling is define-by-run: a *suggester* (an Optuna trial, or :class:`RandomSuggester`
for use without Optuna, or :class:`FixedSuggester` to replay stored parameters) is asked
for each value by its YAML path. Every sample satisfies its spec by construction:
connections are drawn from the placements that are valid for the depths already drawn,
so there is no rejection loop that could stall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from resnas.arch import Architecture, Connection, Stem
from resnas.space._layout import make_blocks, placements
from resnas.space._parse import SearchSpace, rules_of
from resnas.space._values import Choice, FloatRange, IntRange


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
    blocks = make_blocks(stem_channels, stages, block_type, net.block.expansion)

    options = placements(stem_channels, blocks, rules_of(spec))
    if res.count == "all":
        chosen = list(options)
    else:
        # The spec guarantees count.low placements; count.high is capped by what this layout offers.
        count = min(draw(s, "residual.count", res.count), len(options))
        remaining = list(options)
        chosen = []
        for c in range(count):
            u = s.suggest_float(f"residual.connections[{c}].position", 0.0, 1.0)
            chosen.append(remaining.pop(min(int(u * len(remaining)), len(remaining) - 1)))
        chosen.sort(key=lambda p: (p.src, p.dst))
    connections = []
    for c, place in enumerate(chosen):
        kind = (
            res.kinds[0]
            if len(res.kinds) == 1
            else s.suggest_categorical(f"residual.connections[{c}].kind", list(res.kinds))
        )
        index = res.kinds.index(kind)
        # A kind that cannot go here (say identity across a shape change under forbid) maps
        # deterministically onto one that can.
        resolved = place.by_request[index] or place.kinds[index % len(place.kinds)]
        connections.append(Connection(place.src, place.dst, resolved[0], resolved[1]))

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
    )
    train = {key: draw(s, f"train.{key}", getattr(spec.train, key)) for key in type(spec.train).model_fields}
    return Candidate(arch, train)
