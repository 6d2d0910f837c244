"""Generate a standalone, readable PyTorch module from an ``Architecture``.

The file imports only torch. It holds the helper, block and connection classes this
architecture uses and no others, the network class, ``build()`` and ``__all__``. Its
``state_dict`` keys equal those of the resnas-built module, so weights load into
either. It is generated from the ``Architecture``, not by tracing: Python source
outlives pickles and graph formats, and a colleague can read and edit it. The output is
deterministic (same architecture and header, same bytes) and formatted as
``ruff format`` would.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterable
from typing import Any

from resnas.arch import Architecture, Connection
from resnas.nn.blocks import act_in_place, merges_in_place
from resnas.nn.layers import scale_shape_and_init
from resnas.nn.network import drop_path_rates, free_after, scaled, token_count
from resnas.space._model import DataSpec

ACT_CLASSES = {"relu": "nn.ReLU", "gelu": "nn.GELU", "silu": "nn.SiLU", "tanh": "nn.Tanh", "sigmoid": "nn.Sigmoid"}
BLOCK_CLASSES = {
    "basic": "BasicBlock",
    "bottleneck": "BottleneckBlock",
    "plain": "PlainBlock",
    "linear": "LinearBlock",
    "mlp": "MlpBlock",
    "dense": "DenseBlock",
    "transition": "TransitionBlock",
    "attention": "AttentionBlock",
    "feedforward": "FeedForwardBlock",
}


_SCALE_SOURCE = (
    "class Scale(nn.Module):\n"
    '    """A learned scale on a residual branch (ReZero / SkipInit: a scalar at 0; LayerScale: per channel)."""\n\n'
    "    def __init__(self, shape: tuple[int, ...], init: float) -> None:\n"
    "        super().__init__()\n"
    "        self.weight = nn.Parameter(torch.full(shape, init))\n\n"
    "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
    "        return self.weight * x\n"
)
_DROP_PATH_SOURCE = (
    "class DropPath(nn.Module):\n"
    '    """Stochastic depth (Huang et al. 2016), as timm\'s drop_path: drops a sample\'s branch with\n'
    '    probability p in training and scales the kept ones by 1 / (1 - p)."""\n\n'
    "    def __init__(self, p: float) -> None:\n"
    "        super().__init__()\n"
    "        self.p = p\n\n"
    "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
    "        if self.p == 0.0 or not self.training:\n"
    "            return x\n"
    "        keep = 1.0 - self.p\n"
    "        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)\n"
    "        return x * mask.div_(keep)\n"
)

_ADD_INTO_SOURCE = (
    "def add_into(out: torch.Tensor, s: torch.Tensor) -> torch.Tensor:\n"
    '    """out + s, written into out (the block\'s own new tensor, which nothing else reads: as\n'
    "    torchvision's out += identity) unless the sum needs another dtype (autocast) or shape.\n"
    '    """\n'
    "    if out.dtype == s.dtype and out.shape == s.shape:\n"
    "        return out.add_(s)\n"
    "    return out + s\n"
)


def _adds(arch: Architecture, conn: Connection) -> bool:
    """Whether a connection adds S(h) to the block's output (a highway and a concatenation do not)."""
    return conn.merge != "concat" and not (conn.kind == "gated" and arch.gate_mode == "highway")


# The same function as the builder's: one definition, copied verbatim.
_FREE_AFTER_SOURCE = inspect.getsource(free_after)


