"""``Architecture``: one concrete network, with no choices left.

It is the hinge of the pipeline: the builder, the storage, the exporter and the reports
all share it. It is a frozen value with a JSON round-trip and a canonical fingerprint:
two architectures that build the same network have the same fingerprint, and anything
that changes the built network changes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Stem:
    channels: int
    kernel: int = 3
    stride: int = 1
    pool: str = "none"  # none | max


@dataclass(frozen=True)
class Block:
    type: str  # basic | bottleneck | plain | mlp | linear | dense | transition | attention | feedforward
    in_channels: int
    width: int  # inner width (bottleneck: channels before expansion; dense: the growth rate)
    out_channels: int
    stride: int = 1
    stage: int = 0
    groups: int = 1  # grouped 3x3 conv of a bottleneck (ResNeXt's cardinality)
    heads: int = 0  # attention heads of an attention sublayer


@dataclass(frozen=True)
class Connection:
    """Carries ``h[src]`` (input of block ``src``) into the output of block ``dst - 1``."""

    src: int
    dst: int
    kind: str  # identity | projection | pad | gated
    shortcut: str | None = None  # gated only: identity | projection | pad
    merge: str = "add"  # add | concat (DenseNet: the carried tensor is concatenated, not added)

    @property
    def span(self) -> int:
        return self.dst - self.src


# Fields added after format 1, with their defaults (left out of the JSON at these values).
_LATER_FIELDS: dict[str, dict[str, Any]] = {
    "arch": {"branch_scale": "none", "drop_path": 0.0},
    "block": {"groups": 1, "heads": 0},
    "connection": {"merge": "add"},
}


def _drop_defaults(data: dict[str, Any], defaults: dict[str, Any]) -> None:
    for key, value in defaults.items():
        if data.get(key) == value:
            data.pop(key)


@dataclass(frozen=True)
class Architecture:
    kind: str  # conv2d | conv1d | mlp | transformer
    input_shape: tuple[int, ...]
    num_classes: int
    stem: Stem
    blocks: tuple[Block, ...]
    connections: tuple[Connection, ...] = ()
    activation: str = "relu"
    norm: str = "batch"
    order: str = "post"  # post: merge before the block's last activation (v1); pre: v2
    gate_mode: str = "shortcut"
    gate_bias_init: float = -1.0
    head_pool: str = "avg"
    head_dropout: float = 0.0
    init: str = "torch"
    # A learned scale on the branch of every block a connection ends at: none | rezero | skipinit | layerscale.
    branch_scale: str = "none"
    # Stochastic depth (Huang et al. 2016): the rate of the last block; earlier blocks get less, linearly.
    drop_path: float = 0.0
    _fingerprint: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Canonical connection order (by source, then destination): the merge order.
        conns = tuple(sorted(self.connections, key=lambda c: (c.dst, c.src)))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        conns = tuple(self._canonical_concat(c) for c in conns)
        object.__setattr__(self, "connections", conns)
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if not any(c.kind == "gated" for c in conns):
            # Gate settings do not change a network without gates: keep the fingerprint canonical.
            object.__setattr__(self, "gate_mode", "shortcut")
            object.__setattr__(self, "gate_bias_init", -1.0)
        if not conns:
            # Branch scales and dropped paths exist only on blocks a connection ends at.
            object.__setattr__(self, "branch_scale", "none")
            object.__setattr__(self, "drop_path", 0.0)

    def _canonical_concat(self, conn: Connection) -> Connection:
        """A concatenation carries h unchanged (its kind is identity) and needs h and the output
        at one spatial size; drawn across a stride it is an addition of the drawn kind."""
        if conn.merge != "concat":
            return conn
        if self.stride_between(conn.src, conn.dst) != 1:
            return Connection(conn.src, conn.dst, conn.kind, conn.shortcut, "add")
        return Connection(conn.src, conn.dst, "identity", None, "concat")

    # ---- derived views -------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def incoming(self, block_index: int) -> tuple[Connection, ...]:
        """Connections merged into the output of block ``block_index``, in merge order."""
        return tuple(c for c in self.connections if c.dst == block_index + 1)

    def channels_at(self, k: int) -> int:
        """Channels of ``h[k]``: the stem's output for k=0, else block k-1's output."""
        return self.stem.channels if k == 0 else self.blocks[k - 1].out_channels

    def stride_between(self, i: int, j: int) -> int:
        stride = 1
        for block in self.blocks[i:j]:
            stride *= block.stride
        return stride

    def kinds_used(self) -> tuple[str, ...]:
        return tuple(sorted({c.kind for c in self.connections}))

    # ---- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_fingerprint")
        # Fields added after format 1 are left out at their defaults, so an architecture
        # that does not use them keeps the fingerprint it always had.
        _drop_defaults(data, _LATER_FIELDS["arch"])
        for block in data["blocks"]:
            _drop_defaults(block, _LATER_FIELDS["block"])
        for conn in data["connections"]:
            _drop_defaults(conn, _LATER_FIELDS["connection"])
        data["input_shape"] = list(self.input_shape)
        data["format"] = FORMAT_VERSION
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, separators=None if indent else (",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        data = dict(data)
        data.pop("format", None)
        data["stem"] = Stem(**data["stem"])
        data["blocks"] = tuple(Block(**b) for b in data["blocks"])
        data["connections"] = tuple(Connection(**c) for c in data.get("connections", ()))
        data["input_shape"] = tuple(data["input_shape"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        return cls.from_dict(json.loads(text))

    @property
    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of the canonical JSON."""
        if not self._fingerprint:
            digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:16]
            object.__setattr__(self, "_fingerprint", digest)
        return self._fingerprint
