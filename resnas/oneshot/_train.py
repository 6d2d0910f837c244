"""Train a supernet: network weights and architecture weights.

``alternating`` (first-order DARTS, Liu et al. 2019): each step updates the weights on a
training batch, then (after ``warmup`` epochs) the architecture weights on a validation
batch. ``single``: one loss on the training batch updates both. In both modes ``sparsity`` weighs
the expected number of connections above ``count``'s upper bound (``limit``; every
connection when there is none), so connections must earn their place. The softmax
temperature falls geometrically from ``temperature[0]`` to ``temperature[1]`` over the
epochs after warm-up, sharpening the mixture towards a discrete choice.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from resnas.data import Splits
from resnas.oneshot._supernet import Supernet
from resnas.space._model import OneShotSettings
from resnas.train import StopRequested, TrialFailure, _optimizer, _schedule, evaluate


@dataclass
class SupernetResult:
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: losses, temperature, weights
    weight_samples: int = 0  # training samples through forward + backward for the weights
    arch_samples: int = 0  # validation samples through forward + backward for the architecture
    seconds: float = 0.0


def temperature_at(settings: OneShotSettings, epoch: int) -> float:
    """Temperature for ``epoch`` (1-based): start through warm-up, then geometric to the end."""
    start, end = settings.temperature
    moving = settings.epochs - settings.warmup
    done = min(max(epoch - settings.warmup - 1, 0), moving - 1)
    return start * (end / start) ** (done / max(1, moving - 1))


def expected_connections(net: Supernet) -> torch.Tensor:
    """Sum over placements of the weight not on ``none``: the expected number of connections."""
    return sum(1 - w[0] for w in net.mixing())


def excess(net: Supernet, limit: int | None) -> torch.Tensor:
    """Expected connections above ``limit`` (count's upper bound), the term ``sparsity`` weighs:
    the supernet learns in the regime the derived network will live in, rather than relying
    on many more connections than the spec allows (the gap Wang et al. 2021 measure)."""
    expected = expected_connections(net)
    return expected if limit is None else torch.relu(expected - limit)


def mixing_table(net: Supernet) -> dict[str, list[float]]:
    with torch.no_grad():
        return {f"{p.src}->{p.dst}": [round(float(v), 4) for v in w.cpu()] for p, w in zip(net.options, net.mixing())}


def train_supernet(
    net: Supernet,
    data: Splits,
    cfg: dict[str, Any],
    settings: OneShotSettings,
    *,
    seed: int = 0,
    device: torch.device,
    stop: threading.Event | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    limit: int | None = None,
) -> SupernetResult:
    use_cuda = device.type == "cuda"
    autocast = use_cuda and cfg.get("precision", "auto") in ("auto", "bf16")
    net.to(device)
    net.arch_to(device)
    data = data.to(device)
    epochs, batch_size = settings.epochs, int(cfg["batch_size"])
    n, n_val = len(data.y_train), len(data.y_val)
    steps = max(1, math.ceil(n / batch_size))
    opt = _optimizer(net, cfg)
    sched = _schedule(opt, cfg, epochs * steps)
    arch_opt = torch.optim.Adam(
        net.arch_parameters(), lr=settings.arch_lr, betas=(0.5, 0.999), weight_decay=settings.arch_weight_decay
    )
    gen = torch.Generator(device="cpu").manual_seed(seed)
    result = SupernetResult()
    result.history.append({"epoch": 0, "temperature": net.temperature, "weights": mixing_table(net)})
    start = time.perf_counter()

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return F.cross_entropy(net(x).float(), y, label_smoothing=cfg.get("label_smoothing", 0.0))

    for epoch in range(1, epochs + 1):
        net.temperature = temperature_at(settings, epoch)
        search = epoch > settings.warmup
        net.train()
        order = torch.randperm(n, generator=gen).to(device)
        val_order = torch.randperm(n_val, generator=gen).to(device)
        loss_sum = 0.0
        for b in range(steps):
            if stop is not None and stop.is_set():
                raise StopRequested(f"stopped in supernet epoch {epoch}")
            idx = order[b * batch_size : (b + 1) * batch_size]
            if len(idx) < 2 and b > 0:
                continue
            loss = loss_of(data.x_train[idx], data.y_train[idx])
            single = search and settings.mode == "single"
            total = loss + settings.sparsity * excess(net, limit) if single else loss
            opt.zero_grad(set_to_none=True)
            arch_opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            if single:
                arch_opt.step()
            result.weight_samples += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            if search and settings.mode == "alternating":
                # First-order: the architecture step sees the weights as they are now.
                vidx = val_order[(torch.arange(min(batch_size, n_val), device=device) + b * batch_size) % n_val]
                arch_loss = loss_of(data.x_val[vidx], data.y_val[vidx])
                arch_loss = arch_loss + settings.sparsity * excess(net, limit)
                arch_opt.zero_grad(set_to_none=True)
                # Gradients for the architecture weights only: the backward pass skips the
                # network weights' gradients (about a third of its work), which this step discards.
                arch_loss.backward(inputs=net.arch_parameters())
                arch_opt.step()
                result.arch_samples += len(vidx)
        train_loss = loss_sum / n
        if not math.isfinite(train_loss):
            raise TrialFailure("nonfinite", f"supernet training loss is {train_loss} at epoch {epoch}", epoch)
        val_acc, val_loss = evaluate(net, data.x_val, data.y_val, autocast=autocast)
        if use_cuda:
            torch.cuda.synchronize(device)
        record = {
            "epoch": epoch,
            "temperature": round(net.temperature, 4),
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "weights": mixing_table(net),
        }
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
    result.seconds = time.perf_counter() - start
    return result
