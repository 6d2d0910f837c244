"""In-place operations (``nn.ReLU(inplace=True)``, a connection's sum written into the block's
output) where the builder proves them safe: every sampled architecture of every shipped
space computes, forward and backward, exactly what the same network computes with every
operation out of place. An in-place op that overwrote a tensor something still reads would
show here as an autograd error (a saved tensor modified) or as a different output or gradient
(a connection reading an overwritten h[k])."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from helpers import SPACES, TINY
from torch import nn

from resnas import build, load_space, sample
from resnas.arch import Connection
from resnas.nn.skips import IdentityShortcut, PadShortcut, ProjectionShortcut

BIG = {"resnet34", "resnet50", "resnext50_32x4d", "densenet121"}  # one architecture each: slow on a CPU


def out_of_place(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every in-place switch off: the reference."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return ref


def in_place_count(model: nn.Module) -> int:
    return sum(bool(getattr(m, "inplace", False)) for m in model.modules())


def input_of(arch, batch: int = 2) -> torch.Tensor:
    shape = list(arch.input_shape)
    if len(shape) == 3 and shape[-1] > 32:  # the presets' 224 px: the connections are what is tested
        shape = [shape[0], 32, 32]
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))


def sampled() -> list[tuple[str, object]]:
    """Every preset, and architectures sampled from each search space and the tests' tiny one."""
    out = []
    for spec in [*SPACES, TINY]:
        space = load_space(spec)
        seeds = [0] if space.spec.search.trials == 1 or spec.stem in BIG else range(8)
        out += [(f"{spec.stem}_{seed}", sample(space, seed).architecture) for seed in seeds]
    return out


ARCHS = sampled()


def run(model: nn.Module, x: torch.Tensor, keep_inputs: bool) -> dict[str, torch.Tensor]:
    """One train-mode forward and backward: the output, every gradient (the input's, and with
    ``keep_inputs`` each block input's, kept as the gradient diagnosis keeps them)."""
    model.train()
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    inputs: list[torch.Tensor] = []

    def keep(_module, args):
        args[0].retain_grad()
        inputs.append(args[0])

    hooks = [b.register_forward_pre_hook(keep) for b in model.blocks] if keep_inputs else []
    torch.manual_seed(0)  # the same DropPath masks and dropout
    out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    for h in hooks:
        h.remove()
    result = {"output": out.detach(), "input grad": x.grad}
    result |= {f"h{k} grad": h.grad for k, h in enumerate(inputs)}
    result |= {f"{name} grad": p.grad for name, p in model.named_parameters()}
    result |= {name: b for name, b in model.named_buffers()}  # BN statistics updated in train mode
    model.eval()
    with torch.no_grad():
        result["eval output"] = model(x.detach())
    return result


def assert_identical(got: dict, want: dict, name: str) -> None:
    assert got.keys() == want.keys(), name
    for key, value in want.items():
        if value is None:
            assert got[key] is None, f"{name}: {key}"
        else:  # to the bit (a NaN of a diverging variant equals a NaN)
            torch.testing.assert_close(got[key], value, rtol=0, atol=0, equal_nan=True, msg=f"{name}: {key}")


@pytest.mark.parametrize("name,arch", ARCHS, ids=[n for n, _ in ARCHS])
def test_in_place_network_equals_out_of_place(name, arch):
    torch.manual_seed(0)
    model = build(arch)
    ref = out_of_place(model)
    x = input_of(arch)
    assert_identical(run(model, x, keep_inputs=True), run(ref, x, keep_inputs=True), name)


VARIANTS = [(n, a) for n, a in ARCHS if n.endswith(("_0", "_1")) and n.rsplit("_", 1)[0] not in BIG]


