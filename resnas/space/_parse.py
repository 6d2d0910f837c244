"""Parse and validate a spec into a frozen :class:`SearchSpace`.

Every error is found here and names the YAML path and line; nothing downstream
re-validates.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from resnas.errors import SpecError
from resnas.space._families import check_families
from resnas.space._layout import Rules, make_blocks, placements
from resnas.space._model import BUILTIN_DATASETS, SpecModel
from resnas.space._values import (
    Choice,
    FloatRange,
    IntRange,
    did_you_mean,
    discrete_values,
    high_value,
    is_searchable,
)
from resnas.space._yaml import MAX_BYTES, Path, format_path, line_of, load_yaml

# Input shape (without batch) and class count of the built-in datasets.
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist1d": ((1, 40), 10),
    "cifar10": ((3, 32, 32), 10),
}
# Samples of the built-in datasets (synthetic: data.samples; cifar10: whatever the files hold).
DATASET_SIZES = {"digits": 1797, "mnist1d": 5000}
MAX_DATA_VALUES = 250_000_000  # 1 GB of float32
MAX_PARAMS = 1_000_000_000
_CUSTOM_DATASET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# Keys that may change between runs of one study without making it a different study.
_NOT_IN_HASH = {("search", "trials"), ("search", "diagnostics"), ("description",)}


@dataclass(frozen=True)
class SearchSpace:
    """A validated spec: the space of architectures (and training settings) to search."""

    spec: SpecModel
    raw: dict[str, Any]
    text: str
    source: str = "spec"
    lines: dict[Path, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hash(self) -> str:
        """SHA-256 (16 hex digits) of the spec's content, ignoring comments, layout,
        ``description``, ``search.trials`` and ``search.diagnostics``."""
        return hashlib.sha256(json.dumps(canonical(self.raw), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return data_shape(self.spec)[0]

    @property
    def num_classes(self) -> int:
        return data_shape(self.spec)[1]

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return [(o.metric, o.direction) for o in self.spec.objectives]

    def searchable(self) -> list[tuple[str, Any]]:
        """The fixed-name searchable parameters as (YAML path, range or choice)."""
        found: list[tuple[str, Any]] = []

        def walk(obj: Any, path: Path) -> None:
            if is_searchable(obj):
                found.append((format_path(path), obj))
            elif isinstance(obj, BaseModel):
                for key in type(obj).model_fields:
                    walk(getattr(obj, key), path + (key,))
            elif isinstance(obj, list):
                for i, item in enumerate(obj):
                    walk(item, path + (i,))

        walk(self.spec, ())
        return found


def canonical(raw: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(raw, default=str))
    for section, key in [p for p in _NOT_IN_HASH if len(p) == 2]:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    for (key,) in [p for p in _NOT_IN_HASH if len(p) == 1]:
        out.pop(key, None)
    if isinstance(out.get("objectives"), list):
        out["objectives"] = [_long_objective(o) for o in out["objectives"]]
    return out


def _long_objective(objective: Any) -> Any:
    """``{val_accuracy: maximize}`` hashes as ``{metric: val_accuracy, direction: maximize}``."""
    if isinstance(objective, dict) and len(objective) == 1 and not {"metric", "direction"} & set(objective):
        ((metric, direction),) = objective.items()
        return {"metric": metric, "direction": direction}
    return objective


def data_shape(spec: SpecModel) -> tuple[tuple[int, ...], int]:
    data = spec.data
    if data.dataset in DATASET_SHAPES and data.shape is None and data.classes is None:
        return DATASET_SHAPES[data.dataset]
    return tuple(data.shape or ()), int(data.classes or 0)


def _integral(data: Any) -> Any:
    """``2.0`` -> ``2``: JSON Schema counts an integer-valued number as an integer, and so do we.

    Strings stay strings: ``'2'`` is not a number in either.
    """
    if isinstance(data, float) and data.is_integer():
        return int(data)
    if isinstance(data, dict):
        return {k: _integral(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_integral(v) for v in data]
    return data


def _field_names() -> set[str]:
    names: set[str] = set()
    stack: list[type[BaseModel]] = [SpecModel]
    while stack:
        model = stack.pop()
        for name, info in model.model_fields.items():
            names.add(name)
            for arg in typing.get_args(info.annotation) or (info.annotation,):
                inner = typing.get_args(arg) or (arg,)
                stack += [t for t in inner if isinstance(t, type) and issubclass(t, BaseModel) and t is not model]
    return names


_KNOWN_KEYS = _field_names()
_MESSAGES = {
    # pydantic's words name our classes ("instance of DataSpec"); say what the YAML needs.
    "model_type": "expected a mapping of keys",
    "dict_type": "expected a mapping of keys",
    "list_type": "expected a list",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "finite_number": "expected a finite number",
}


_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("greater than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("below", "lt"),
}


def _model_at(loc: Path) -> type[BaseModel] | None:
    """The section (model class) that the mapping at YAML path ``loc`` is read as."""
    model: type[BaseModel] = SpecModel
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        found = [t for t in _models_in(info.annotation) if t is not model]
        if not found:
            return None
        model = found[0]
    return model


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _unknown_key(key: Any, parent: Path) -> str:
    message = f"unknown key {key!r}"
    text = str(key)
    odd = [c for c in text if not c.isascii()]
    if odd:
        message += f" (it contains {', '.join(f'{c!r} U+{ord(c):04X}' for c in odd[:2])}, not an ASCII letter)"
    model = _model_at(parent)
    valid = list(model.model_fields) if model is not None else []
    message += did_you_mean(text, valid) or did_you_mean(text, _KNOWN_KEYS)
    if valid:
        message += f" (valid keys: {', '.join(valid)})"
    return message


def _literal_hint(err: dict) -> str:
    """The closest of the values a literal error lists, for a misspelt string."""
    if not isinstance(err["input"], str):
        return ""
    return did_you_mean(err["input"], re.findall(r"'([^']*)'", err["ctx"]["expected"]))


def _pick(errors: list) -> dict:
    """The error that explains the others: an unknown key before the required key it
    misspells; our own message before the alternatives a union tried."""
    for kind in ("extra_forbidden",):
        for err in errors:
            if err["type"] == kind:
                return err
    first = errors[0]
    same = [e for e in errors if e["loc"][: len(first["loc"]) - 1] == first["loc"][:-1] or e["loc"] == first["loc"]]
    for err in same:  # a misspelt word beside a number ("al" for count: all) is closest to the word
        if err["type"] == "literal_error" and _literal_hint(err):
            return err
    for err in same:
        if err["type"] == "value_error":
            return err
    return first


def _pydantic_error(exc: ValidationError, lines: dict[Path, int], source: str) -> SpecError:
    err = _pick(exc.errors())
    loc: Path = tuple(p for p in err["loc"] if isinstance(p, int) or not re.search(r"[\[\]\-(]", str(p)))
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = loc[:-1]
        return SpecError(
            _unknown_key(loc[-1], parent), format_path(parent) or "(top level)", line_of(lines, loc), source
        )
    if kind == "missing":
        message = "required key is missing"
    elif kind in _MESSAGES:
        message = f"{_MESSAGES[kind]}, got {err['input']!r}"
    elif kind in _BOUNDS:
        word, key = _BOUNDS[kind]
        message = f"must be {word} {err['ctx'][key]:,}, got {err['input']!r}"
    elif kind == "literal_error":
        message = f"expected {err['ctx']['expected']}, got {err['input']!r}{_literal_hint(err)}"
    else:
        message = err["msg"].removeprefix("Value error, ")
    return SpecError(message, format_path(loc) or "(top level)", line_of(lines, loc), source)


def parse_space(text: str, source: str = "spec") -> SearchSpace:
    """Parse YAML text into a validated :class:`SearchSpace` or raise :class:`SpecError`."""
    raw, lines = load_yaml(text, source)
    if not isinstance(raw, dict):
        raise SpecError("a spec is a YAML mapping of sections (name, network, residual, ...)", line=1, source=source)
    try:
        spec = SpecModel.model_validate(_integral(raw))
    except ValidationError as exc:
        raise _pydantic_error(exc, lines, source) from None
    space = SearchSpace(spec, raw, text, source, lines)
    _Checker(space).run()
    return space


def load_space(path: str | FsPath) -> SearchSpace:
    """Read and validate a spec file."""
    p = FsPath(path)
    try:
        # stat before opening: a FIFO would block the open and /dev/zero never ends.
        info = p.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SpecError("not a regular file (a spec is a YAML file)", source=str(p))
        if info.st_size > MAX_BYTES:
            raise SpecError(f"the file is {info.st_size:,} bytes; a spec is at most {MAX_BYTES:,}", source=str(p))
        with p.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise SpecError("no such file", source=str(p)) from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text (byte {exc.start})", source=str(p)) from None
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror or exc}", source=str(p)) from None
    return parse_space(text, str(p))


def largest_params(spec: SpecModel, shape: tuple[int, ...], classes: int) -> int:
    """An upper bound on the parameters of the space's largest network, by arithmetic
    (building it could take more memory than the machine has)."""
    net = spec.network
    dims = {"conv2d": 2, "conv1d": 1}.get(net.kind, 0)
    block_kernel = 3**dims
    bottleneck = "bottleneck" in discrete_values(net.block.type)
    width = high_value(net.stem.channels)
    inputs = shape[0] if dims else math.prod(shape)
    total = inputs * width * (net.stem.kernel**dims if dims else 1)
    for stage in net.stages:
        mid = high_value(stage.channels)
        out = mid * net.block.expansion if bottleneck else mid

        def block(into: int, mid: int = mid, out: int = out) -> int:
            basic = (into * mid + mid * mid) * block_kernel
            neck = into * mid + mid * mid * block_kernel + mid * out
            return max(basic, neck) + 2 * into * out  # and a 1x1 projection or gate or two

        total += block(width) + (high_value(stage.depth) - 1) * block(out)
        width = out
    return total + width * classes


def layout_combos(spec: SpecModel) -> tuple[list[str], list[list[Any]]]:
    """The discrete values that decide block shapes: names and value lists, in a fixed order."""
    names = ["network.stem.channels", "network.block.type"]
    values = [discrete_values(spec.network.stem.channels), discrete_values(spec.network.block.type)]
    for s, stage in enumerate(spec.network.stages):
        for key in ("depth", "channels", "stride"):
            names.append(f"network.stages[{s}].{key}")
            values.append(discrete_values(getattr(stage, key)))
    return names, values


def combo_blocks(spec: SpecModel, combo: tuple) -> tuple[int, list]:
    stem_channels, block_type = combo[0], combo[1]
    stages = [tuple(combo[2 + 3 * s : 5 + 3 * s]) for s in range(len(spec.network.stages))]
    return stem_channels, make_blocks(stem_channels, stages, block_type, spec.network.block.expansion)


def rules_of(spec: SpecModel) -> Rules:
    r = spec.residual
    return Rules(tuple(r.kinds), frozenset(discrete_values(r.span)), r.scope, r.on_shape_change)


class _Checker:
    """Semantic checks that a schema cannot express."""

    MAX_ENUMERATED = 20_000

    def __init__(self, space: SearchSpace):
        self.space = space
        self.spec = space.spec

    def fail(self, message: str, *path: str | int) -> None:
        raise SpecError(message, format_path(path), line_of(self.space.lines, path), self.space.source)

    def run(self) -> None:
        self.check_data()
        self.check_network()
        check_families(self.spec, data_shape(self.spec)[0], self.fail)
        self.check_residual()
        self.check_search()

    def check_data(self) -> None:
        data, kind = self.spec.data, self.spec.network.kind
        if data.dataset not in DATASET_SHAPES and data.dataset != "synthetic":
            if not _CUSTOM_DATASET.match(data.dataset):
                self.fail(
                    f"unknown dataset {data.dataset!r}{did_you_mean(data.dataset, BUILTIN_DATASETS)} "
                    "(use digits, mnist1d, synthetic, cifar10 or 'module:function', your own function "
                    "returning (x, y))",
                    "data",
                    "dataset",
                )
        if data.dataset not in DATASET_SHAPES and (data.shape is None or data.classes is None):
            self.fail(
                f"dataset {data.dataset!r} needs 'shape' (of one sample, channels first) and 'classes'",
                "data",
                "dataset",
            )
        if data.dataset == "cifar10" and not data.path:
            self.fail("cifar10 needs 'path': the directory with data_batch_1.bin ... test_batch.bin", "data")
        if data.val_fraction + data.test_fraction >= 1:
            self.fail("val_fraction + test_fraction must be below 1", "data", "val_fraction")
        if data.dataset in DATASET_SHAPES:
            for key in ("shape", "classes"):
                if getattr(data, key) is not None:
                    own = DATASET_SHAPES[data.dataset][0 if key == "shape" else 1]
                    own = list(own) if key == "shape" else own
                    self.fail(f"{data.dataset} has its own {key} ({own}); remove '{key}'", "data", key)
        self.check_sizes()
        shape = data_shape(self.spec)[0]
        want = {"conv2d": 3, "conv1d": 2}.get(kind)
        if want is not None and len(shape) != want:
            fits = {3: "conv2d", 2: "conv1d"}.get(len(shape))
            self.fail(
                f"a {kind} network needs {want}-dimensional inputs (channels first), "
                f"but the data has shape {list(shape)}: use kind: {fits + ' or mlp' if fits else 'mlp'}",
                "network",
                "kind",
            )

    def check_sizes(self) -> None:
        """Data that fits in memory, leaves samples to train on, and a network that can be built."""
        data = self.spec.data
        shape, classes = data_shape(self.spec)
        if data.dataset == "synthetic" and data.samples * math.prod(shape) > MAX_DATA_VALUES:
            self.fail(
                f"{data.samples:,} samples of shape {list(shape)} are {data.samples * math.prod(shape):,} values; "
                f"synthetic data holds at most {MAX_DATA_VALUES:,}",
                "data",
                "samples",
            )
        known = data.samples if data.dataset == "synthetic" else DATASET_SIZES.get(data.dataset)
        if known is not None:
            n = min(known, data.limit or known)
            train = n - int(round(n * data.test_fraction)) - max(1, int(round(n * data.val_fraction)))
            if train < 1:
                self.fail(
                    f"{n} samples leave none to train on after val_fraction {data.val_fraction} "
                    f"and test_fraction {data.test_fraction}",
                    "data",
                    "val_fraction",
                )
        params = largest_params(self.spec, shape, classes)
        if params > MAX_PARAMS:
            self.fail(
                f"the largest network of this space has about {params:.2e} parameters; "
                f"at most {MAX_PARAMS:.0e} can be trained here (fewer or narrower blocks?)",
                "network",
            )

    def check_network(self) -> None:
        net = self.spec.network
        allowed = {"mlp": ("mlp", "plain"), "transformer": ("transformer",)}.get(
            net.kind, ("basic", "bottleneck", "plain", "dense")
        )
        for block_type in discrete_values(net.block.type):
            if block_type not in allowed:
                self.fail(
                    f"block type {block_type!r} does not fit a {net.kind} network (use {' or '.join(allowed)})",
                    "network",
                    "block",
                    "type",
                )
        if net.kind == "mlp":
            if net.stem.stride != 1 or net.stem.pool != "none":
                self.fail("an mlp stem takes no stride or pool", "network", "stem")
            for s, stage in enumerate(net.stages):
                if high_value(stage.stride) != 1:
                    self.fail("an mlp stage cannot stride", "network", "stages", s, "stride")

    def _combos(self) -> list[tuple]:
        _, values = layout_combos(self.spec)
        total = 1
        for v in values:
            total *= len(v)
        if total <= self.MAX_ENUMERATED:
            return list(itertools.product(*values))
        # Too many to enumerate: the fewest placements come with the shallowest stages.
        values = [v if not name.endswith(".depth") else [min(v)] for name, v in zip(*layout_combos(self.spec))]
        return list(itertools.islice(itertools.product(*values), self.MAX_ENUMERATED))

    def check_residual(self) -> None:
        res, net = self.spec.residual, self.spec.network
        if len(set(res.kinds)) != len(res.kinds):
            self.fail("a kind is listed twice", "residual", "kinds")
        if isinstance(res.span, FloatRange):
            self.fail("span takes integers", "residual", "span")
        if res.scope == "stage":
            deepest = max(high_value(s.depth) for s in net.stages)
            shortest = min(discrete_values(res.span))
            if shortest > deepest:
                self.fail(
                    f"span {shortest} is longer than any stage (the deepest has {deepest} blocks) under scope: stage",
                    "residual",
                    "span",
                )
        if res.count == "all" or res.count == 0:
            return
        fewest = min(discrete_values(res.count))
        if fewest == 0:
            return
        rules = rules_of(self.spec)
        worst, worst_combo = None, None
        for combo in self._combos():
            stem_channels, blocks = combo_blocks(self.spec, combo)
            n = len(placements(stem_channels, blocks, rules))
            if worst is None or n < worst:
                worst, worst_combo = n, combo
        if worst is not None and worst < fewest:
            names, _ = layout_combos(self.spec)
            detail = ", ".join(
                f"{k.removeprefix('network.')}={v}"
                for k, v in zip(names, worst_combo)
                if k.endswith((".depth", ".channels"))
            )
            self.fail(
                f"at least {fewest} connections are asked for, but the network with {detail} "
                f"has only {worst} possible placement(s) for kinds {list(res.kinds)}, spans "
                f"{sorted(rules.spans)}, scope {res.scope}, on_shape_change {res.on_shape_change}",
                "residual",
                "count",
            )

    def check_search(self) -> None:
        spec = self.spec
        metrics = [o.metric for o in spec.objectives]
        if len(set(metrics)) != len(metrics):
            self.fail("an objective metric is listed twice", "objectives")
        evolution = spec.search.evolution
        if evolution.sample_size > evolution.population:
            self.fail(
                f"sample_size {evolution.sample_size} is larger than population {evolution.population}",
                "search",
                "evolution",
                "sample_size",
            )
        if sum(evolution.mutation.model_dump().values()) <= 0:
            self.fail("at least one mutation weight must be positive", "search", "evolution", "mutation")
        if spec.search.pruner != "none" and len(metrics) > 1:
            self.fail("pruners work on single-objective studies only; use pruner: none", "search", "pruner")
        if spec.search.sampler == "grid":
            for path, value in self.space.searchable():
                if isinstance(value, FloatRange):
                    self.fail("the grid sampler needs finite choices; use {choice: [...]}", *_split(path))
            if spec.residual.count not in ("all", 0) and isinstance(spec.residual.count, IntRange | Choice | int):
                self.fail(
                    "the grid sampler cannot place connections; use count: all or 0, or another sampler",
                    "search",
                    "sampler",
                )
            if spec.residual.count == "all" and len(spec.residual.kinds) > 1:
                self.fail(
                    "the grid sampler cannot choose a kind per connection; list one kind, or use another sampler",
                    "search",
                    "sampler",
                )


def _split(path: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+", path):
        parts.append(int(token) if token.isdigit() else token)
    return tuple(parts)
