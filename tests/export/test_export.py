"""Exported modules: standalone, equal to the resnas-built network, deterministic, lint-clean."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SPACES, TINY

from resnas import build, load_space, sample
from resnas.export import export_source
from resnas.export._api import export_trial
from resnas.search import search

SITE = str(Path(torch.__file__).resolve().parent.parent)

# Runs with `python -I -S`: no user site, no .pth files (so no editable resnas), only
# torch's site-packages on the path.
CHECKER = r"""
import importlib.util, json, sys
sys.path.append(sys.argv[1])
try:
    import resnas  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("resnas is importable: the check would prove nothing")
import torch
torch.set_num_threads(1)  # as the test process (conftest): equal outputs need the same summation order
cases = json.load(open(sys.argv[2]))
for case in cases:
    spec = importlib.util.spec_from_file_location("exported", case["file"])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.build()
    net.load_state_dict(torch.load(case["state"]))
    x = torch.load(case["input"])
    expected = torch.load(case["expected"])
    for mode in ("train", "eval"):
        getattr(net, mode)()
        torch.manual_seed(0)
        with torch.no_grad():
            torch.testing.assert_close(net(x), expected[mode], rtol=1e-5, atol=1e-6)
    print("ok", case["file"])
"""


def architectures() -> list[tuple[str, object]]:
    """Every preset, and 20 architectures sampled from each search space."""
    out = []
    for spec in SPACES:
        space = load_space(spec)
        seeds = [0] if space.spec.search.trials == 1 else range(20)
        for seed in seeds:
            out.append((f"{spec.stem}_{seed}", sample(space, seed).architecture))
    return out


def test_exported_modules_match_the_built_networks(tmp_path):
    cases = []
    archs = architectures()
    assert len([a for a in archs if not a[0].startswith(("resnet", "cifar", "plain"))]) >= 50
    for name, arch in archs:
        torch.manual_seed(0)
        model = build(arch)
        with torch.no_grad():  # non-trivial BN statistics, so eval mode checks them
            for key, value in model.state_dict().items():
                if "running" in key:
                    value.uniform_(0.5, 1.5)
        shape = list(arch.input_shape)
        if len(shape) == 3 and shape[-1] > 64:
            shape = [shape[0], 64, 64]
        x = torch.randn(3, *shape)
        state = {k: v.clone() for k, v in model.state_dict().items()}  # before train mode updates BN stats
        expected = {}
        for mode in ("train", "eval"):
            getattr(model, mode)()
            torch.manual_seed(0)
            with torch.no_grad():
                expected[mode] = model(x)
        file = tmp_path / f"{name}.py"
        file.write_text(export_source(arch, "Net", [("architecture", name)]))
        paths = {k: tmp_path / f"{name}.{k}.pt" for k in ("state", "input", "expected")}
        torch.save(state, paths["state"])
        torch.save(x, paths["input"])
        torch.save(expected, paths["expected"])
        cases.append({"file": str(file), **{k: str(v) for k, v in paths.items()}})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "check.py").write_text(CHECKER)
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(tmp_path / "check.py"), SITE, str(tmp_path / "cases.json")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr[-3000:]
    assert proc.stdout.count("ok ") == len(cases)
    # Lint-clean and formatted, with ruff's defaults.
    files = [c["file"] for c in cases]
    ruff = [sys.executable, "-m", "ruff"]
    assert subprocess.run([*ruff, "check", "--isolated", *files], capture_output=True).returncode == 0
    fmt = subprocess.run([*ruff, "format", "--isolated", "--check", *files], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout


def test_resnet18_export_has_exact_parameters_and_readable_names(tmp_path):
    arch = sample(load_space("search_spaces/resnet18.yaml"), 0).architecture
    source = export_source(arch, "ResNet18")
    namespace: dict = {}
    exec(compile(source, "resnet18.py", "exec"), namespace)
    net = namespace["build"]()
    assert sum(p.numel() for p in net.parameters()) == 11_689_512
    assert list(net.state_dict()) == list(build(arch).state_dict())
    identifiers = set(re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", source))
    generated = sorted(i for i in identifiers if re.search(r"_\d+$", i) or i.startswith(("getattr", "fx")))
    assert generated == []
    assert "getattr" not in source and "torch.fx" not in source
    only_torch = {m.split()[1].split(".")[0] for m in re.findall(r"^(?:import|from) \S+", source, re.M)}
    assert only_torch <= {"__future__", "torch", "math"}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{root / 'resnas.db'}"
    search(load_space(TINY), storage=url, trials=3)
    return root, url


def test_cli_export_twice_is_byte_identical(tiny_study, run_cli, tmp_path):
    _, url = tiny_study
    out = tmp_path / "best.py"
    exported = []
    for _ in range(2):
        code, stdout, err = run_cli("export", "--storage", url, "--study", "tiny", "-o", out, "--force")
        assert code == 0, err
        exported.append(out.read_bytes())
    assert exported[0] == exported[1]
    assert "rank 1 of 3" in stdout
    text = out.read_text()
    assert "class TinyNet(nn.Module)" in text and "study: tiny" in text and "regenerate: resnas export" in text


def test_weights_reproduce_recorded_test_accuracy(tiny_study, tmp_path):
    _, url = tiny_study
    result = export_trial(
        "tiny", url, rank=2, out=tmp_path / "net.py", weights=tmp_path / "net.safetensors", device="cpu"
    )
    assert result.weights_source == "retrained"
    header = re.search(r"^test accuracy: (\S+) ", (tmp_path / "net.py").read_text(), re.M)
    assert float(header.group(1)) == result.test_accuracy
    from resnas.data import load_data
    from resnas.search import load_study, stored_space

    space = stored_space(load_study("tiny", url))
    data = load_data(space.spec.data, space.spec.search.seed)
    torch.save({"x": data.x_test, "y": data.y_test}, tmp_path / "test.pt")
    script = f"""
