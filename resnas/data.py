"""Datasets that fit in memory, split deterministically into train / validation / test.

Built in: ``digits`` (scikit-learn), ``mnist1d`` (generated offline with the mnist1d
package's ``make_dataset``, never its downloader), ``synthetic`` (any shape, for tests
and benchmarks), ``cifar10`` (the CIFAR binary format from a local directory, no pickle)
and ``package.module:function`` for your own data, returning ``(x, y)`` arrays.

A spec can come from a shared database, so a code dataset is imported only with an
explicit opt-in (``--allow-code`` or ``RESNAS_ALLOW_CODE=1``), checked before the import.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from resnas.errors import ResnasError
from resnas.space._model import DataSpec

ALLOW_CODE = "RESNAS_ALLOW_CODE"


class DataError(ResnasError):
    """The data could not be loaded (a missing directory, a failing user function...)."""


def is_code_dataset(dataset: str) -> bool:
    """``package.module:function`` names code; the built-in names do not."""
    return ":" in dataset


def code_allowed() -> bool:
    return os.environ.get(ALLOW_CODE, "").strip().lower() in ("1", "true", "yes")


def require_code_allowed(spec: DataSpec) -> None:
    """Refuse a code dataset unless the user opted in; called before anything is imported."""
    if is_code_dataset(spec.dataset) and not code_allowed():
        raise DataError(
            f"data.dataset: {spec.dataset!r} would import and run code named by the spec; "
            f"allow code datasets with --allow-code or {ALLOW_CODE}=1"
        )


@dataclass(frozen=True)
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device: torch.device | str) -> Splits:
        return Splits(
            *(t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test))
        )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, read from the file the package ships as ``load_digits`` reads it,
    without importing scikit-learn (about a second of every process's start); ``load_digits``
    itself where that file is not found."""
    import gzip
    from importlib.util import find_spec

    sklearn = find_spec("sklearn")  # locates the package without running it
    where = [
        Path(p) / "datasets" / "data" / "digits.csv.gz"
        for p in ((sklearn and sklearn.submodule_search_locations) or [])
    ]
    if where and where[0].is_file():
        with gzip.open(where[0], "rt", encoding="utf-8") as f:
            data = np.loadtxt(f, delimiter=",")
        x, y = data[:, :-1], data[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
    return (x / 16.0).reshape(-1, 1, 8, 8), y


def _mnist1d() -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # generated here; the package's downloader is never called
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]])
    return x[:, None, :], y