@pytest.mark.parametrize("name,arch", VARIANTS, ids=[n for n, _ in VARIANTS])
def test_every_block_with_relu_each_norm_and_order(name, arch):
    """The spaces' blocks as ReLU networks, with and without a norm, pre and post order: the
    cases where an activation may or may not see the block input itself."""
    # A transformer's tokens take no batch norm (its connections' projections use the spec's norm).
    for norm in ("layer", "none") if arch.kind == "transformer" else ("batch", "layer", "none"):
        for order in ("post", "pre"):
            variant = dataclasses.replace(arch, activation="relu", norm=norm, order=order)
            torch.manual_seed(0)
            model = build(variant)
            ref = out_of_place(model)
            x = input_of(variant)
            assert_identical(run(model, x, True), run(ref, x, True), f"{name} {norm} {order}")


def test_every_space_runs_something_in_place():
    """The check above is not vacuous: relu networks run their activations and sums in place."""
    counted = {}
    for name, arch in ARCHS:
        counted[name.rsplit("_", 1)[0]] = counted.get(name.rsplit("_", 1)[0], 0) + in_place_count(build(arch))
    relu = {n for n, a in ARCHS if a.activation == "relu"}
    assert all(counted[n.rsplit("_", 1)[0]] > 0 for n in relu)


def test_resnet20_runs_as_torchvision_does():
    """Every ReLU in place (after a norm), every connection adds into the block's output."""
    space = load_space(next(p for p in SPACES if p.stem == "cifar_resnet20"))
    model = build(sample(space, 0).architecture)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    adds = [m for m in model.modules() if isinstance(m, IdentityShortcut | ProjectionShortcut | PadShortcut)]
    assert relus and all(m.inplace for m in relus)
    assert adds and all(m.inplace for m in adds)


CONNECTED = """
name: connected
data: {dataset: synthetic, shape: [3, 8, 8], classes: 3, samples: 32}
network:
  stem: {channels: 8}
  stages: [{depth: 3, channels: 8}, {depth: 3, channels: 16, stride: 2}]
residual: {kinds: [identity], span: 1, count: all, on_shape_change: projection}
search: {trials: 1}
"""


def several_readers(order: str, norm: str, scale: str, gate: str):
    """Connections of every kind, several from one h[k] (h0 and h1 are read by four blocks),
    several into one block (a concatenation among them), with branch scales and dropped paths."""
    from resnas import parse_space

    arch = sample(parse_space(CONNECTED), 0).architecture
    conns = (
        Connection(0, 1, "identity"),
        Connection(0, 2, "gated", "identity"),
        Connection(0, 4, "projection"),
        Connection(1, 2, "identity"),
        Connection(1, 3, "pad"),
        Connection(1, 5, "gated", "projection"),
        Connection(2, 3, "identity"),
        Connection(3, 6, "gated", "pad"),
        Connection(4, 5, "identity"),
        Connection(4, 6, "identity", None, "concat"),
        Connection(5, 6, "identity"),
    )
    return dataclasses.replace(
        arch, connections=conns, order=order, norm=norm, branch_scale=scale, drop_path=0.3, gate_mode=gate
    )


@pytest.mark.parametrize("order", ["post", "pre"])
@pytest.mark.parametrize("norm", ["batch", "layer", "group", "none"])
@pytest.mark.parametrize("scale", ["none", "rezero", "layerscale"])
@pytest.mark.parametrize("gate", ["shortcut", "highway"])
def test_connections_sharing_a_source(order, norm, scale, gate):
    arch = several_readers(order, norm, scale, gate)
    torch.manual_seed(0)
    model = build(arch)
    if scale == "rezero":  # not the identity at initialisation: the branches count
        with torch.no_grad():
            for b in model.blocks:
                if b.scale is not None:
                    b.scale.weight.fill_(0.5)
    ref = out_of_place(model)
    x = input_of(arch, batch=4)
    assert_identical(run(model, x, True), run(ref, x, True), f"{order} {norm} {scale} {gate}")


