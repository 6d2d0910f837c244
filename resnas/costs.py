"""Training cost, measured rather than guessed."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Leaf modules that run no operation ``FlopCounterMode`` counts (it counts matrix products,
# convolutions and attention only).
_NO_FLOPS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.ELU,
    nn.Hardswish,
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.ModuleList,  # containers: never called themselves
    nn.ModuleDict,
    nn.Sequential,
)


_FLOPS: dict[tuple[str, tuple[int, ...]], int] = {}  # by architecture fingerprint and input shape


def flops_per_sample(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu", key: str | None = None
) -> int:
    """Forward + backward FLOPs of one training sample, as ``torch.utils.flop_counter`` counts them.

    With ``key`` (the fingerprint of the architecture ``model`` was built from) the count is
    made once per process and architecture: a trial's diagnostics and its costs share it.

    Counted on a batch of two (batch norm needs more than one sample in train mode). A model
    made of convolutions, linear layers and layers without FLOPs (every resnas network but
    attention) is counted from the shapes its layers see in one forward pass, with the
    counter's own formulas: the same figure without ``FlopCounterMode``, whose first use in a
    process costs about a second (it imports ``torch._dynamo``). Any other model goes
    through ``FlopCounterMode``.
    """
    cached = None if key is None else _FLOPS.get((key, tuple(input_shape)))
    if cached is not None:
        return cached
    was_training = model.training
    model.train()
    x = torch.randn(2, *input_shape, device=device)
    try:
        total = _counted_by_shapes(model, x)
        if total is None:
            with FlopCounterMode(display=False) as counter:
                model(x).sum().backward()
            total = counter.get_total_flops()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if key is not None:
        _FLOPS[(key, tuple(input_shape))] = total // 2
    return total // 2


def _counted_by_shapes(model: nn.Module, x: torch.Tensor) -> int | None:
    """FLOPs of a forward and backward pass from layer shapes; None if a layer is not one we know."""
    from torch.utils.flop_counter import conv_backward_flop, conv_flop_count

    layers = (nn.Conv1d, nn.Conv2d, nn.Linear)
    for m in model.modules():  # exact classes: a subclass may compute something else
        if type(m) not in (*layers, *_NO_FLOPS) and not type(m).__module__.startswith("resnas."):
            return None  # resnas's own modules add, concatenate, gate and pool: nothing counted
    total = 0

    def count(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        (inp,) = args
        if isinstance(module, nn.Linear):
            rows = inp.numel() // module.in_features
            forward = 2 * rows * module.in_features * module.out_features
            total += forward * (2 + inp.requires_grad)  # forward, weight gradient, input gradient
            return
        w = module.weight.shape
        total += conv_flop_count(inp.shape, w, out.shape)
        mask = [inp.requires_grad, module.weight.requires_grad, False]
        grads = (inp.shape, w, None)  # the shapes of the input and weight gradients
        total += conv_backward_flop(out.shape, inp.shape, w, *[None] * 4, False, None, None, mask, out_val=grads)

    handles = [m.register_forward_hook(count) for m in model.modules() if type(m) in layers]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return total


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
        model(x).sum()  # the graph (what the backward would read) is counted, then dropped unrun
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return (saved + weights * (2 + optimizer_slots)) / 2**20


def latency_ms(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu", repeats: int = 7
) -> float:
    """Median batch-1 inference time in eval mode, device-synchronised, of ``repeats`` runs
    after a warm-up run."""
    was_training = model.training
    model.eval()
    x = torch.randn(1, *input_shape, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= 1:  # warm-up
                times.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return statistics.median(times)