import importlib.util, sys
sys.path.append({SITE!r})
import torch
from safetensors.torch import load_model
spec = importlib.util.spec_from_file_location("net", {str(tmp_path / "net.py")!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
net = mod.build(); load_model(net, {str(tmp_path / "net.safetensors")!r}); net.eval()
d = torch.load({str(tmp_path / "test.pt")!r})
with torch.no_grad():
    print(repr((net(d["x"]).argmax(1) == d["y"]).sum().item() / len(d["y"])))
"""
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) == result.test_accuracy


def test_kept_weights_are_used_instead_of_retraining(tmp_path, monkeypatch):
    import resnas.export._api as api
    from resnas import Architecture
    from resnas.data import load_data
    from resnas.train import evaluate

    url = f"sqlite:///{tmp_path / 'resnas.db'}"
    study = search(load_space(TINY), storage=url, trials=2, keep_weights=True)
    monkeypatch.setattr(api, "train", lambda *a, **k: pytest.fail("retrained despite kept weights"))
    result = export_trial("tiny", url, out=tmp_path / "net.py", weights=tmp_path / "w.safetensors", device="cpu")
    assert result.weights_source == "artifact"
    # The kept weights are the trial's own: they give its recorded validation accuracy exactly.
    from safetensors.torch import load_model

    trial = study.trials[result.trial]
    model = build(Architecture.from_dict(trial.user_attrs["architecture"]))
    load_model(model, str(result.weights))
    data = load_data(load_space(TINY).spec.data, 0)
    assert evaluate(model, data.x_val, data.y_val)[0] == trial.user_attrs["metrics"]["val_accuracy"]


def test_pt2_program_matches(tiny_study, tmp_path):
    _, url = tiny_study
    result = export_trial(
        "tiny", url, out=tmp_path / "net.py", weights=tmp_path / "w.safetensors", pt2=tmp_path / "net.pt2", device="cpu"
    )
    program = torch.export.load(str(result.extra[0]))
    from safetensors.torch import load_model

    from resnas import Architecture
    from resnas.search import load_study

    arch = Architecture.from_dict(load_study("tiny", url).trials[result.trial].user_attrs["architecture"])
    model = build(arch).eval()
    load_model(model, str(result.weights))
    x = torch.randn(5, *arch.input_shape)
    torch.testing.assert_close(program.module()(x), model(x))


def test_pt2_without_weights_warns_or_uses_kept_weights(tiny_study, run_cli, tmp_path):
    _, url = tiny_study
    code, out, err = run_cli("export", "--storage", url, "-o", tmp_path / "n.py", "--pt2", tmp_path / "n.pt2")
    assert code == 0 and (tmp_path / "n.pt2").exists()
    assert err.startswith("warning: --pt2 ") and "untrained (random) weights; add --weights" in err, err
    # A study that kept its weights: the program holds them, no retraining.
    kept = tmp_path / "kept"
    kept.mkdir()
    kept_url = f"sqlite:///{kept / 'resnas.db'}"
    study = search(load_space(TINY), storage=kept_url, trials=1, keep_weights=True)
    result = export_trial("tiny", kept_url, out=kept / "n.py", pt2=kept / "n.pt2")
    assert result.warnings == [f"{kept / 'n.pt2'}: holds the weights the search kept for trial 0"]
    from resnas import Architecture
    from resnas.data import load_data

    arch = Architecture.from_dict(study.trials[0].user_attrs["architecture"])
    data = load_data(load_space(TINY).spec.data, 0)
    with torch.no_grad():
        logits = torch.export.load(str(kept / "n.pt2")).module()(data.x_val)
    accuracy = (logits.argmax(1) == data.y_val).float().mean().item()
    assert accuracy == pytest.approx(study.trials[0].user_attrs["metrics"]["val_accuracy"], abs=1e-6)
    assert arch.fingerprint == result.fingerprint


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope"], "no study named 'nope'"),
        (["--study", "tiny", "--trial", "99"], "--trial: study 'tiny' has trials 0 to"),
        (["--study", "tiny", "--rank", "9"], "--rank: study 'tiny' ranks 3 finished trials, not 9"),
        (["--study", "tiny", "--rank", "0"], "'--rank'"),
        (["--study", "tiny", "--trial", "-1"], "'--trial'"),
        (["--study", "tiny", "--class-name", "class"], "--class-name: 'class' is not a Python class name"),
        (["--study", "tiny", "--class-name", "nn"], "--class-name: 'nn' is a name the exported module already uses"),
        (["--study", "tiny", "--class-name", "build"], "'build' is a name the exported module already uses"),
        (["--study", "tiny", "--class-name", "2Net"], "is not a Python class name"),
    ],
)
def test_export_errors_are_one_line(tiny_study, run_cli, tmp_path, args, message):
    _, url = tiny_study
    code, _, err = run_cli("export", "--storage", url, *args, "-o", tmp_path / "x.py")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "x.py").exists()


def test_export_from_study_without_finished_trials(run_cli, tmp_path):
    import optuna

    from resnas.search import open_study

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_study(load_space(TINY), url, None)  # queues the baselines: waiting trials, none finished

    def stored() -> list[tuple[int, str]]:
        return [(t.number, t.state.name) for t in optuna.load_study(study_name="tiny", storage=url).trials]

    before = stored()
    assert all(state == "WAITING" for _, state in before)
    code, _, err = run_cli("export", "--storage", url, "--study", "tiny")
    assert code == 2 and "has no finished trial" in err
    assert stored() == before  # export wrote nothing into the study


def test_export_checks_every_path_before_any_work(tiny_study, run_cli, tmp_path, monkeypatch):
    import resnas.export._api as api

    _, url = tiny_study
    monkeypatch.setattr(api, "train", lambda *a, **k: pytest.fail("trained before the paths were checked"))
    existing = tmp_path / "best.py"
    existing.write_text("keep me")
    cases = [
        (["-o", existing], f"--output: {existing} exists; replace it with --force"),
        (["-o", tmp_path / "missing" / "x.py"], f"--output: directory {tmp_path / 'missing'} does not exist"),
        (["-o", tmp_path], f"--output: {tmp_path} is a directory"),
        (["-o", tmp_path / "x.py", "--weights", tmp_path / "no" / "w.st"], "--weights: directory"),
        (["-o", tmp_path / "x.py", "--pt2", tmp_path / "no" / "p.pt2"], "--pt2: directory"),
    ]
    for args, message in cases:
        code, _, err = run_cli("export", "--storage", url, "--study", "tiny", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert existing.read_text() == "keep me"
    assert not (tmp_path / "x.py").exists()
    code, _, err = run_cli("export", "--storage", url, "--study", "tiny", "-o", existing, "--force")
    assert code == 0, err
    assert "class TinyNet" in existing.read_text()


def test_failed_trial_is_exported_only_with_force(tiny_study, run_cli, tmp_path):
    import sqlite3

    import optuna

    root, _ = tiny_study
    with sqlite3.connect(root / "resnas.db") as src, sqlite3.connect(tmp_path / "r.db") as dst:
        src.backup(dst)  # a copy of the study, WAL included
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = optuna.load_study(study_name="tiny", storage=url)
    attrs = {"architecture": study.trials[0].user_attrs["architecture"], "fail_reason": "nan"}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs))
    failed = len(study.trials) - 1
    out = tmp_path / "failed.py"
    code, _, err = run_cli("export", "--storage", url, "--study", "tiny", "--trial", failed, "-o", out)
    assert code == 2 and f"--trial: trial {failed} is FAIL (nan); export it anyway with --force" in err
    assert not out.exists()
    code, _, err = run_cli(
        "export", "--storage", url, "--study", "tiny", "--trial", failed, "-o", out, "--force", "--weights", "w.st"
    )
    assert code == 2 and f"trial {failed} recorded no training settings" in err
    code, _, err = run_cli("export", "--storage", url, "--study", "tiny", "--trial", failed, "-o", out, "--force")
    assert code == 0, err
    assert "state FAIL" in out.read_text()


@pytest.mark.parametrize("command", ["export", "leaderboard"])
def test_study_help_names_the_real_default(run_cli, command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0
    assert "the spec's name" not in out and "the only study in the storage" in " ".join(out.split())


def test_cli_search_keeps_weights_where_asked_and_export_uses_them(run_cli, tmp_path, monkeypatch):
    import resnas.export._api as api

    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.read_text().replace("trials: 4", "trials: 1").replace("epochs: 4", "epochs: 1"))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    code, _, err = run_cli("search", spec, "--storage", url, "--keep-weights", "--artifacts", tmp_path / "kept")
    assert code == 0, err
    assert len([p for p in (tmp_path / "kept").rglob("*") if p.is_file()]) == 1
    monkeypatch.setattr(api, "train", lambda *a, **k: pytest.fail("retrained despite kept weights"))
    code, out, err = run_cli("export", "--storage", url, "-o", "best.py", "--weights", "best.safetensors")
    assert code == 0, err
    assert "(artifact)" in out and (tmp_path / "best.safetensors").stat().st_size > 0