def test_a_wrong_in_place_op_is_caught():
    """The check catches what it guards against: a pre-activation branch without a norm
    starts act(x), and an in-place act there overwrites h[k], which its connection reads."""
    arch = several_readers("pre", "none", "none", "shortcut")
    torch.manual_seed(0)
    model = build(arch)
    assert not any(b.act.inplace for b in model.blocks)  # the builder keeps these out of place
    ref = out_of_place(model)
    for b in model.blocks:
        b.act.inplace = True
    x = input_of(arch, batch=4)
    with pytest.raises((AssertionError, RuntimeError)):
        assert_identical(run(model, x, True), run(ref, x, True), "forced")


def test_autocast_sums_keep_their_dtype():
    """Under autocast a bfloat16 branch plus a float32 carried path (a transformer's positions,
    a LayerScale) is float32: the sum is not written into the bfloat16 output."""
    for name, arch in ARCHS:
        if not (name.startswith(("mnist1d_transformer", "adaptive")) and name[-1] in "012"):
            continue
        torch.manual_seed(0)
        model = build(arch).eval()
        ref = out_of_place(model)
        x = input_of(arch)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            got, want = model(x), ref(x)
        assert got.dtype == want.dtype and torch.equal(got, want), name


def test_diagnosis_and_scores_equal_out_of_place():
    """The gradient profile (retain_grad on every block input) and every training-free score
    (naswot reads each activation's input in a forward pre-hook, before it is overwritten)."""
    from resnas.diagnose import gradient_profile
    from resnas.scores import SCORES, zero_cost_scores

    picked = [(n, a) for n, a in ARCHS if n.endswith("_0") or n.endswith("_1")]
    for name, arch in picked:
        if name.rsplit("_", 1)[0] in BIG:
            continue
        torch.manual_seed(0)
        model = build(arch)
        ref = out_of_place(model)
        x = input_of(arch, batch=8)
        y = torch.arange(8) % arch.num_classes
        names = tuple(s for s in SCORES if s != "flops")  # flops: shapes only
        got, want = [], []
        for net, out in ((model, got), (ref, want)):
            torch.manual_seed(0)  # the same DropPath masks
            out += [gradient_profile(net, x, y), zero_cost_scores(net, x, y, names)[0]]
        assert got == want, name


def test_supernet_equals_out_of_place():
    """The one-shot supernet's mixed connections feed one output to every candidate: they stay
    out of place; the activations after them still run in place."""
    from resnas import SpecError, parse_space
    from resnas.oneshot import base_candidate, build_supernet, check_supported

    tried = 0
    for path in SPACES:
        space = parse_space(path.read_text(), str(path))
        try:
            check_supported(space)
        except SpecError:
            continue
        if path.stem in BIG:
            continue
        # Two builds, not a deep copy: a mixed connection's fast path holds closures over its ops.
        net, ref = build_supernet(space, 0), build_supernet(space, 0)
        for m in ref.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
        gen = torch.Generator().manual_seed(3)
        for a, b in zip(net.alphas, ref.alphas):
            a.data.normal_(0, 1, generator=gen)
            b.data.copy_(a.data)
        assert all(not getattr(op, "inplace", False) for m in net.mixed for op in m.ops.values())
        arch = base_candidate(space).architecture
        x = input_of(arch)
        assert_identical(run(net, x, True), run(ref, x, True), path.stem)
        tried += in_place_count(net) > 0
    assert tried >= 2


@pytest.mark.parametrize("seed", range(4))
def test_trial_diagnostics_equal_out_of_place(monkeypatch, seed):
    """A trial's diagnostics share one forward pass, whose graph two backward passes read (the
    loss's, then the summed output's for the Jacobians): the in-place ops leave it whole."""
    import resnas.screening as screening

    space = load_space(TINY)
    candidate = sample(space, seed)
    build_initial = screening.initial_model
    got = screening.candidate_diagnostics(space, candidate, 0)
    monkeypatch.setattr(screening, "initial_model", lambda arch, s: out_of_place(build_initial(arch, s)))
    want = screening.candidate_diagnostics(space, candidate, 0)
    del got["score_ms"], want["score_ms"]
    assert got == want
