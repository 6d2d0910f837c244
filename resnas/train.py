"""Train one built module under a spec's ``train`` settings; report validation metrics per epoch.

Data lives on the training device as tensors and batches are index slices of a random
permutation (no DataLoader workers for in-memory data). On CUDA: bf16 autocast,
``channels_last`` and ``cudnn.benchmark``. On the CPU, a fixed seed gives the same result.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnas.data import Splits

# Called as hook(epoch, epochs, metrics) after every epoch of every train() in this process,
# before ``report``: progress displays and trackers watch training through these. A hook must
# not raise; one that does is dropped from this call (training never fails for a display).
EPOCH_HOOKS: list[Callable[[int, int, dict[str, float]], None]] = []


@contextmanager
def epoch_hook(hook: Callable[[int, int, dict[str, float]], None]) -> Iterator[None]:
    """Call ``hook(epoch, epochs, metrics)`` after every epoch of any training inside the block."""
    EPOCH_HOOKS.append(hook)
    try:
        yield
    finally:
        EPOCH_HOOKS.remove(hook)


class StopRequested(Exception):
    """The worker was asked to stop (SIGINT/SIGTERM); training ends at the next batch."""


class TrialFailure(Exception):
    """A trial cannot go on; ``reason`` is recorded on it (nonfinite, oom, timeout, error)."""

    def __init__(self, reason: str, detail: str = "", epochs: int = 0):
        self.reason = reason
        self.detail = detail
        self.epochs = epochs
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class TrainResult:
    metrics: dict[str, float]
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = cfg["optimizer"], cfg["lr"], cfg["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg["momentum"], weight_decay=wd, nesterov=True)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)


def _schedule(opt: torch.optim.Optimizer, cfg: dict[str, Any], steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg["schedule"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps)
    if cfg["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512, autocast: bool = False
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return correct / max(1, len(y)), loss_sum / max(1, len(y))


def train(
    model: nn.Module,
    data: Splits,
    cfg: dict[str, Any],
    *,
    seed: int = 0,
    device: torch.device | None = None,
    report: Callable[[int, dict[str, float]], None] | None = None,
    timeout: float | None = None,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.x_train`` for ``cfg['epochs']`` epochs.

    ``report(epoch, metrics)`` is called after every epoch (it may raise to prune).
    Raises :class:`TrialFailure` for a non-finite loss, out-of-memory or a timeout, and
    :class:`StopRequested` at the first batch after ``stop`` is set.
    """
    device = device or resolve_device()
    use_cuda = device.type == "cuda"
    # bf16 autocast on CUDA only: CPU autocast is slower than fp32 for these small models.
    autocast = use_cuda and cfg.get("precision", "auto") in ("auto", "bf16")
    if use_cuda:
        torch.backends.cudnn.benchmark = True
    model.to(device)
    if use_cuda and data.x_train.dim() == 4:
        model.to(memory_format=torch.channels_last)
    data = data.to(device)
    epochs, batch_size = int(cfg["epochs"]), int(cfg["batch_size"])
    n = len(data.y_train)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    opt = _optimizer(model, cfg)
    sched = _schedule(opt, cfg, epochs * steps_per_epoch)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    history: list[dict[str, float]] = []
    epoch = 0
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device)
            for b in range(steps_per_epoch):
                if stop is not None and stop.is_set():
                    raise StopRequested(f"stopped in epoch {epoch}")
                idx = order[b * batch_size : (b + 1) * batch_size]
                if len(idx) < 2 and b > 0:
                    continue  # batch norm cannot train on a single sample
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = F.cross_entropy(
                        model(data.x_train[idx]).float(),
                        data.y_train[idx],
                        label_smoothing=cfg.get("label_smoothing", 0.0),
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach() * len(idx)
                if timeout is not None and time.perf_counter() - start > timeout:
                    raise TrialFailure("timeout", f"trial ran past {timeout:g} s", epoch - 1)
            train_loss = loss_sum.item() / n
            if not math.isfinite(train_loss):
                raise TrialFailure("nonfinite", f"training loss is {train_loss} at epoch {epoch}", epoch)
            val_acc, val_loss = evaluate(model, data.x_val, data.y_val, autocast=autocast)
            if not math.isfinite(val_loss):
                raise TrialFailure("nonfinite", f"validation loss is {val_loss} at epoch {epoch}", epoch)
            if use_cuda:
                torch.cuda.synchronize(device)
            metrics = {
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "train_seconds": time.perf_counter() - start,
            }
            history.append(metrics)
            for hook in list(EPOCH_HOOKS):
                try:
                    hook(epoch, epochs, metrics)
                except Exception:
                    pass
            if report is not None:
                report(epoch, metrics)
    except TrialFailure:
        raise
    except Exception as exc:
        if is_oom(exc):
            if use_cuda:
                torch.cuda.empty_cache()
            raise TrialFailure("oom", str(exc).splitlines()[0][:200], epoch - 1) from None
        raise
    return TrainResult(dict(history[-1]), epochs, history)
