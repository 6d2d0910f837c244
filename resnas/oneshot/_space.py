"""What the one-shot strategy can search, and the fixed layout it searches on.

Depths, widths and every other network value are fixed for this strategy: the supernet is
the spec's one layout, and only the connections (placement, count, kind) are learned. A
spec with a searchable network value is refused with one line naming it. Training values
that are searchable take their middle (the geometric middle of a log range, the first
option of a choice) for both the supernet and the retraining; the derived trial records
what it used.
"""

from __future__ import annotations

import math
from typing import Any

from resnas.errors import SpecError
from resnas.space import Candidate, SearchSpace, sample
from resnas.space._layout import Placement, placements
from resnas.space._parse import _split, rules_of
from resnas.space._values import discrete_values
from resnas.space._yaml import line_of


class MiddleSuggester:
    """Answers every searchable value with the middle of its range (first option of a choice)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        value = round(math.sqrt(low * high)) if log else low + step * ((high - low) // step // 2)
        self.params[name] = value
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        value = math.sqrt(low * high) if log else (low + high) / 2
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = list(choices)[0]
        self.params[name] = value
        return value


def _refuse(space: SearchSpace, path: str, message: str) -> SpecError:
    parts = _split(path)
    return SpecError(message, path, line_of(space.lines, parts), space.source)


def check_supported(space: SearchSpace) -> None:
    """Raise :class:`SpecError` (one line, YAML path and line) for what the strategy cannot search."""
    for path, _ in space.searchable():
        if path.startswith("network.") or path == "residual.gate.mode":
            raise _refuse(
                space,
                path,
                "the oneshot strategy searches connections on one fixed layout; fix this value "
                "(or search it with the default strategy)",
            )
    spec = space.spec
    if spec.residual.merge != "add":  # the supernet mixes connections by addition; a concat changes widths
        raise _refuse(space, "residual.merge", "the oneshot strategy places added connections only (merge: add)")
    if spec.residual.count == 0 or discrete_values(spec.residual.count) == [0]:
        raise _refuse(space, "residual.count", "count is 0: there are no connections for the oneshot strategy to place")
    settings = spec.search.oneshot
    if settings.warmup >= settings.epochs:
        raise _refuse(
            space,
            "search.oneshot.warmup",
            f"warmup ({settings.warmup}) must be below epochs ({settings.epochs}): "
            "the architecture weights would never be trained",
        )
    if not options_of(space):
        raise _refuse(space, "residual", "no connection can go anywhere in this layout")


def base_candidate(space: SearchSpace) -> Candidate:
    """The spec's fixed layout with no connections, and the training settings (middles)."""
    from dataclasses import replace

    candidate = sample(space, MiddleSuggester())
    return Candidate(replace(candidate.architecture, connections=()), candidate.train)


def options_of(space: SearchSpace) -> list[Placement]:
    arch = sample(space, MiddleSuggester()).architecture
    return placements(arch.stem.channels, list(arch.blocks), rules_of(space.spec))


def allowed_counts(space: SearchSpace, available: int) -> list[int]:
    """The connection counts a derived architecture may have, as sampling caps them."""
    count = space.spec.residual.count
    if count == "all":
        return [available]
    return sorted({min(int(c), available) for c in discrete_values(count)})