def _synthetic(spec: DataSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around one random prototype per class: learnable, any shape."""
    rng = np.random.default_rng(seed + 7919)
    shape, classes = tuple(spec.shape or ()), int(spec.classes or 2)
    prototypes = rng.normal(0, 1, (classes, *shape)).astype(np.float32)
    y = rng.integers(0, classes, spec.samples)
    x = prototypes[y] + rng.normal(0, 1.0, (spec.samples, *shape)).astype(np.float32)
    return x, y


def _cifar10(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    root = Path(spec.path or "")
    files = sorted(root.glob("data_batch_*.bin")) + sorted(root.glob("test_batch.bin"))
    if not files:
        raise DataError(f"data.path: no CIFAR-10 binary files (data_batch_*.bin) in {root}")
    records = np.concatenate([np.fromfile(f, dtype=np.uint8).reshape(-1, 3073) for f in files])
    y = records[:, 0].astype(np.int64)
    x = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    mean = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)[None, :, None, None]
    std = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)[None, :, None, None]
    return (x - mean) / std, y


def _call_custom(spec: DataSpec) -> tuple[object, object]:
    """Import ``module:function`` (the working directory importable) and call it once."""
    require_code_allowed(spec)
    module_name, func_name = spec.dataset.split(":")
    if os.getcwd() not in sys.path:
        # A module beside the spec is importable, as it would be under ``python -m``.
        sys.path.append(os.getcwd())
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise DataError(
            f"data.dataset: cannot import {spec.dataset!r}: {exc} "
            f"(looked in the working directory {os.getcwd()} and the Python path)"
        ) from None
    except Exception as exc:  # the module itself failed while importing
        raise DataError(f"data.dataset: importing {module_name} raised {type(exc).__name__}: {exc}") from None
    try:
        result = func()
    except Exception as exc:
        raise DataError(f"data.dataset: {spec.dataset} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise DataError(f"data.dataset: {spec.dataset} must return a pair (x, y), got {type(result).__name__}")
    return result[0], result[1]


def _checked(spec: DataSpec, x: object, y: object, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What a code dataset returned, as float32 inputs and int64 labels, checked against ``shape`` and
    ``classes``; ``rows``: convert and check the values of only the first rows (the shapes always)."""
    name = spec.dataset

    def fail(message: str) -> DataError:
        return DataError(f"data.dataset: {name} {message}")

    try:
        x_all, y_all = np.asarray(x), np.asarray(y)
    except Exception as exc:
        raise fail(f"returned something that is not an array: {exc}") from None
    if x_all.ndim < 1 or y_all.ndim != 1 or len(x_all) != len(y_all):
        raise fail(
            f"returned x of shape {list(x_all.shape)} and y of shape {list(y_all.shape)}: "
            "x needs one row per sample and y one label per row"
        )
    if tuple(x_all.shape[1:]) != tuple(spec.shape or ()):
        raise fail(
            f"returned inputs of shape {list(x_all.shape[1:])} per sample; the spec says shape: {spec.shape} "
            "(one sample, channels first)"
        )
    if len(y_all) < 16:
        raise fail(f"returned {len(y_all)} samples; at least 16 are needed to split")
    part = slice(None) if rows is None else slice(0, rows)
    if not (np.issubdtype(x_all.dtype, np.number) or x_all.dtype == bool):
        raise fail(f"returned inputs of dtype {x_all.dtype}; they must be numbers")
    x_part = x_all[part].astype(np.float32)
    if not np.isfinite(x_part).all():
        raise fail("returned inputs that are not finite (nan or infinity)")
    if not (np.issubdtype(y_all.dtype, np.integer) or y_all.dtype == bool):
        integral = np.issubdtype(y_all.dtype, np.floating) and np.array_equal(y_all, np.round(y_all))
        if not integral:
            raise fail(f"returned labels of dtype {y_all.dtype}; they must be integers 0 .. classes-1")
    low, high = int(y_all.min()), int(y_all.max())
    classes = int(spec.classes or 0)
    if low < 0 or high >= classes:
        raise fail(f"returned labels {low} .. {high}; classes: {classes} needs labels 0 .. {classes - 1}")
    return (x_all.astype(np.float32) if rows is None else x_part), y_all.astype(np.int64)


def check_code_dataset(spec: DataSpec, rows: int = 64) -> str:
    """Call a code dataset once and check its shapes, dtypes and labels against the spec
    (values of the first ``rows`` samples); a one-line summary, or :class:`DataError`."""
    x, y = _call_custom(spec)
    x_part, labels = _checked(spec, x, y, rows)
    present = len(np.unique(labels))
    return (
        f"{spec.dataset} returned {len(labels):,} samples of shape {list(x_part.shape[1:])} "
        f"({np.asarray(x).dtype}), labels {labels.min()} .. {labels.max()} ({present} of {spec.classes} classes)"
    )


def _custom(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    return _checked(spec, *_call_custom(spec))


def load_arrays(spec: DataSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if spec.dataset == "digits":
        x, y = _digits()
    elif spec.dataset == "mnist1d":
        x, y = _mnist1d()
    elif spec.dataset == "synthetic":
        x, y = _synthetic(spec, seed)
    elif spec.dataset == "cifar10":
        x, y = _cifar10(spec)
    else:
        x, y = _custom(spec)
    return x.astype(np.float32), y.astype(np.int64)


@lru_cache(maxsize=4)
def _load(spec_json: str, seed: int) -> Splits:
    spec = DataSpec.model_validate(json.loads(spec_json))
    x, y = load_arrays(spec, seed)
    order = np.random.default_rng(seed).permutation(len(y))
    if spec.limit is not None:
        order = order[: spec.limit]
    n = len(order)
    n_test = int(round(n * spec.test_fraction))
    n_val = max(1, int(round(n * spec.val_fraction)))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    t = torch.from_numpy
    return Splits(t(x[train]), t(y[train]), t(x[val]), t(y[val]), t(x[test]), t(y[test]))


def load_data(spec: DataSpec, seed: int = 0) -> Splits:
    """Train / validation / test splits; the same for the same spec and seed."""
    return _load(spec.model_dump_json(), seed)