def class_name_for(study: str) -> str:
    """``adaptive`` -> ``AdaptiveNet``; ``cifar_resnet20`` -> ``CifarResnet20Net``."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", study) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Residual"
    if name[0].isdigit():
        name = "Net" + name
    return name if name.endswith("Net") else name + "Net"


def _block_key(arch: Architecture, block_type: str) -> str:
    return "linear" if arch.kind == "mlp" and block_type == "plain" else block_type


def _shortcut_class(arch: Architecture, conn: Connection) -> str:
    if conn.merge == "concat":
        return "ConcatShortcut" if arch.blocks[conn.dst - 1].type == "dense" else "FusedConcatShortcut"
    if conn.kind == "gated":
        return f"Gated{(conn.shortcut or 'identity').capitalize()}Shortcut"
    return f"{conn.kind.capitalize()}Shortcut"


class _Writer:
    def __init__(self, arch: Architecture, class_name: str):
        self.arch = arch
        self.class_name = class_name
        # A transformer's shortcuts and norms are an mlp's (Linear, LayerNorm on the last dimension).
        self.kind = "mlp" if arch.kind == "transformer" else arch.kind
        self.grouped = any(b.groups != 1 for b in arch.blocks)
        self.pre = arch.order == "pre"
        self.act = ACT_CLASSES[arch.activation]
        # As the builder: which activations overwrite their input, and whether the additive
        # connections add into the block's output (every built-in block's).
        self.relu = arch.activation == "relu"
        self.add_into = all(merges_in_place(_block_key(arch, b.type)) for b in arch.blocks)
        self.bias = "True" if arch.norm == "none" else "False"

    # ---- helpers -------------------------------------------------------------
    def helpers(self) -> str:
        arch, kind = self.arch, self.kind
        if kind == "mlp":
            layer = (
                f"def linear(cin: int, cout: int) -> nn.Linear:\n    return nn.Linear(cin, cout, bias={self.bias})\n"
            )
        else:
            conv = "nn.Conv2d" if kind == "conv2d" else "nn.Conv1d"
            if self.grouped:
                layer = (
                    "def conv(\n    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1\n"
                    f") -> {conv}:\n"
                    '    """A conv with "same" padding (strided: ceil(size / stride) outputs)."""\n'
                    "    padding = kernel // 2\n"
                    f"    return {conv}(cin, cout, kernel, stride, padding, groups=groups, bias={self.bias})\n"
                )
            else:
                layer = (
                    f"def conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> {conv}:\n"
                    '    """A conv with "same" padding (strided: ceil(size / stride) outputs)."""\n'
                    f"    return {conv}(cin, cout, kernel, stride=stride, padding=kernel // 2, bias={self.bias})\n"
                )
        norm = {
            "none": ("nn.Identity", "    return nn.Identity()\n"),
            "batch": (
                "nn.BatchNorm2d" if kind == "conv2d" else "nn.BatchNorm1d",
                f"    return {'nn.BatchNorm2d' if kind == 'conv2d' else 'nn.BatchNorm1d'}(channels)\n",
            ),
            "layer": (
                "nn.LayerNorm" if kind == "mlp" else "nn.GroupNorm",
                "    return nn.LayerNorm(channels)\n" if kind == "mlp" else "    return nn.GroupNorm(1, channels)\n",
            ),
            "group": ("nn.GroupNorm", "    return nn.GroupNorm(math.gcd(32, channels), channels)\n"),
        }[arch.norm]
        parts = [layer, f"def norm(channels: int) -> {norm[0]}:\n{norm[1]}"]
        if any(c.kind == "pad" or c.shortcut == "pad" for c in arch.connections):
            parts.append(
                "def pad_shortcut(h: torch.Tensor, stride: int, extra_channels: int) -> torch.Tensor:\n"
                '    """He et al. 2016 "option A": strided subsampling and zero channels."""\n'
                "    if stride > 1:\n"
                + (
                    "        h = h[:, :, ::stride, ::stride]\n"
                    if kind == "conv2d"
                    else "        h = h[:, :, ::stride]\n"
                )
                + "    if extra_channels:\n"
                + f"        h = F.pad(h, {'[0, 0] * (h.dim() - 2) + ' if kind != 'mlp' else ''}[0, extra_channels])\n"
                + "    return h\n"
            )
        if self.add_into and any(_adds(arch, c) for c in arch.connections):
            parts.append(_ADD_INTO_SOURCE)
        if arch.branch_scale != "none":
            parts.append(_SCALE_SOURCE)
        if arch.drop_path > 0:
            parts.append(_DROP_PATH_SOURCE)
        if arch.connections:
            parts.append(_FREE_AFTER_SOURCE)
        if arch.init == "kaiming":
            parts.append(
                "def init_kaiming(model: nn.Module) -> None:\n"
                '    """He et al. 2015 init for convs (fan_out, as torchvision); norms to identity."""\n'
                "    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)\n"
                "    for name, m in model.named_modules():\n"
                '        if isinstance(m, nn.Conv1d | nn.Conv2d) and not name.endswith(".gate"):\n'
                '            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")\n'
                "        elif isinstance(m, norms):\n"
                "            nn.init.ones_(m.weight)\n"
                "            nn.init.zeros_(m.bias)\n"
            )
        return "\n\n".join(parts)

    def act_layer(self, inplace: bool) -> str:
        """The activation; ``inplace`` where the builder's overwrites its input (ReLU only)."""
        return "nn.ReLU(inplace=True)" if inplace and self.relu else f"{self.act}()"

    def merged(self, s: str) -> str:
        """An additive connection's sum of the block's output and ``s``."""
        return f"add_into(out, {s})" if self.add_into else f"out + {s}"

    def layer(self, cin: str, cout: str, kernel: str | None = None, stride: str | None = None) -> str:
        if self.kind == "mlp":
            return f"linear({cin}, {cout})"
        args = [cin, cout] + ([kernel] if kernel else []) + ([stride] if stride else [])
        return f"conv({', '.join(args)})"

    # ---- connections ---------------------------------------------------------
    def shortcut_classes(self) -> list[str]:
        used = sorted({_shortcut_class(self.arch, c) for c in self.arch.connections})
        return [self._shortcut_source(name) for name in used]

    def _shortcut_source(self, name: str) -> str:
        if name == "ConcatShortcut":
            return (
                "class ConcatShortcut(nn.Module):\n"
                '    """Concatenates h in front of the block\'s new channels (DenseNet)."""\n\n'
                "    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:\n"
                "        return torch.cat([h, out], 1)\n"
            )
        if name == "FusedConcatShortcut":
            return (
                "class FusedConcatShortcut(nn.Module):\n"
                '    """Concatenates h with the block\'s output, fused back to its width."""\n\n'
                "    def __init__(self, cin: int, cout: int) -> None:\n"
                "        super().__init__()\n"
                f"        self.fuse = {self.layer('cin + cout', 'cout', None if self.kind == 'mlp' else '1')}\n"
                "        self.norm = norm(cout)\n\n"
                "    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:\n"
                f"        return self.norm(self.fuse(torch.cat([h, out], {-1 if self.kind == 'mlp' else 1})))\n"
            )
        strided = self.kind != "mlp"
        stride_sig = ", stride: int = 1" if strided else ""
        stride_arg = "stride" if strided else None
        if name == "IdentityShortcut":
            return (
                "class IdentityShortcut(nn.Module):\n"
                '    """Adds h unchanged."""\n\n'
                "    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:\n"
                f"        return {self.merged('h')}\n"
            )
        if name == "ProjectionShortcut":
            return (
                "class ProjectionShortcut(nn.Module):\n"
                '    """Adds norm(conv1x1(h)): torchvision\'s downsample."""\n\n'
                f"    def __init__(self, cin: int, cout: int{stride_sig}) -> None:\n"
                "        super().__init__()\n"
                f"        self.conv = {self.layer('cin', 'cout', '1' if strided else None, stride_arg)}\n"
                "        self.norm = norm(cout)\n\n"
                "    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:\n"
                f"        return {self.merged('self.norm(self.conv(h))')}\n"
            )
        if name == "PadShortcut":
            return (
                "class PadShortcut(nn.Module):\n"
                '    """Adds h subsampled and zero-padded to the output\'s channels (no parameters)."""\n\n'
                f"    def __init__(self, cin: int, cout: int{stride_sig}) -> None:\n"
                "        super().__init__()\n"
                f"        self.stride = {'stride' if strided else '1'}\n"
                "        self.extra_channels = cout - cin\n\n"
                "    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:\n"
                f"        return {self.merged('pad_shortcut(h, self.stride, self.extra_channels)')}\n"
            )
        inner = name.removeprefix("Gated").removesuffix("Shortcut").lower()
        highway = self.arch.gate_mode == "highway"
        doc = (
            "t * out + (1 - t) * S(h) with t = sigmoid(gate(h)) (highway, Srivastava et al. 2015)"
            if highway
            else "out + sigmoid(gate(h)) * S(h)"
        )
        s_expr = {
            "identity": "h",
            "projection": "self.norm(self.conv(h))",
            "pad": "pad_shortcut(h, self.stride, self.extra_channels)",
        }[inner]
        lines = [
            f"class {name}(nn.Module):",
            f'    """A gated connection: {doc}, S = {inner}."""',
            "",
            f"    def __init__(self, cin: int, cout: int{stride_sig}) -> None:",
            "        super().__init__()",
        ]
        gate = self.layer("cin", "cout", "1" if strided else None, stride_arg)
        gate = gate.replace("conv(", "nn.Conv2d(" if self.kind == "conv2d" else "nn.Conv1d(").replace(
            "linear(", "nn.Linear("
        )
        lines.append(f"        self.gate = {gate[:-1]}, bias=True)")
        lines.append(f"        nn.init.constant_(self.gate.bias, {self.arch.gate_bias_init!r})")
        if inner == "projection":
            lines.append(f"        self.conv = {self.layer('cin', 'cout', '1' if strided else None, stride_arg)}")
            lines.append("        self.norm = norm(cout)")
        if inner == "pad":
            lines.append(f"        self.stride = {'stride' if strided else '1'}")
            lines.append("        self.extra_channels = cout - cin")
        lines += ["", "    def forward(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:"]
        lines.append("        t = torch.sigmoid(self.gate(h))")
        if highway:
            lines.append(f"        return t * out + (1 - t) * {s_expr}")
        else:
            lines.append(f"        return {self.merged(f't * {s_expr}')}")
        return "\n".join(lines) + "\n"

    # ---- blocks --------------------------------------------------------------
    def block_classes(self) -> list[str]:
        used = sorted({_block_key(self.arch, b.type) for b in self.arch.blocks}, key=list(BLOCK_CLASSES).index)
        return [self._block_source(k) for k in used]

    def _branch(self, key: str) -> tuple[str, list[str], list[str]]:
        """(signature, layer lines, forward lines up to ``out``) of a block's residual branch."""
        pre = self.pre
        if key == "basic":
            sig = "cin: int, cout: int, stride: int = 1"
            layers = [
                f"self.conv1 = {self.layer('cin', 'cout', '3', 'stride')}",
                f"self.norm1 = norm({'cin' if pre else 'cout'})",
                f"self.conv2 = {self.layer('cout', 'cout', '3')}",
                "self.norm2 = norm(cout)",
            ]
            body = (
                ["out = self.conv1(self.act(self.norm1(x)))", "out = self.conv2(self.act(self.norm2(out)))"]
                if pre
                else ["out = self.act(self.norm1(self.conv1(x)))", "out = self.norm2(self.conv2(out))"]
            )
        elif key == "bottleneck":
            sig = "cin: int, width: int, cout: int, stride: int = 1" + (", groups: int = 1" if self.grouped else "")
            layers = [
                f"self.conv1 = {self.layer('cin', 'width', '1')}",
                f"self.norm1 = norm({'cin' if pre else 'width'})",
                f"self.conv2 = {self.layer('width', 'width', '3', 'stride')}"
                if not self.grouped
                else "self.conv2 = conv(width, width, 3, stride, groups)",
                "self.norm2 = norm(width)",
                f"self.conv3 = {self.layer('width', 'cout', '1')}",
                f"self.norm3 = norm({'width' if pre else 'cout'})",
            ]
            body = (
                [
                    "out = self.conv1(self.act(self.norm1(x)))",
                    "out = self.conv2(self.act(self.norm2(out)))",
                    "out = self.conv3(self.act(self.norm3(out)))",
                ]
                if pre
                else [
                    "out = self.act(self.norm1(self.conv1(x)))",
                    "out = self.act(self.norm2(self.conv2(out)))",
                    "out = self.norm3(self.conv3(out))",
                ]
            )
        elif key == "plain":
            sig = "cin: int, cout: int, stride: int = 1"
            layers = [
                f"self.conv = {self.layer('cin', 'cout', '3', 'stride')}",
                f"self.norm = norm({'cin' if pre else 'cout'})",
            ]
            body = ["out = self.conv(self.act(self.norm(x)))"] if pre else ["out = self.norm(self.conv(x))"]
        elif key == "linear":
            sig = "cin: int, cout: int"
            layers = ["self.fc = linear(cin, cout)", f"self.norm = norm({'cin' if pre else 'cout'})"]
            body = ["out = self.fc(self.act(self.norm(x)))"] if pre else ["out = self.norm(self.fc(x))"]
        elif key == "dense":
            sig = "cin: int, width: int, cout: int"
            layers = [
                "self.norm1 = norm(cin)",
                "self.conv1 = conv(cin, width, 1)",
                "self.norm2 = norm(width)",
                "self.conv2 = conv(width, cout - cin, 3)",
            ]
            body = ["out = self.conv1(self.act(self.norm1(x)))", "out = self.conv2(self.act(self.norm2(out)))"]
        elif key == "transition":
            pool = "nn.AvgPool2d" if self.kind == "conv2d" else "nn.AvgPool1d"
            sig = "cin: int, cout: int, stride: int = 1"
            layers = [
                "self.norm = norm(cin)",
                "self.conv = conv(cin, cout, 1)",
                f"self.pool = {pool}(stride, stride) if stride > 1 else None",
            ]
            body = [
                "out = self.conv(self.act(self.norm(x)))",
                "if self.pool is not None:",
                "    out = self.pool(out)",
            ]
        elif key == "attention":
            sig = "dim: int, heads: int"
            layers = [
                "self.norm = nn.LayerNorm(dim)",
                "self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)",
            ]
            body = [
                "y = self.norm(x)" if pre else "y = x",
                "out = self.attn(y, y, y, need_weights=False)[0]",
            ]
        elif key == "feedforward":
            sig = "dim: int, width: int"
            layers = [
                "self.norm = nn.LayerNorm(dim)",
                "self.fc1 = nn.Linear(dim, width)",
                "self.fc2 = nn.Linear(width, dim)",
            ]
            body = [
                "out = self.fc2(self.act(self.fc1(self.norm(x))))" if pre else "out = self.fc2(self.act(self.fc1(x)))"
            ]
        else:  # mlp
            sig = "cin: int, cout: int"
            layers = [
                "self.fc1 = linear(cin, cout)",
                f"self.norm1 = norm({'cin' if pre else 'cout'})",
                "self.fc2 = linear(cout, cout)",
                "self.norm2 = norm(cout)",
            ]
            body = (
                ["out = self.fc1(self.act(self.norm1(x)))", "out = self.fc2(self.act(self.norm2(out)))"]
                if pre
                else ["out = self.act(self.norm1(self.fc1(x)))", "out = self.norm2(self.fc2(out))"]
            )
        return sig, layers, body

    def _block_source(self, key: str) -> str:
        sig, layers, body = self._branch(key)
        docs = {
            "basic": "Two 3x3 convs (torchvision's BasicBlock); the stride is on the first.",
            "bottleneck": "1x1 reduce, 3x3 with the stride (ResNet v1.5), 1x1 expand.",
            "plain": "One 3x3 conv.",
            "linear": "One Linear layer.",
            "mlp": "Two Linear layers.",
            "dense": "DenseNet's layer: norm-act-1x1 conv to width, norm-act-3x3 conv to cout - cin new channels.",
            "transition": "DenseNet's transition: norm-act-1x1 conv, average pool.",
            "attention": "A transformer's self-attention sublayer on (batch, tokens, features).",
            "feedforward": "A transformer's MLP sublayer.",
        }
        tokens = key in ("attention", "feedforward")
        if key in ("dense", "transition"):
            merge_doc = "Pre-activation (DenseNet): incoming connections merge after the branch."
        elif tokens:
            merge_doc = (
                "Pre-LN: incoming connections are added after the branch."
                if self.pre
                else "Post-LN: the norm follows the merge of the incoming connections."
            )
        else:
            merge_doc = (
                "Incoming connections are added after the branch (pre-activation, ResNet v2)."
                if self.pre
                else "Incoming connections merge before the last activation (ResNet v1)."
            )
        has_skips = bool(self.arch.connections)
        lines = [
            f"class {BLOCK_CLASSES[key]}(nn.Module):",
            f'    """{docs[key]}',
            "",
            f"    {merge_doc}",
            '    """',
            "",
            # ruff format's wrapping of a signature longer than 88 characters.
            f"    def __init__(self, {sig}) -> None:"
            if len(sig) <= 56
            else f"    def __init__(\n        self, {sig}\n    ) -> None:",
            "        super().__init__()",
            f"        self.act = {self.act_layer(act_in_place(key, self.pre, self.arch.norm, self.arch.activation))}",
        ]
        if has_skips:
            lines.append('        self.shortcuts = nn.ModuleDict()  # "h<source>": connection, in merge order')
        if self.arch.branch_scale != "none":
            lines.append("        self.scale: nn.Module | None = None  # set on blocks a connection adds into")
        if self.arch.drop_path > 0:
            lines.append("        self.drop_path: nn.Module | None = None  # stochastic depth, set per block")
        lines += [f"        {line}" for line in layers]
        lines.append("")
        if has_skips:
            lines.append("    def forward(self, x: torch.Tensor, h: list[torch.Tensor]) -> torch.Tensor:")
        else:
            lines.append("    def forward(self, x: torch.Tensor) -> torch.Tensor:")
        lines += [f"        {line}" for line in body]
        if self.arch.branch_scale != "none":
            lines += ["        if self.scale is not None:", "            out = self.scale(out)"]
        if self.arch.drop_path > 0:
            lines += ["        if self.drop_path is not None:", "            out = self.drop_path(out)"]
        if has_skips:
            lines.append("        for source, shortcut in self.shortcuts.items():")
            lines.append("            out = shortcut(out, h[int(source[1:])])")
        if self.pre or key in ("dense", "transition"):
            lines.append("        return out")
        else:
            lines.append("        return self.norm(out)" if tokens else "        return self.act(out)")
        return "\n".join(lines) + "\n"

    # ---- stem, head, network ---------------------------------------------------
    def token_stem(self) -> str:
        arch = self.arch
        conv = "nn.Conv2d" if len(arch.input_shape) == 3 else "nn.Conv1d"
        k, d = arch.stem.kernel, arch.stem.channels
        cls = arch.head_pool == "cls"
        lines = [
            "class Stem(nn.Module):",
            '    """Patches of the input as tokens, a CLS token (when pooled by it), learned positions."""',
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            f"        self.conv = {conv}({arch.input_shape[0]}, {d}, {k}, stride={k})",
        ]
        if cls:
            lines.append(f"        self.cls = nn.Parameter(torch.zeros(1, 1, {d}))")
        lines += [
            f"        self.pos = nn.Parameter(torch.zeros(1, {token_count(arch)}, {d}))",
            "        nn.init.normal_(self.pos, std=0.02)",
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            "        x = self.conv(x).flatten(2).transpose(1, 2)",
        ]
        if cls:
            lines.append("        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)")
        lines.append("        return x + self.pos")
        return "\n".join(lines) + "\n"

    def stem(self) -> str:
        arch = self.arch
        if arch.kind == "transformer":
            return self.token_stem()
        if self.kind == "mlp":
            features = math.prod(arch.input_shape)
            layers = ["self.flatten = nn.Flatten()", f"self.conv = linear({features}, {arch.stem.channels})"]
            body = "self.act(self.norm(self.conv(self.flatten(x))))"
        else:
            stride = f", stride={arch.stem.stride}" if arch.stem.stride != 1 else ""
            layers = [f"self.conv = conv({arch.input_shape[0]}, {arch.stem.channels}, {arch.stem.kernel}{stride})"]
            body = "self.act(self.norm(self.conv(x)))"
        layers += [f"self.norm = norm({arch.stem.channels})", f"self.act = {self.act_layer(True)}"]
        pool = arch.stem.pool == "max"
        if pool:
            layers.append(f"self.pool = {'nn.MaxPool2d' if self.kind == 'conv2d' else 'nn.MaxPool1d'}(3, 2, 1)")
        lines = [
            "class Stem(nn.Module):",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            *[f"        {line}" for line in layers],
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            f"        return self.pool({body})" if pool else f"        return {body}",
        ]
        return "\n".join(lines) + "\n"

    def head(self) -> str:
        arch = self.arch
        channels = arch.channels_at(arch.num_blocks)
        layers, body = [], []
        tokens = arch.kind == "transformer"
        if self.pre and tokens:
            layers.append(f"self.norm = nn.LayerNorm({channels})")
            body.append("x = self.norm(x)")
        elif self.pre:
            layers += [f"self.norm = norm({channels})", f"self.act = {self.act_layer(arch.norm != 'none')}"]
            body.append("x = self.act(self.norm(x))")
        if tokens:
            body.append({"cls": "x = x[:, 0]", "max": "x = x.amax(1)"}.get(arch.head_pool, "x = x.mean(1)"))
        elif self.kind != "mlp":
            pool = "Max" if arch.head_pool == "max" else "Avg"
            layers.append(f"self.pool = nn.Adaptive{pool}Pool{'2d' if self.kind == 'conv2d' else '1d'}(1)")
            body.append("x = torch.flatten(self.pool(x), 1)")
        if arch.head_dropout > 0:
            layers.append(f"self.dropout = nn.Dropout({arch.head_dropout!r})")
            body.append("x = self.dropout(x)")
        layers.append(f"self.fc = nn.Linear({channels}, num_classes)")
        lines = [
            "class Head(nn.Module):",
            "    def __init__(self, num_classes: int) -> None:",
            "        super().__init__()",
            *[f"        {line}" for line in layers],
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            *[f"        {line}" for line in body],
            "        return self.fc(x)",
        ]
        return "\n".join(lines) + "\n"

    def network(self) -> str:
        arch = self.arch
        lines = [
            f"class {self.class_name}(nn.Module):",
            f'    """Stem, {arch.num_blocks} blocks, head. h[k] is the input of block k; a connection',
            '    (i, j) merges h[i] into the output of block j - 1."""',
            "",
            f"    def __init__(self, num_classes: int = {arch.num_classes}) -> None:",
            "        super().__init__()",
            "        self.stem = Stem()",
            "        self.blocks = nn.ModuleList()",
        ]
        for block in arch.blocks:
            key = _block_key(arch, block.type)
            if key == "attention":
                args = [str(block.in_channels), str(block.heads)]
            elif key == "feedforward":
                args = [str(block.in_channels), str(block.width)]
            else:
                args = [str(block.in_channels)]
                if key in ("bottleneck", "dense"):
                    args.append(str(block.width))
                args.append(str(block.out_channels))
            if block.stride != 1:
                args.append(f"stride={block.stride}")
            if block.groups != 1:
                args.append(f"groups={block.groups}")
            lines.append(f"        self.blocks.append({BLOCK_CLASSES[key]}({', '.join(args)}))")
        if arch.connections:
            for conn in arch.connections:
                stride = arch.stride_between(conn.src, conn.dst)
                cls = _shortcut_class(arch, conn)
                plain = cls in ("IdentityShortcut", "ConcatShortcut")
                args = "" if plain else f"{arch.channels_at(conn.src)}, {arch.channels_at(conn.dst)}"
                if stride != 1 and not plain:
                    args += f", stride={stride}"
                lines.append(f'        self.blocks[{conn.dst - 1}].shortcuts["h{conn.src}"] = {cls}({args})')
        rates = drop_path_rates(arch)
        for k, block in enumerate(arch.blocks):
            if arch.branch_scale != "none" and scaled(arch, k):
                shape, init = scale_shape_and_init(arch.branch_scale, arch.kind, block.out_channels, arch.num_blocks)
                lines.append(f"        self.blocks[{k}].scale = Scale({shape!r}, {init!r})")
            if rates[k] > 0:
                lines.append(f"        self.blocks[{k}].drop_path = DropPath({rates[k]!r})")
        lines.append("        self.head = Head(num_classes)")
        if arch.init == "kaiming":
            lines.append("        init_kaiming(self)")
        if arch.connections:
            lines.append("        self.free_after = free_after(self.blocks)")
        lines += ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
        if arch.connections:
            lines += [
                "        h: list[torch.Tensor | None] = [self.stem(x)]",
                "        for block, done in zip(self.blocks, self.free_after):",
                "            h.append(block(h[-1], h))",
                "            # Drop the inputs no later block reads: the forward holds only live ones.",
                "            for k in done:",
                "                h[k] = None",
                "        return self.head(h[-1])",
            ]
        else:
            lines += [
                "        x = self.stem(x)",
                "        for block in self.blocks:",
                "            x = block(x)",
                "        return self.head(x)",
            ]
        return "\n".join(lines) + "\n"


