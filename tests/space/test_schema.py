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


# The verdicts of the JSON Schema and of resnas's parser, per corpus spec:
#   schema: fault  -- both refuse it;
#   schema: valid  -- the schema cannot express the rule; "# schema-cannot:" says why;
#   schema: -      -- the fault is in the YAML text (syntax, tags, aliases, nesting, duplicate
#                     keys): resnas refuses it before any data exist to give the schema.
SCHEMA_FAULTS = [p for p in MALFORMED if expectations(p).get("schema") == "fault"]
SCHEMA_CANNOT = [p for p in MALFORMED if expectations(p).get("schema") == "valid"]
# Specs both accept, though they look odd: an integer-valued number is an integer.
ACCEPTED = [
    "name: a\nnetwork: {stages: [{depth: 2.0, channels: 16}]}\n",
    "name: a\nnetwork: {stages: [{depth: 2, channels: 16}]}\nresidual: {count: 1.0}\n",
    "name: a\nnetwork: {stages: [{depth: 2, channels: 16}]}\ntrain: {lr: 1}\n",
]


def test_corpus_has_schema_faults():
    assert len(SCHEMA_FAULTS) >= 40


def test_every_spec_has_a_verdict():
    for spec in MALFORMED:
        assert expectations(spec).get("schema") in ("fault", "valid", "-"), spec.name


@pytest.mark.parametrize("spec", SCHEMA_FAULTS, ids=lambda p: p.stem)
def test_schema_rejects_schema_faults(validator, spec, run_cli):
    assert not validator.is_valid(yaml.safe_load(spec.read_text()))
    assert run_cli("validate", spec)[0] == 2


@pytest.mark.parametrize("spec", SCHEMA_CANNOT, ids=lambda p: p.stem)
def test_semantic_faults_pass_the_schema_but_not_resnas(validator, spec, run_cli):
    assert expectations(spec).get("schema-cannot"), f"{spec.name}: say why the schema cannot catch it"
    assert validator.is_valid(yaml.safe_load(spec.read_text()))
    assert run_cli("validate", spec)[0] == 2


@pytest.mark.parametrize("text", ACCEPTED)
def test_both_accept_integer_valued_numbers(validator, text):
    from resnas.space import parse_space

    assert validator.is_valid(yaml.safe_load(text))
    parse_space(text)
