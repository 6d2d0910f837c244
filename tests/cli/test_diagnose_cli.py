"""``resnas diagnose``: the vanishing gradient of a deep plain network, and its cure."""

from __future__ import annotations

import re

from helpers import ROOT


def ratio_of(out: str) -> float:
    return float(re.search(r"gradient ratio last/first block ([0-9.e+-]+)x", out).group(1))


def test_plain_deep_vanishes_and_identity_connections_restore_it(run_cli, tmp_path):
    code, out, err = run_cli("diagnose", "search_spaces/plain_deep.yaml", "--plot", tmp_path / "flow.svg")
    assert code == 0, err
    assert ratio_of(out) >= 1000 and "vanished" in out and "b31" in out
    assert (tmp_path / "flow.svg").read_text().lstrip().startswith("<?xml")
    spec = (ROOT / "search_spaces" / "plain_deep.yaml").read_text().replace("count: 0", "count: all")
    (tmp_path / "identity.yaml").write_text(spec)
    code, out, err = run_cli("diagnose", tmp_path / "identity.yaml")
    assert code == 0, err
    assert ratio_of(out) <= 10 and "32 connections" in out


def test_bad_plot_suffix_is_a_usage_error(run_cli):
    code, _, err = run_cli("diagnose", "search_spaces/plain_deep.yaml", "--plot", "flow.gif")
    assert code == 2 and "--plot" in err