# What each built-in dataset does to its inputs (resnas.data): the weights expect the same.
PREPROCESSING = {
    "digits": "scikit-learn's digits, pixel values 0-16 divided by 16 (0 to 1), shape (1, 8, 8)",
    "mnist1d": "mnist1d's make_dataset(get_dataset_args()) signals as generated, no further scaling, shape (1, 40)",
    "synthetic": "none (generated Gaussian clusters)",
    "cifar10": (
        "pixels divided by 255, then per channel (x - mean) / std with "
        "mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616)"
    ),
}


def training_header(attrs: dict[str, Any], data: DataSpec) -> list[tuple[str, str]]:
    """Header lines that say how a trial's weights were trained (from its user attrs) and what
    input they expect."""
    train, seed, threads = attrs.get("train"), attrs.get("seed"), attrs.get("torch_threads")
    lines = []
    if train:
        optimizer = str(train.get("optimizer", "-"))
        extras = [f"{k.replace('_', ' ')} {train[k]!r}" for k in ("momentum", "weight_decay") if k in train]
        if optimizer != "sgd":
            extras = [e for e in extras if not e.startswith("momentum")]
        lines.append(("optimizer", optimizer + (f" ({', '.join(extras)})" if extras else "")))
        lines.append(("learning rate", f"{train.get('lr')!r}, {train.get('schedule', 'constant')} schedule"))
        lines.append(("epochs", str(train.get("epochs"))))
        lines.append(("batch size", str(train.get("batch_size"))))
        if train.get("label_smoothing"):
            lines.append(("label smoothing", repr(train["label_smoothing"])))
        lines.append(("precision", f"{train.get('precision', 'auto')} (auto: bf16 autocast on CUDA, fp32 on CPU)"))
    if seed is not None:
        lines.append(("seed", str(seed)))
    if threads is not None:
        lines.append(("torch threads", str(threads)))
    lines.append(("augmentation", "none"))
    custom = PREPROCESSING.get(data.dataset, f"none by resnas: the arrays {data.dataset} returns, as float32")
    lines.append(("input preprocessing", custom))
    return lines


