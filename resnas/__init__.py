"""resnas: search where and how many residual connections a network needs."""

from resnas.arch import Architecture, Block, Connection, Stem
from resnas.errors import ResnasError, SpecError, StudyError
from resnas.nn import build
from resnas.space import Candidate, SearchSpace, load_space, parse_space, sample, space_size

__version__ = "0.1.0"

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
    "load_space",
    "parse_space",
    "sample",
    "space_size",
]
