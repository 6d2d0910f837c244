"""The spec reference: ``docs/spec.md`` and ``resnas schema`` describe every key of the language."""

from __future__ import annotations

import json
import typing

import pytest
import yaml
from helpers import ROOT
from pydantic import BaseModel

from resnas.space import SpecModel, parse_space
from resnas.space._docs import EXAMPLES, reference_markdown
from resnas.space._model import METRICS

SPEC_MD = ROOT / "docs" / "spec.md"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every YAML path of the language, as the reference writes it (``network.stages[].depth``)."""
    found = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        found.append(path)
        annotation = info.annotation
        is_list = typing.get_origin(annotation) is list
        for arg in [annotation, *typing.get_args(annotation)]:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found += _keys(arg, f"{path}{'[]' if is_list else ''}.")
    return found


def _undescribed(node: typing.Any, pointer: str = "#") -> list[str]:
    missing = []
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            if not (isinstance(value, dict) and value.get("description", "").strip()):
                missing.append(f"{pointer}/properties/{key}")
        for key, value in node.items():
            missing += _undescribed(value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            missing += _undescribed(value, f"{pointer}/{i}")
    return missing


def test_docs_spec_md_is_current(run_cli):
    code, out, _ = run_cli("schema", "--markdown")
    assert code == 0
    assert out == reference_markdown()
    assert SPEC_MD.read_text() == out, "docs/spec.md is stale: run `resnas schema --markdown > docs/spec.md`"


def test_reference_lists_every_key_with_type_default_and_meaning():
    text = SPEC_MD.read_text()
    keys = _keys(SpecModel)
    assert len(keys) >= 90 and "network.stages[].depth" in keys and "search.evolution.mutation.train" in keys
    for key in keys:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
        assert len(rows) == 1, f"{key}: {len(rows)} rows in docs/spec.md"
        cells = [c.strip() for c in rows[0].strip("|").split(" | ")]
        assert len(cells) == 4 and all(cells), f"{key}: an empty cell in {rows[0]}"
    for metric in METRICS:
        assert f"| `{metric}` |" in text


def test_schema_describes_every_property(run_cli):
    code, out, _ = run_cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert _undescribed(schema) == []
    # The walk sees nested sections and the searchable forms too.
    assert _undescribed({"properties": {"x": {"type": "integer"}}}) == ["#/properties/x"]
    choice = schema["$defs"]["StemSpec"]["properties"]["channels"]["anyOf"][1]["properties"]["choice"]
    assert choice["description"]


BASE = {"name": "example", "network": {"stages": [{"depth": 2, "channels": 8}]}}


@pytest.mark.parametrize("section", list(EXAMPLES))
def test_every_example_is_a_valid_spec(section):
    example = yaml.safe_load(EXAMPLES[section])
    assert f"```yaml\n{EXAMPLES[section]}```" in SPEC_MD.read_text()
    spec = {**BASE, **example}
    if section == "data":  # a code dataset is checked by validate, not by the parser
        spec["network"] = {"kind": "mlp", "stages": [{"depth": 2, "channels": 8}]}
    parse_space(yaml.safe_dump(spec))