def _docstring(header: Iterable[tuple[str, str]], class_name: str) -> str:
    lines = [f'"""{class_name}: a residual network exported by resnas.', ""]
    lines += [f"{key}: {value}" for key, value in header]
    lines += [
        "",
        "Standalone: imports only torch. build() returns the network; its state_dict keys",
        "match the resnas-built module's, so weights load into either.",
        '"""',
    ]
    return "\n".join(lines) + "\n"


def export_source(arch: Architecture, class_name: str = "Net", header: Iterable[tuple[str, str]] = ()) -> str:
    """The Python source of a standalone module that builds ``arch``."""
    if not class_name.isidentifier():
        raise ValueError(f"--class-name: {class_name!r} is not a Python identifier")
    w = _Writer(arch, class_name)
    helpers = w.helpers()
    imports = ["from __future__ import annotations", ""]
    if "math.gcd" in helpers:
        imports += ["import math", ""]
    imports.append("import torch")
    if "F.pad" in helpers:
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    sections = [
        _docstring(header, class_name),
        "\n".join(imports) + "\n",
        f'__all__ = ["{class_name}", "build"]\n\nINPUT_SHAPE = {tuple(arch.input_shape)!r}\n',
        helpers,
        *w.shortcut_classes(),
        *w.block_classes(),
        w.stem(),
        w.head(),
        w.network(),
        f"def build() -> {class_name}:\n"
        '    """The network, freshly initialised; load weights with load_state_dict."""\n'
        f"    return {class_name}()\n",
    ]
    head = sections[0] + "\n" + sections[1] + "\n"
    return head + "\n\n".join(s.rstrip("\n") + "\n" for s in sections[2:])
