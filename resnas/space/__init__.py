"""The search-space language: parse and validate a spec, sample architectures, count them."""

from resnas.space._model import SpecModel, json_schema
from resnas.space._parse import SearchSpace, load_space, parse_space
from resnas.space._sample import Candidate, FixedSuggester, RandomSuggester, Suggester, draw, sample
from resnas.space._size import SpaceSize, space_size
from resnas.space._values import Choice, FloatRange, IntRange

__all__ = [
    "Candidate",
    "Choice",
    "FixedSuggester",
    "FloatRange",
    "IntRange",
    "RandomSuggester",
    "SearchSpace",
    "SpaceSize",
    "SpecModel",
    "Suggester",
    "draw",
    "json_schema",
    "load_space",
    "parse_space",
    "sample",
    "space_size",
]
