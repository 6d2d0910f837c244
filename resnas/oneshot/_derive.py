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

from dataclasses import dataclass, replace

import torch

from resnas.arch import Architecture, Connection
from resnas.oneshot._supernet import Supernet, kind_key, placement_key
from resnas.train import evaluate

SELECTIONS = ("perturbation", "magnitude")


@dataclass
class Importance:
    """Importance of each placement (and of each kind at it), in ``net.options`` order."""

    placement: dict[str, list[float]]  # selection -> one value per placement
    kind: dict[str, list[list[float]]]  # selection -> per placement, one value per kind
    base_val_loss: float
    evaluations: int  # validation passes the perturbation took (for the compute record)


@torch.no_grad()
def importance(net: Supernet, x_val: torch.Tensor, y_val: torch.Tensor, autocast: bool = False) -> Importance:
    def val_loss() -> float:
        return evaluate(net, x_val, y_val, autocast=autocast)[1]

    base = val_loss()
    evaluations = 1
    pert_place, pert_kind = [], []
    for m in net.mixed:
        names = list(m.ops)
        m.removed = frozenset(names)
        pert_place.append(val_loss() - base)
        evaluations += 1
        per_kind = []
        for name in names:
            if len(names) == 1:
                per_kind.append(pert_place[-1])
                continue
            m.removed = frozenset([name])
            per_kind.append(val_loss() - base)
            evaluations += 1
        m.removed = frozenset()
        pert_kind.append(per_kind)
    weights = [w.float().cpu() for w in net.mixing()]
    mag_place = [float(1 - w[0]) for w in weights]
    mag_kind = [[float(v) for v in w[1:]] for w in weights]
    return Importance(
        {"perturbation": pert_place, "magnitude": mag_place},
        {"perturbation": pert_kind, "magnitude": mag_kind},
        base,
        evaluations,
    )


def ranking(net: Supernet, imp: Importance, selection: str) -> list[dict]:
    """Placements, most important first, with both importances and the kind each would take."""
    rows = []
    for i, place in enumerate(net.options):
        kinds = imp.kind[selection][i]
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
