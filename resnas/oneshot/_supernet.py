"""The supernet: one network that holds every placement a spec allows, each with every kind.

It is a :class:`resnas.nn.ResidualNetwork` built from the spec's fixed layout with no
connections, whose blocks then receive one :class:`MixedShortcut` per incoming placement.
Each mixed shortcut holds the same connection modules ``resnas.build`` makes
(``make_shortcut``), one per kind that can go there, and mixes them with a softmax over
``none`` plus those kinds (DARTS's continuous relaxation, Liu et al. 2019, with ``none`` as
one of the choices rather than a per-kind sigmoid gate): the weights compete, so a
placement that is not worth having can put its mass on ``none``, and removing a kind is
well defined (its share goes to ``none``).

Module names follow the built network: a block's mixed shortcut from ``h5`` sits at
``blocks.7.shortcuts.h5`` and the projection inside it at ``blocks.7.shortcuts.h5.ops.projection``;
:meth:`Supernet.derived_state_dict` drops the ``ops.<kind>`` level, so the supernet's
weights load into ``resnas.build(derived)`` (strict).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from resnas.arch import Architecture, Connection
from resnas.nn.network import ResidualNetwork, free_after, init_kaiming, make_shortcut
from resnas.nn.skips import GatedShortcut, IdentityShortcut, PadShortcut, ProjectionShortcut, pad_shortcut
from resnas.space._layout import Placement, Resolved


def kind_key(resolved: Resolved) -> str:
    """``projection``, or ``gated_projection`` for a gate over a projection: a module name."""
    kind, shortcut = resolved
    return kind if shortcut is None else f"{kind}_{shortcut}"


def placement_key(place: Placement) -> str:
    return f"{place.src}->{place.dst}"


def _carried(op: nn.Module) -> Callable[[torch.Tensor], tuple[torch.Tensor | None, torch.Tensor]] | None:
    """For a connection that adds ``gate * S(h)`` to the block's output, a function of ``h``
    giving ``(gate or None, S(h))``; None for any other merge (highway, concatenation)."""
    if isinstance(op, IdentityShortcut):
        return lambda h: (None, h)
    if isinstance(op, PadShortcut):
        return lambda h: (None, pad_shortcut(h, op.stride, op.extra_channels))
    if isinstance(op, ProjectionShortcut):
        return lambda h: (None, op.norm(op.conv(h)))
    if isinstance(op, GatedShortcut) and op.mode == "shortcut":

        def gated(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            s = op.norm(op.conv(h)) if op.conv is not None else pad_shortcut(h, op.stride, op.extra_channels)
            return torch.sigmoid(op.gate(h)), s

        return gated
    return None


class MixedShortcut(nn.Module):
    """``w_none * out + sum_k w_k * op_k(out, h)``: every candidate merge, weighted.

    The additive kinds make this ``out + sum_k w_k * S_k(h)`` (the weights sum to one), which
    is how it is computed when every kind adds: kinds that carry the same ``S(h)`` (an
    identity and a gate over an identity) share one product, ``out + (w_1 + w_2 * t) * h``,
    a few operations instead of a dozen per placement. ``weights`` (softmax over none and
    the kinds) are set by the supernet before each forward pass; a kind named in
    ``removed`` acts as ``none`` (perturbation).
    """

    def __init__(self, ops: dict[str, nn.Module]):
        super().__init__()
        self.ops = nn.ModuleDict(ops)
        self.weights: torch.Tensor | None = None
        self.removed: frozenset[str] = frozenset()
        carried = {name: _carried(op) for name, op in ops.items()}
        self._carried = None if any(c is None for c in carried.values()) else carried

    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        w = self.weights
        if self._carried is None:
            return self.reference(out, h)
        terms: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(S(h)) -> (S(h), coefficient)
        for k, (name, carry) in enumerate(self._carried.items(), start=1):
            if name in self.removed:
                continue
            gate, s = carry(h)
            held = terms.get(id(s))
            coef = w[k] if gate is None else gate * w[k]
            if held is not None:
                coef = held[1] + w[k] if gate is None else torch.addcmul(held[1], gate, w[k])
            terms[id(s)] = (s, coef)
        for s, coef in terms.values():
            out = torch.addcmul(out, coef, s)
        return out

    def reference(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The mixture computed kind by kind, as written above (the general case)."""
        w = self.weights
        merged = w[0] * out
        for k, (name, op) in enumerate(self.ops.items(), start=1):
            merged = merged + w[k] * (out if name in self.removed else op(out, h))
        return merged


