"""What a first spec gets wrong is either accepted (defaults that follow ``kind``, the objective
short form) or refused with the fix in the message (did you mean, the valid keys, the kind that fits)."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from resnas.space import json_schema, parse_space, sample

STAGES = "stages: [{depth: 2, channels: 8}]"


@pytest.mark.parametrize(
    ("network", "block_type", "norm"),
    [
        (f"{{kind: mlp, {STAGES}}}", "mlp", "batch"),
        (f"{{kind: mlp, block: {{activation: tanh}}, {STAGES}}}", "mlp", "batch"),
        (f"{{kind: conv1d, {STAGES}}}", "basic", "batch"),
        (
            "{kind: transformer, stem: {channels: 16, kernel: 4}, stages: [{depth: 2, channels: 16}]}",
            "transformer",
            "layer",
        ),
    ],
)
def test_block_defaults_follow_kind(network, block_type, norm):
    data = "{dataset: mnist1d}" if "conv1d" in network or "transformer" in network else "{dataset: digits}"
    space = parse_space(f"name: a\ndata: {data}\nnetwork: {network}\n")
    assert (space.spec.network.block.type, space.spec.network.block.norm) == (block_type, norm)
    arch = sample(space, 0).architecture
    built = {"transformer": {"attention", "feedforward"}}.get(block_type, {block_type})
    assert {b.type for b in arch.blocks} == built


def test_an_explicit_block_that_does_not_fit_is_still_refused():
    from resnas.errors import SpecError

    with pytest.raises(SpecError, match="block type 'basic' does not fit a mlp network"):
        parse_space(f"name: a\nnetwork: {{kind: mlp, block: {{type: basic}}, {STAGES}}}\n")


SHORT = f"name: a\nnetwork: {{{STAGES}}}\nobjectives:\n  - val_accuracy: maximize\n  - params: minimize\n"
LONG = SHORT.replace("val_accuracy: maximize", "{metric: val_accuracy, direction: maximize}").replace(
    "params: minimize", "{metric: params, direction: minimize}"
)


def test_objective_short_form_is_the_long_form():
    assert (
        parse_space(SHORT).objectives
        == parse_space(LONG).objectives
        == [
            ("val_accuracy", "maximize"),
            ("params", "minimize"),
        ]
    )
    # One study: resuming it with the other form is not a changed spec.
    assert parse_space(SHORT).hash == parse_space(LONG).hash
    assert parse_space(SHORT).hash != parse_space(SHORT.replace("params: minimize", "params: maximize")).hash
    validator = jsonschema.Draft202012Validator(json_schema())
    assert validator.is_valid(yaml.safe_load(SHORT)) and validator.is_valid(yaml.safe_load(LONG))
    for bad in ("val_accuracy: max", "f1: maximize", "{val_accuracy: maximize, params: minimize}"):
        assert not validator.is_valid(yaml.safe_load(SHORT.replace("val_accuracy: maximize", bad, 1))), bad


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (f"network: {{{STAGES}}}\nobjectives: [val_accuracy: max]", "got 'max'; did you mean 'maximize'?"),
        (f"network: {{kind: conv_1d, {STAGES}}}", "got 'conv_1d'; did you mean 'conv1d'?"),
        (f"network: {{block: {{norm: batchnorm}}, {STAGES}}}", "did you mean 'batch'?"),
        (f"network: {{{STAGES}}}\nresidual: {{merge: {{choice: [add, concatenate]}}}}", "did you mean 'concat'?"),
        (f"network: {{{STAGES}}}\ntrain: {{optimiser: adam}}", "did you mean 'optimizer'?"),
        (f"network: {{{STAGES}}}\nresidual: {{count: al}}", "got 'al'; did you mean 'all'?"),
        (f"network: {{{STAGES}}}\ntrain: {{lr: {{flaot: [0.1, 0.2]}}}}", "did you mean 'float'?"),
        (f"network: {{{STAGES}}}\nobjectives: [val_loss]", "write '- val_loss: maximize' (or minimize)"),
        (
            f"network: {{{STAGES}}}\nobjectives: [{{val_accuracy: maximize, params: minimize}}]",
            "one objective per list item",
        ),
        (f"network: {{{STAGES}}}\nresidual: {{kinds: [identity, gate]}}", "did you mean 'gated'?"),
        (
            f"network: {{{STAGES}}}\nsearch: {{screen: {{score: synflw, pool: 8}}}}",
            "did you mean 'synflow'?",
        ),
    ],
)
def test_values_and_keys_get_a_did_you_mean(run_cli, tmp_path, spec, message):
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: a\n{spec}\n")
    code, _, err = run_cli("validate", path)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err, err


def test_unknown_key_lists_the_keys_of_its_own_section(run_cli, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: a\nnetwork: {{{STAGES}}}\nsearch: {{evolution: {{populaton: 4}}}}\n")
    code, _, err = run_cli("validate", path)
    assert code == 2
    assert "search.evolution: unknown key 'populaton'; did you mean 'population'?" in err
    assert "(valid keys: population, sample_size, mutation)" in err


def test_schema_default_of_block_type_is_left_to_the_description():
    block = json_schema()["$defs"]["BlockSpec"]["properties"]["type"]
    assert "default" not in block and "mlp for mlp" in block["description"]
