"""The spec reference (``docs/spec.md``), written from the language's JSON Schema.

``resnas schema --markdown > docs/spec.md`` regenerates it; a test fails when the file is stale.
Every key, its type, default and meaning come from the pydantic models' field descriptions,
so the reference, ``resnas schema`` and the parser cannot disagree.
"""

from __future__ import annotations

import json
from typing import Any

from resnas.space._model import METRIC_MEANINGS, json_schema

# One short example per section: YAML to put into a spec (tests/space/test_reference.py parses each).
EXAMPLES: dict[str, str] = {
    "(top level)": """\
name: mnist1d-where
data: {dataset: mnist1d}
network:
  kind: conv1d
  stages: [{depth: {int: [2, 4]}, channels: 32}]
residual: {kinds: [identity, gated], count: {int: [0, 4]}}
""",
    "data": """\
data:
  dataset: mydata:load     # mydata.py in the working directory; run with --allow-code
  shape: [1, 8, 8]
  classes: 10
  limit: 1000
""",
    "network": """\
network:
  kind: mlp                # mlp blocks by default
  stem: {channels: 64}
  stages: [{depth: 4, channels: {choice: [64, 128]}}]
""",
    "network.stem": """\
network:
  stem: {channels: 64, kernel: 7, stride: 2, pool: max}   # ResNet-18's stem
  stages: [{depth: 2, channels: 64}]
""",
    "network.block": """\
network:
  block: {type: {choice: [basic, plain]}, activation: {choice: [relu, tanh]}, norm: none}
  stages: [{depth: 3, channels: 16}]
""",
    "network.stages[]": """\
network:
  stages:
    - {depth: {int: [1, 4]}, channels: 16}
    - {depth: 2, channels: {choice: [32, 64]}, stride: 2}
""",
    "network.head": """\
network:
  stages: [{depth: 2, channels: 16}]
  head: {pool: max, dropout: 0.2}
""",
    "residual": """\
residual:
  kinds: [identity, projection, gated]
  span: {int: [1, 3]}
  count: {int: [0, 6]}
  scope: network
""",
    "residual.gate": """\
residual:
  kinds: [gated]
  count: all
  gate: {mode: highway, bias_init: -2.0}
""",
    "train": """\
train:
  epochs: 10
  optimizer: adamw
  lr: {float: [0.0001, 0.01], log: true}
  weight_decay: 0.05
  schedule: cosine
""",
    "objectives[]": """\
objectives:
  - val_accuracy: maximize       # short form of {metric: val_accuracy, direction: maximize}
  - {metric: params, direction: minimize}
""",
    "search": """\
search:
  trials: 40
  sampler: evolution
  pruner: none
  confirm: 3
""",
    "search.evolution": """\
search:
  sampler: evolution
  evolution: {population: 20, sample_size: 5}
""",
    "search.evolution.mutation": """\
search:
  sampler: evolution
  evolution: {mutation: {connection: 1.0, network: 0, train: 0}}
""",
    "search.screen": """\
search:
  screen: {score: synflow, pool: 64, keep: 8}
""",
    "search.oneshot": """\
residual: {kinds: [identity, gated], span: {int: [1, 2]}, count: {int: [0, 6]}}
search:
  strategy: oneshot
  oneshot: {epochs: 20, mode: alternating}
""",
}

INTRO = """\
# The spec language: reference

<!-- Generated from resnas/space/_model.py by `resnas schema --markdown > docs/spec.md`; do not edit. -->

A spec is a YAML file. Every key below is optional unless its default says *required*.
Unknown keys are refused with the valid keys of their section. `resnas validate SPEC`
checks a spec; `resnas schema` prints the same language as a JSON Schema for editors.

**Searchable values.** A key marked *searchable* takes a fixed value or one of

```yaml
depth:    {int: [1, 6]}                  # low and high included; optional step: 2, log: true
lr:       {float: [0.01, 0.3], log: true} # optional step (not with log)
channels: {choice: [16, 32, 64]}          # any values of the key's type
```
"""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _bounds(fragment: dict[str, Any]) -> str:
    low = [f"≥ {_number(fragment['minimum'])}"] if "minimum" in fragment else []
    low += [f"> {_number(fragment['exclusiveMinimum'])}"] if "exclusiveMinimum" in fragment else []
    high = [f"≤ {_number(fragment['maximum'])}"] if "maximum" in fragment else []
    high += [f"< {_number(fragment['exclusiveMaximum'])}"] if "exclusiveMaximum" in fragment else []
    return ", ".join(low + high)


def _is_searchable(fragment: dict[str, Any]) -> bool:
    return any("choice" in option.get("properties", {}) for option in fragment.get("anyOf", []))


