"""resnas: search where and how many residual connections a network needs."""

from resnas._lazy import lazy_attributes
from resnas.arch import Architecture, Block, Connection, Stem
from resnas.errors import ResnasError, SpecError, StudyError
from resnas.space import Candidate, SearchSpace, load_space, parse_space, sample, space_size

__version__ = "0.1.0"

# Heavier parts (torch, Optuna, the search, export) load on first use: read-only commands
# such as `resnas leaderboard` never import torch.
_LAZY = {
    "build": "resnas.nn",
    "export_module": "resnas.export",
    "export_trial": "resnas.export",
    "leaderboard": "resnas.report",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "Architecture",
    "Block",
    "Candidate",
    "Connection",
    "ResnasError",
    "SearchSpace",
    "SpecError",
    "Stem",
    "StudyError",
    "__version__",
    "build",
    "export_module",
    "export_trial",
    "leaderboard",
    "load_space",
    "parse_space",
    "sample",
    "space_size",
]
