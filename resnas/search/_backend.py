"""Backends run the trials of a study; each is chosen by name with :func:`get_backend`."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

from resnas.errors import ResnasError
from resnas.space import SearchSpace


@dataclass(frozen=True)
class SearchRequest:
    space: SearchSpace
    storage: str
    study: str
    trials: int  # finished trials wanted in the study, in total
    jobs: int = 1  # optuna: worker processes on this machine
    device: str | None = None  # auto: CUDA when there is one
    trial_timeout: float | None = None
    gpus_per_trial: float = 1.0
    cpus_per_trial: float = 1.0  # ray
    max_concurrent: int | None = None  # ray
    address: str | None = None  # ray: an existing cluster
    max_failures: int = 2  # ray: retries of a trial that raised
    keep_weights: bool = False  # store each trained trial's weights in the study's artifact store
    artifacts: str | None = None  # artifact directory [default: resnas-artifacts beside the database]
    progress: bool = True
    log: tuple[str, ...] = ()  # experiment tracking targets: "mlflow:DIR", "tensorboard:DIR"
    threads: int | None = None  # torch threads per worker [default: the cores shared among --jobs workers]


def cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def worker_threads(threads: int | None, workers: int) -> int | None:
    """Torch intra-op threads for one of ``workers`` processes on this machine: ``threads`` when
    given, else an equal share of the cores (so workers do not oversubscribe them); ``None``
    for a single process, which keeps torch's default. The count changes a trial's floating-point
    summation order, so it is recorded on every trial (``torch_threads``)."""
    if threads is not None:
        return threads
    if workers > 1:
        return max(1, cores() // workers)
    return None


def set_torch_threads(threads: int | None) -> None:
    import torch

    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)


class Backend(ABC):
    """Runs trials until the study holds ``request.trials`` finished trials.

    Contract: every trial lands in the Optuna study named by the request, with the same
    user attributes whichever backend ran it; a finished trial is never changed; running
    the same request again continues where the last run stopped.
    """

    name: str

    @abstractmethod
    def run(self, request: SearchRequest) -> None: ...


def get_backend(name: str) -> Backend:
    if name == "optuna":
        from resnas.search._optuna import OptunaBackend

        return OptunaBackend()
    if name == "ray":
        try:
            from resnas.search._ray import RayBackend
        except ImportError as exc:
            raise ResnasError(f"--backend ray needs Ray Tune: pip install 'resnas[ray]' ({exc})") from None
        return RayBackend()
    raise ResnasError(f"--backend: unknown backend {name!r} (use optuna or ray)")
