"""The one-shot strategy as a study: its two trials, resume, export, and refusals."""

from __future__ import annotations

import threading

import optuna
import pytest
import torch

from resnas import Architecture, build, parse_space
from resnas.oneshot import build_supernet, run_oneshot
from resnas.oneshot._space import base_candidate
from resnas.train import StopRequested

# Plain tanh blocks across two stages (a shape change), three kinds, spans 1-3.
SPEC = """
name: os-tiny
data: {dataset: digits, limit: 300}
network:
  stem: {channels: 4}
  block: {type: plain, activation: tanh, norm: none}
  stages:
    - {depth: 2, channels: 4}
    - {depth: 2, channels: 8, stride: 2}
residual: {kinds: [identity, projection, gated], span: {int: [1, 3]}, count: {int: [1, 3]}, scope: network}
train: {epochs: 1, batch_size: 64, lr: {float: [0.05, 0.2], log: true}}
search: {trials: 3, sampler: random, seed: 0, oneshot: {epochs: 2, warmup: 1}}
"""


def quiet(*args: object) -> None:
    pass


@pytest.fixture(scope="module")
def oneshot_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("oneshot")
    url = f"sqlite:///{root / 'resnas.db'}"
    space = parse_space(SPEC, "os-tiny.yaml")
    stop = threading.Event()

    def log(line: object) -> None:
        if "phase 2" in str(line):
            stop.set()  # killed while retraining: the supernet phase is complete, the retraining is not

    with pytest.raises(StopRequested):
        run_oneshot(space, url, stop=stop, log=log)
    interrupted = optuna.load_study(study_name="os-tiny", storage=url).trials
    run_oneshot(space, url, log=quiet)  # resumes at phase 2
    return root, url, interrupted


def test_supernet_and_derived_trials_are_recorded(oneshot_study):
    _, url, _ = oneshot_study
    trials = optuna.load_study(study_name="os-tiny", storage=url).trials
    sup = [t for t in trials if t.user_attrs.get("oneshot") == "supernet"]
    assert len(sup) == 1 and sup[0].state == optuna.trial.TrialState.PRUNED
    a = sup[0].user_attrs
    assert a["metrics"]["search_flops"] > a["metrics"]["train_flops"] > 0 and a["metrics"]["search_seconds"] > 0
    assert len(a["trajectory"]) == 3  # initial weights, then one record per epoch
    assert set(a["trajectory"][-1]["weights"]) == {r["placement"] for r in a["ranking"]["perturbation"]}
    assert {r["placement"] for r in a["ranking"]["magnitude"]} == {r["placement"] for r in a["ranking"]["perturbation"]}
    derived = [t for t in trials if t.user_attrs.get("origin") == "oneshot" and t.state.name == "COMPLETE"]
    assert len(derived) == 1
    d = derived[0].user_attrs
    assert d["supernet_trial"] == sup[0].number
    assert d["fingerprint"] == a["derived_fingerprint"]["perturbation"]
    assert 1 <= d["connections"] <= 3 and 0 <= d["metrics"]["val_accuracy"] <= 1
    assert derived[0].values[0] == d["metrics"]["val_accuracy"]


def test_a_killed_run_resumes_from_the_last_completed_phase(oneshot_study):
    _, url, interrupted = oneshot_study
    assert [t.state.name for t in interrupted] == ["PRUNED", "FAIL"]
    assert interrupted[1].user_attrs["fail_reason"] == "interrupted"
    after = optuna.load_study(study_name="os-tiny", storage=url).trials
    assert [t.state.name for t in after] == ["PRUNED", "FAIL", "COMPLETE"]  # the supernet was not trained again
    assert after[0].datetime_complete == interrupted[0].datetime_complete


def test_a_second_run_does_nothing_more(oneshot_study, run_cli):
    root, url, _ = oneshot_study
    spec = root / "os-tiny.yaml"
    spec.write_text(SPEC)
    before = len(optuna.load_study(study_name="os-tiny", storage=url).trials)
    code, out, err = run_cli("search", spec, "--strategy", "oneshot", "--storage", url)
    assert code == 0, err
    assert "already done" in out and "leaderboard: os-tiny" in out
    assert len(optuna.load_study(study_name="os-tiny", storage=url).trials) == before


def test_the_derived_trial_exports_like_any_other(oneshot_study, run_cli, tmp_path):
    _, url, _ = oneshot_study
    out = tmp_path / "best.py"
    code, _, err = run_cli("export", "--storage", url, "--study", "os-tiny", "-o", out)  # the leaderboard's best
    assert code == 0, err
    namespace: dict = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    trial = optuna.load_study(study_name="os-tiny", storage=url).trials[2]
    arch = Architecture.from_dict(trial.user_attrs["architecture"])
    assert "trial: 2 " in out.read_text()
    assert list(namespace["build"]().state_dict()) == list(build(arch).state_dict())


def test_supernet_weights_load_into_the_derived_network():
    space = parse_space(SPEC, "os-tiny.yaml")
    net = build_supernet(space, 0)
    base = base_candidate(space).architecture
    x = torch.randn(3, *base.input_shape)
    # All mass on "none": the supernet computes the plain network, with the same weights.
    for a in net.alphas:
        a.data[:] = -1e4
        a.data[0] = 0.0
    plain = build(base)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if ".shortcuts." not in k})
    net.eval()
    plain.eval()
    torch.testing.assert_close(net(x), plain(x))
    # One placement, one kind: the same function as the built architecture with that connection.
    place = next(p for p in net.options if p.src != p.dst - 1 and p.kinds[-1] == ("gated", "projection"))
    i = net.options.index(place)
    net.alphas[i].data[:] = -1e4
    net.alphas[i].data[len(place.kinds)] = 0.0
    from dataclasses import replace

    from resnas.arch import Connection

    arch = replace(base, connections=(Connection(place.src, place.dst, *place.kinds[-1]),), gate_mode="shortcut")
    derived = build(arch)
    derived.load_state_dict(net.derived_state_dict(arch))  # strict: every name matches
    derived.eval()
    torch.testing.assert_close(net(x), derived(x))


BAD = [
    ("oneshot: {epochs: 2, warmup: 1}", "oneshot: {epochs: 0}", "search.oneshot.epochs"),
    ("- {depth: 2, channels: 4}", "- {depth: {int: [1, 2]}, channels: 4}", "network.stages[0].depth"),
    ("count: {int: [1, 3]}", "count: 0", "residual.count"),
    ("oneshot: {epochs: 2, warmup: 1}", "oneshot: {epochs: 2, warmup: 2}", "search.oneshot.warmup"),
    ("scope: network}", "scope: network, merge: {choice: [add, concat]}}", "residual.merge"),
]


@pytest.mark.parametrize("old, new, where", BAD, ids=[b[2] for b in BAD])
def test_bad_input_exits_2_with_one_line(old, new, where, run_cli, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.replace(old, new))
    url = f"sqlite:///{tmp_path / 'resnas.db'}"
    code, out, err = run_cli("search", spec, "--strategy", "oneshot", "--storage", url)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and "bad.yaml:" in lines[0], err
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'resnas.db'}") == []  # nothing was created


def test_unknown_strategy_and_ray_backend_are_refused(run_cli, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    url = f"sqlite:///{tmp_path / 'resnas.db'}"
    code, _, err = run_cli("search", spec, "--strategy", "darts", "--storage", url)
    assert code == 2 and err.strip() == "error: --strategy: unknown strategy 'darts' (use sample or oneshot)"
    code, _, err = run_cli("search", spec, "--strategy", "oneshot", "--backend", "ray", "--storage", url)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--backend optuna" in err
