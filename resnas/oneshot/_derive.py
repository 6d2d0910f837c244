"""From a trained supernet to one architecture that obeys the spec.

Two importances per placement and per kind:

* **perturbation** (Wang et al. 2021, "Rethinking Architecture Selection in Differentiable
  NAS"): the validation loss of the supernet with the placement (or one kind there) turned
  into ``none``, minus the supernet's own. A connection the network relies on costs loss
  when removed, whatever its architecture weight says.
* **magnitude** (DARTS): the architecture weight not on ``none`` (per kind: that kind's).

The derivation ranks placements by the chosen importance, keeps the number of them that
the spec's ``count`` allows which maximises the summed importance (so a connection whose
removal does not hurt is left out, down to ``count``'s lower bound), and gives each the
kind with the highest importance there. Every placement it picks comes from the same
placement list sampling draws from, so the result obeys span, scope, kinds and shape rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from resnas.arch import Architecture, Connection
from resnas.oneshot._supernet import Supernet, kind_key, placement_key

SELECTIONS = ("perturbation", "magnitude")


@dataclass
class Importance:
    """Importance of each placement (and of each kind at it), in ``net.options`` order."""

    placement: dict[str, list[float]]  # selection -> one value per placement
    kind: dict[str, list[list[float]]]  # selection -> per placement, one value per kind
    base_val_loss: float
    evaluations: int  # validation passes the perturbation took
    # The block each pass started from (0: a full pass), for the compute record.
    starts: list[int] = field(default_factory=list)


@torch.no_grad()
def importance(
    net: Supernet,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    autocast: bool = False,
    counts: list[int] | None = None,
    batch_size: int = 512,
) -> Importance:
    """Both importances, on the whole validation split.

    A perturbation at a placement into block ``k`` changes nothing before block ``k``, so
    each perturbed pass reuses the unperturbed pass's block outputs up to there and
    recomputes only the rest (the same losses as full passes, about half the work). With
    ``counts``, the per-kind passes run only at the placements the perturbation selection
    could keep (every one whose removal costs loss, topped up to ``min(counts)``); the
    others' kinds are unmeasured (NaN) and :func:`ranking` gives them the magnitude's kind.
    """
    net.eval()
    net.set_mixing()
    device = x_val.device.type
    chunks = []
    for start in range(0, len(y_val), batch_size):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            chunks.append((net.states(x_val[start : start + batch_size]), y_val[start : start + batch_size]))
    n_blocks = len(net.blocks)
    starts: list[int] = []

    def val_loss(first: int) -> float:
        total = 0.0
        for states, yb in chunks:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                logits = net.logits_from(states, first).float()
            total += F.cross_entropy(logits, yb, reduction="sum").item()
        starts.append(first)
        return total / max(1, len(y_val))

    base = val_loss(n_blocks)
    starts[0] = 0  # the unperturbed pass ran every block
    firsts = [p.dst - 1 for p in net.options]
    pert_place = []
    for m, first in zip(net.mixed, firsts):
        m.removed = frozenset(m.ops)
        pert_place.append(val_loss(first) - base)
        m.removed = frozenset()
    measured = range(len(net.mixed))
    if counts is not None:
        order = sorted(measured, key=lambda i: -pert_place[i])
        keep = max(sum(v > 0 for v in pert_place), min(counts))
        measured = set(order[:keep])
    pert_kind = []
    for i, (m, first) in enumerate(zip(net.mixed, firsts)):
        names = list(m.ops)
        if len(names) == 1:
            pert_kind.append([pert_place[i]])
            continue
        if i not in measured:
            pert_kind.append([math.nan] * len(names))
            continue
        per_kind = []
        for name in names:
            m.removed = frozenset([name])
            per_kind.append(val_loss(first) - base)
        m.removed = frozenset()
        pert_kind.append(per_kind)
    weights = [w.float().cpu() for w in net.mixing()]
    mag_place = [float(1 - w[0]) for w in weights]
    mag_kind = [[float(v) for v in w[1:]] for w in weights]
    return Importance(
        {"perturbation": pert_place, "magnitude": mag_place},
        {"perturbation": pert_kind, "magnitude": mag_kind},
        base,
        len(starts),
        starts,
    )


def ranking(net: Supernet, imp: Importance, selection: str) -> list[dict]:
    """Placements, most important first, with both importances and the kind each would take."""
    rows = []
    for i, place in enumerate(net.options):
        kinds = imp.kind[selection][i]
        if any(math.isnan(v) for v in kinds):  # not measured: the placement cannot be selected
            kinds = imp.kind["magnitude"][i]
        best = max(range(len(kinds)), key=lambda k: (kinds[k], -k))
        rows.append(
            {
                "placement": placement_key(place),
                "src": place.src,
                "dst": place.dst,
                "kind": kind_key(place.kinds[best]),
                "perturbation": round(imp.placement["perturbation"][i], 6),
                "magnitude": round(imp.placement["magnitude"][i], 6),
                "_index": i,
                "_kind_index": best,
            }
        )
    rows.sort(key=lambda r: (-imp.placement[selection][r["_index"]], r["src"], r["dst"]))
    return rows


def choose_count(scores: list[float], counts: list[int]) -> int:
    """The allowed count whose top scores sum highest (the fewest connections on a tie)."""
    best, best_sum = counts[0], None
    for c in counts:
        total = sum(scores[:c])
        if best_sum is None or total > best_sum + 1e-12:
            best, best_sum = c, total
    return best


def derive(net: Supernet, imp: Importance, selection: str, counts: list[int], gate_mode: str) -> Architecture:
    """The architecture ``selection`` picks, with a count among ``counts``."""
    rows = ranking(net, imp, selection)
    scores = [imp.placement[selection][r["_index"]] for r in rows]
    keep = rows[: choose_count(scores, counts)]
    connections = []
    for r in keep:
        kind, shortcut = net.options[r["_index"]].kinds[r["_kind_index"]]
        connections.append(Connection(r["src"], r["dst"], kind, shortcut))
    return replace(net.base, connections=tuple(connections), gate_mode=gate_mode)


def public(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
