"""``resnas schema`` is a JSON Schema that accepts every shipped spec and catches schema faults."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from helpers import MALFORMED, SPACES, expectations


@pytest.fixture(scope="module")
def validator():
    import contextlib
    import io

    from resnas.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["schema"]) == 0
    schema = json.loads(buf.getvalue())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("spec", SPACES, ids=lambda p: p.stem)
def test_schema_accepts_shipped_specs(validator, spec):
    errors = list(validator.iter_errors(yaml.safe_load(spec.read_text())))
    assert errors == []


SCHEMA_FAULTS = [p for p in MALFORMED if expectations(p).get("schema") == "fault"]


def test_corpus_has_schema_faults():
    assert len(SCHEMA_FAULTS) >= 15


@pytest.mark.parametrize("spec", SCHEMA_FAULTS, ids=lambda p: p.stem)
def test_schema_rejects_schema_faults(validator, spec):
    assert not validator.is_valid(yaml.safe_load(spec.read_text()))


@pytest.mark.parametrize(
    "spec", [p for p in MALFORMED if expectations(p).get("schema") == "valid"], ids=lambda p: p.stem
)
def test_semantic_faults_pass_the_schema_but_not_resnas(validator, spec, run_cli):
    assert validator.is_valid(yaml.safe_load(spec.read_text()))
    assert run_cli("validate", spec)[0] == 2
