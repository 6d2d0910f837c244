"""The one-shot strategy: one supernet holding every placement learns which connections matter.

``resnas search SPEC --strategy oneshot`` (or ``search.strategy: oneshot`` in the spec)
trains a :class:`Supernet` (every placement the spec allows, every kind behind learnable
architecture weights), ranks the connections by perturbation and by magnitude, derives
one architecture that obeys the spec, and retrains it from scratch as an ordinary trial.
"""

from resnas.oneshot._derive import Importance, derive, importance, ranking
from resnas.oneshot._space import allowed_counts, base_candidate, check_supported, options_of
from resnas.oneshot._study import ORIGIN, PHASE, build_supernet, run_oneshot, run_supernet
from resnas.oneshot._supernet import MixedShortcut, Supernet
from resnas.oneshot._train import train_supernet

__all__ = [
    "ORIGIN",
    "PHASE",
    "Importance",
    "MixedShortcut",
    "Supernet",
    "allowed_counts",
    "base_candidate",
    "build_supernet",
    "check_supported",
    "derive",
    "importance",
    "options_of",
    "ranking",
    "run_oneshot",
    "run_supernet",
    "train_supernet",
]
