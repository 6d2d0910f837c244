"""``resnas validate`` / ``show`` / ``schema`` as a user runs them."""

from __future__ import annotations

import json

import pytest
from helpers import SPACES


@pytest.mark.parametrize("spec", SPACES, ids=lambda p: p.stem)
def test_validate_every_shipped_spec(run_cli, spec):
    code, out, err = run_cli("validate", spec)
    assert code == 0, err
    assert "space size:" in out and "parameters" in out


def test_validate_reports_exact_size_and_searchables(run_cli):
    code, out, _ = run_cli("validate", "search_spaces/digits_cnn.yaml")
    assert code == 0
    assert "network.stages[0].depth" in out and "train.lr" in out
    assert "space size: 1,702,632,061,350 architectures" in out


def test_show_is_deterministic_per_seed(run_cli):
    a = run_cli("show", "search_spaces/digits_cnn.yaml", "--seed", "4", "--json")
    b = run_cli("show", "search_spaces/digits_cnn.yaml", "--seed", "4", "--json")
    c = run_cli("show", "search_spaces/digits_cnn.yaml", "--seed", "5", "--json")
    assert a[0] == 0 and a[1] == b[1] and a[1] != c[1]
    assert json.loads(a[1])["kind"] == "conv2d"
    code, out, _ = run_cli("show", "search_spaces/resnet18.yaml")
    assert code == 0 and "11,689,512 parameters" in out and "b7" in out


def test_unknown_option_is_a_usage_error(run_cli):
    code, _, err = run_cli("show", "search_spaces/adaptive.yaml", "--sed", "3")
    assert code == 2 and "--sed" in err
