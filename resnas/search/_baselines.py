"""Reference points every study trains first, and the confirmation of its winners.

Baselines (``search.baselines``): the spec's backbone with no connections, and with a
span-1 identity around every block (pad or projection where the shape changes, as the
spec's ``on_shape_change`` says): the classic ResNet. The backbone is the spec's network
with every searched depth and width at its largest; every other searched value is at its
middle (a log range at its geometric middle, a choice at its first option), so the two
baselines differ only in their connections. A grid search has none (it visits every
point anyway, and would train an enqueued one twice).
"""

from __future__ import annotations

import math
import re
from typing import Any

from resnas.arch import Architecture
from resnas.errors import SpecError
from resnas.space import SearchSpace, sample
from resnas.space._sample import NONE
from resnas.space._values import Choice, FloatRange, IntRange
from resnas.space._yaml import line_of

BASELINE = "baseline"  # trial user attr: which reference point the trial is
NO_CONNECTIONS = "no connections"
CLASSIC = "classic ResNet"
_PLACEMENT = re.compile(r"^residual\.s(\d+)b(\d+)-s(\d+)b(\d+)$")
# Kinds a classic ResNet's span-1 connection may be asked as, in order of preference.
_CLASSIC_KINDS = ("identity", "pad", "projection")


def _middle(value: Any, largest: bool) -> Any:
    if isinstance(value, IntRange):
        if largest:
            return value.high
        return value.low + value.step * ((value.high - value.low) // value.step // 2)
    if isinstance(value, FloatRange):
        if value.log:
            return math.sqrt(value.low * value.high)
        return (value.low + value.high) / 2
    if isinstance(value, Choice):
        return max(value.options) if largest and all(isinstance(o, int) for o in value.options) else value.options[0]
    return value


class _Policy:
    """A suggester that answers fixed values, and each placement by ``connect(name, choices)``."""

    def __init__(self, values: dict[str, Any], connect):
        self.values, self.connect = values, connect
        self.params: dict[str, Any] = {}

    def _answer(self, name: str, choices: Any = None) -> Any:
        value = self.connect(name, list(choices)) if _PLACEMENT.match(name) else self.values[name]
        self.params[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._answer(name))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False):
        return float(self._answer(name))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._answer(name, choices)


def _none(name: str, choices: list) -> Any:
    return NONE if NONE in choices else choices[0]


def _classic(name: str, choices: list) -> Any:
    m = _PLACEMENT.match(name)
    if m.group(1, 2) != m.group(3, 4):  # spans more than one block
        return _none(name, choices)
    return next((k for k in _CLASSIC_KINDS if k in choices), _none(name, choices))


def _is_classic(arch: Architecture) -> bool:
    want = {(k, k + 1) for k in range(arch.num_blocks)}
    have = {(c.src, c.dst) for c in arch.connections if c.kind in _CLASSIC_KINDS}
    return have == want and len(arch.connections) == len(want)


def baselines(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """The baselines this space can express, as {label: parameters to enqueue}.

    With ``search.baselines: true`` written in the spec, a baseline the space cannot
    express is a :class:`SpecError`; left at its default, it is skipped.
    """
    search = space.spec.search
    if not search.baselines or search.sampler == "grid":  # a grid visits every point anyway
        return {}
    values = {path: _middle(v, path.startswith("network.")) for path, v in space.searchable()}
    found: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for label, connect, ok in (
        (NO_CONNECTIONS, _none, lambda a: not a.connections),
        (CLASSIC, _classic, _is_classic),
    ):
        policy = _Policy(values, connect)
        if ok(sample(space, policy).architecture):
            found[label] = policy.params
        else:
            missing.append(label)
    if missing and "baselines" in search.model_fields_set:
        res = space.spec.residual
        raise SpecError(
            f"the space cannot express the baseline(s) {', '.join(missing)} (no connections needs a count "
            f"that allows 0; classic ResNet needs span 1, an identity, pad or projection kind and a count "
            f"that allows one connection per block; here kinds {list(res.kinds)}, count {res.count}); "
            "set baselines: false",
            "search.baselines",
            line_of(space.lines, ("search", "baselines")),
            space.source,
        )
    return found
