"""The forward keeps a block input only while a later block still reads it."""

from __future__ import annotations

import importlib.util
import weakref
from dataclasses import replace

import torch

from resnas import build, parse_space, sample
from resnas.arch import Connection
from resnas.export import export_source

SPEC = """
name: live
data: {dataset: synthetic, shape: [1, 8, 8], classes: 3, samples: 64}
network:
  stem: {channels: 8}
  stages:
    - {depth: 5, channels: 8}
residual: {kinds: [identity], span: 1, count: all}
search: {trials: 1}
"""
# Long connections: h0 is read by blocks 0 and 3, h1 by 1 and 4, h2 by block 2 only.
CONNECTIONS = ((0, 4), (1, 2), (1, 5), (3, 4))


def alive_before_each_block(model: torch.nn.Module, x: torch.Tensor) -> list[set[int]]:
    """Which block inputs h[k] are still alive when each block starts (eval, no grad)."""
    refs: list[weakref.ref] = []
    seen: list[set[int]] = []

    def before(_module, args):
        refs.append(weakref.ref(args[0]))
        seen.append({k for k, r in enumerate(refs) if r() is not None})

    hooks = [b.register_forward_pre_hook(before) for b in model.blocks]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def architecture():
    arch = sample(parse_space(SPEC), 0).architecture
    return replace(arch, connections=tuple(Connection(s, d, "identity") for s, d in CONNECTIONS))


def test_built_forward_frees_inputs_after_their_last_reader():
    seen = alive_before_each_block(build(architecture()), torch.randn(2, 1, 8, 8))
    # h[k] lives from block k until its last reader: h0 until block 3, h1 until 4, h3 until 3.
    assert seen == [{0}, {0, 1}, {0, 1, 2}, {0, 1, 3}, {1, 4}]


def test_span_one_network_holds_one_block_input():
    arch = sample(parse_space(SPEC), 0).architecture
    assert alive_before_each_block(build(arch), torch.randn(2, 1, 8, 8)) == [{k} for k in range(5)]


def test_exported_forward_frees_the_same_inputs_and_matches(tmp_path):
    arch = architecture()
    path = tmp_path / "net.py"
    path.write_text(export_source(arch))
    spec = importlib.util.spec_from_file_location("net", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    built = build(arch).eval()
    exported = module.build().eval()
    exported.load_state_dict(built.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert alive_before_each_block(exported, x) == alive_before_each_block(built, x)
    with torch.no_grad():
        assert torch.equal(exported(x), built(x))
