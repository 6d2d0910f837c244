"""Vanishing gradients show up in a deep plain network, and identity connections fix them."""

from __future__ import annotations

import dataclasses

import torch
from sklearn.datasets import load_digits

from resnas import Connection, build, load_space, sample


def first_last_ratio(arch) -> float:
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:128], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(y[:128])
    model = build(arch)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    first = model.blocks[0].conv.weight.grad.norm().item()
    last = model.blocks[-1].conv.weight.grad.norm().item()
    return last / first


def test_plain_deep_gradients_vanish_and_identity_connections_restore_them():
    arch = sample(load_space("search_spaces/plain_deep.yaml"), 0).architecture
    assert arch.num_blocks >= 30 and not arch.connections
    plain = first_last_ratio(arch)
    skips = tuple(Connection(k, k + 1, "identity") for k in range(arch.num_blocks))
    residual = first_last_ratio(dataclasses.replace(arch, connections=skips))
    print(f"\nlast/first block gradient norm: plain {plain:.3g}, with identity connections {residual:.3g}")
    assert plain >= 1000
    assert 0.1 <= residual <= 10
