"""Training cost, measured rather than guessed."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_sample(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> int:
    """Forward + backward FLOPs of one training sample, from ``torch.utils.flop_counter``.

    Counted on a batch of two (batch norm needs more than one sample in train mode).
    """
    was_training = model.training
    model.train()
    x = torch.randn(2, *input_shape, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() // 2


def step_memory_mb(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, optimizer_slots: int) -> float:
    """Memory of one training step on the CPU: weights, gradients, optimizer state and the
    activations autograd saves for the backward pass (summed with saved-tensor hooks)."""
    saved = 0
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    model.train()
    x = torch.randn(batch_size, *input_shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).sum()
    loss.backward()
    model.zero_grad(set_to_none=True)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return (saved + weights * (2 + optimizer_slots)) / 2**20


def latency_ms(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu", repeats: int = 20
) -> float:
    """Median batch-1 inference time in eval mode, device-synchronised."""
    was_training = model.training
    model.eval()
    x = torch.randn(1, *input_shape, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= 3:  # warm-up
                times.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return statistics.median(times)