def _type(fragment: dict[str, Any], sections: dict[str, str]) -> str:
    """A short, readable type: ``integer ≥ 1, ≤ 1,000``, ``one of `a`, `b` ``, ``list of ...``."""
    if "$ref" in fragment:
        path = sections.get(_ref_name(fragment["$ref"]), _ref_name(fragment["$ref"]))
        return f"mapping, see [`{path}`](#{_anchor(path)})"
    if "anyOf" in fragment:
        options = fragment["anyOf"]
        if _is_searchable(fragment):
            scalars = [option for option in options if option.get("type") != "object"]
            return " or ".join(_type(option, sections) for option in scalars) + ", *searchable*"
        return " or ".join(_type(option, sections) for option in options)
    if "enum" in fragment:
        return "one of " + ", ".join(f"`{v if isinstance(v, str) else json.dumps(v)}`" for v in fragment["enum"])
    if "const" in fragment:
        return f"`{fragment['const']}`"
    kind = fragment.get("type")
    if kind == "array":
        if "prefixItems" in fragment:
            return "[" + ", ".join(_type(item, sections) for item in fragment["prefixItems"]) + "]"
        items = _type(fragment.get("items", {}), sections)
        size = []
        if "minItems" in fragment:
            size.append(f"at least {fragment['minItems']}")
        if "maxItems" in fragment:
            size.append(f"at most {fragment['maxItems']}")
        unique = ", no repeats" if fragment.get("uniqueItems") else ""
        return f"list of ({items})" + (f", {' and '.join(size)} items" if size else "") + unique
    names = {"integer": "integer", "number": "number", "string": "string", "boolean": "true or false", "null": "null"}
    text = names.get(kind, str(kind))
    extra = _bounds(fragment)
    if "pattern" in fragment:
        extra = ", ".join(x for x in (extra, f"matching `{fragment['pattern']}`") if x)
    if "maxLength" in fragment:
        extra = ", ".join(x for x in (extra, f"at most {fragment['maxLength']} characters") if x)
    return f"{text} {extra}" if extra else text


def _default(name: str, fragment: dict[str, Any], required: list[str]) -> str:
    if name in required:
        return "*required*"
    if "default" not in fragment:
        return "*see meaning*"
    value = fragment["default"]
    if isinstance(value, dict):
        return "*its section's defaults*" if value else "`{}`"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "`" + json.dumps(value).replace('"', "") + "`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sections(schema: dict[str, Any]) -> dict[str, str]:
    """Each model's $defs name -> the YAML path of its section, in reading order (depth first)."""
    order: dict[str, str] = {}

    def visit(path: str, model: dict[str, Any]) -> None:
        for key, fragment in model.get("properties", {}).items():
            for option in [fragment, *fragment.get("anyOf", [])]:
                ref = option.get("$ref") or option.get("items", {}).get("$ref")
                if ref and _ref_name(ref) not in order:
                    child = (key if path == "(top level)" else f"{path}.{key}") + ("[]" if "items" in option else "")
                    order[_ref_name(ref)] = child
                    target = schema["$defs"][_ref_name(ref)]
                    visit(child, target.get("anyOf", [target])[0])

    visit("(top level)", schema)
    return order


def _table(path: str, model: dict[str, Any], sections: dict[str, str]) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    required = model.get("required", [])
    for key, fragment in model["properties"].items():
        full = key if path == "(top level)" else f"{path}.{key}"
        rows.append(
            f"| `{full}` | {_cell(_type(fragment, sections))} | {_cell(_default(key, fragment, required))} "
            f"| {_cell(fragment.get('description', ''))} |"
        )
    return rows


def _anchor(path: str) -> str:
    return "".join(c for c in path.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def reference_markdown() -> str:
    """The whole reference, as ``docs/spec.md`` holds it."""
    schema = json_schema()
    sections = _sections(schema)
    out = [INTRO]
    toc = ["(top level)", *sections.values()]
    out.append("Sections: " + ", ".join(f"[`{p}`](#{_anchor(p)})" for p in toc) + ", [metrics](#metrics).\n")
    models = {"(top level)": schema} | {path: schema["$defs"][name] for name, path in sections.items()}
    for path, model in models.items():
        variants = model.get("anyOf", [model])
        out.append(f"## {path}\n")
        out.append(model.get("description", "") + "\n")
        out += _table(path, variants[0], sections)
        out.append("")
        if path in EXAMPLES:
            out.append("```yaml\n" + EXAMPLES[path] + "```\n")
    out.append("## metrics\n")
    out.append("What a trial records; any of them may be an objective (`objectives[].metric`).\n")
    out += ["| metric | meaning |", "|---|---|"]
    out += [f"| `{name}` | {_cell(text)} |" for name, text in METRIC_MEANINGS.items()]
    return "\n".join(out) + "\n"