class Supernet(ResidualNetwork):
    """``base`` (a fixed layout, no connections) with a mixed shortcut at every placement.

    The architecture weights are not module parameters (``parameters()`` yields the network
    weights only, so the spec's optimizer trains them as it trains any trial): they live in
    ``alphas``, one vector per placement, ``[none, kinds...]``.
    """

    def __init__(self, base: Architecture, options: list[Placement], gate_mode: str):
        super().__init__(base)
        self.base = base
        self.options = list(options)
        self.temperature = 1.0
        self.mixed: list[MixedShortcut] = []
        self.alphas: list[torch.Tensor] = []
        self.kinds: list[list[Resolved]] = []
        by_block: dict[int, list[Placement]] = {}
        for place in self.options:
            by_block.setdefault(place.dst - 1, []).append(place)
        for k, places in sorted(by_block.items()):
            mixed = {}
            for place in sorted(places, key=lambda p: p.src):  # merge order: by source, as built
                ops = {}
                for resolved in place.kinds:
                    conn = Connection(place.src, place.dst, *resolved)
                    single = replace(base, connections=(conn,), gate_mode=gate_mode)
                    # Out of place (the default): every candidate reads the same ``out``.
                    ops[kind_key(resolved)] = make_shortcut(single, conn)
                mixed[f"h{place.src}"] = MixedShortcut(ops)
            self.blocks[k].shortcuts = nn.ModuleDict(mixed)
        self.free_after = free_after(self.blocks)
        # Registration order (by destination, then source) differs from self.options' (by source):
        # keep one list in the options' order.
        for place in self.options:
            m = self.blocks[place.dst - 1].shortcuts[f"h{place.src}"]
            self.mixed.append(m)
            self.alphas.append(torch.zeros(1 + len(place.kinds), requires_grad=True))
            self.kinds.append(list(place.kinds))
        if base.init == "kaiming":
            init_kaiming(self)

    def arch_parameters(self) -> list[torch.Tensor]:
        return self.alphas

    def arch_to(self, device: torch.device) -> None:
        for a in self.alphas:
            a.data = a.data.to(device)
            if a.grad is not None:
                a.grad = a.grad.to(device)

    def mixing(self) -> list[torch.Tensor]:
        """Softmax over ``[none, kinds...]`` at the current temperature, per placement."""
        return [torch.softmax(a / self.temperature, dim=0) for a in self.alphas]

    def set_mixing(self) -> None:
        for m, w in zip(self.mixed, self.mixing()):
            m.weights = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.set_mixing()
        return super().forward(x)

    def states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[h0, h1, ..., hN]``: the stem's output and every block's, at the current weights."""
        self.set_mixing()
        h = [self.stem(x)]
        for block in self.blocks:
            h.append(block(h[-1], h))
        return h

    def logits_from(self, states: list[torch.Tensor], first: int) -> torch.Tensor:
        """The output with blocks ``first`` on recomputed from ``states`` (those before are
        unchanged by anything at or after block ``first``). Mixing weights as last set."""
        h = list(states[: first + 1])
        for block in self.blocks[first:]:
            h.append(block(h[-1], h))
        return self.head(h[-1])

    def derived_state_dict(self, arch: Architecture) -> dict[str, torch.Tensor]:
        """The supernet's weights under the names of ``resnas.build(arch)``."""
        keep = {
            f"blocks.{c.dst - 1}.shortcuts.h{c.src}.ops.{kind_key((c.kind, c.shortcut))}." for c in arch.connections
        }
        out = {}
        for name, tensor in self.state_dict().items():
            if ".shortcuts." not in name:
                out[name] = tensor
                continue
            for prefix in keep:
                if name.startswith(prefix):
                    head = prefix.split(".ops.")[0]
                    out[f"{head}.{name[len(prefix) :]}"] = tensor
        return out
