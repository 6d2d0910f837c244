"""``resnas report``: one self-contained HTML file; every plot draws in headless Chromium, no console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta

import numpy as np
import optuna
import pytest

from resnas import load_space, sample
from resnas.screening import placement_text

PLOTS = ("pareto", "connections", "placements", "gradients", "scores", "importances", "progress", "curves")
# Records console errors and uncaught exceptions into the page, where --dump-dom shows them.
PROBE = """<script>window.__errors=[];const __e=console.error;
console.error=(...a)=>{__errors.push(a.join(' '));__e(...a)};
window.addEventListener('error',e=>__errors.push('uncaught: '+e.message));
window.addEventListener('load',()=>setTimeout(()=>{const p=document.createElement('pre');p.id='console-errors';
p.textContent=JSON.stringify(__errors);document.body.appendChild(p)},0));</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture
def study(tmp_path):
    """A two-objective study of 16 trials as resnas records them (sampled architectures, no training)."""
    space = load_space("search_spaces/mnist1d_conv1d.yaml")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    st = optuna.create_study(study_name="demo", storage=url, directions=["maximize", "minimize"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        st.set_metric_names(["val_accuracy", "train_flops"])
    rng = np.random.default_rng(0)
    start = datetime(2026, 1, 1, 12, 0)
    dist = {"train.lr": optuna.distributions.FloatDistribution(0.001, 0.01, log=True),
            "residual.count": optuna.distributions.IntDistribution(0, 6)}  # fmt: skip
    for i in range(16):
        arch = sample(space, i).architecture
        acc = float(0.5 + 0.03 * len(arch.connections) + rng.normal(0, 0.02))
        flops = float(2e8 * arch.num_blocks * (1 + rng.random()))
        n = arch.num_blocks
        attrs = {
            "architecture": arch.to_dict(),
            "metrics": {"val_accuracy": acc, "train_flops": flops, "params": 1e4 * n, "train_seconds": 2.0 + i},
            "finished": True,
            "placements": ", ".join(placement_text(arch)) or "none",
            "history": [{"val_accuracy": acc * (e + 1) / 5} for e in range(5)],
            "grad_profile": {"weight": list(np.geomspace(1e-4 * (i + 1), 1e-1, n)), "input": [1.0] * n, "ratio": 9.0},
            "scores": {"synflow": acc * 10 + rng.normal(), "naswot": rng.normal(), "params": 1e4 * n},
            **({"baseline": "plain"} if i == 3 else {}),
        }
        trial = optuna.trial.create_trial(
            values=[acc, flops], user_attrs=attrs, distributions=dist,
            params={"train.lr": float(rng.uniform(0.001, 0.01)), "residual.count": len(arch.connections)},
        )  # fmt: skip
        trial.datetime_start, trial.datetime_complete = start + timedelta(minutes=i), start + timedelta(minutes=i + 1)
        st.add_trial(trial)
    return url


def test_report_is_self_contained(run_cli, study, tmp_path):
    out = tmp_path / "report.html"
    code, stdout, err = run_cli("report", "--storage", study, "-o", out)
    assert code == 0, err
    text = out.read_text()
    assert "wrote" in stdout and len(re.findall(r'class="plotly-graph-div"', text)) == len(PLOTS)
    assert not re.search(r'<script[^>]+src=|<link[^>]+href="http', text)  # nothing to fetch at view time
    assert 'class="baseline"' in text and "★ plain" in text
    # --upload: stored in the study's artifact store, where optuna-dashboard lists it
    code, _, err = run_cli("report", "--storage", study, "-o", out, "--upload")
    assert code == 2 and "--upload" in err and "artifact store" in err
    st = optuna.load_study(study_name="demo", storage=study)
    st.set_user_attr("artifact_dir", str(tmp_path / "artifacts"))
    code, stdout, err = run_cli("report", "--storage", study, "-o", out, "--upload")
    assert code == 0, err
    (meta,) = optuna.artifacts.get_all_artifact_meta(st)
    assert meta.filename == "report.html" and meta.artifact_id in stdout
    assert len(list((tmp_path / "artifacts").iterdir())) == 1


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_every_plot_draws_in_headless_chromium(run_cli, study, tmp_path):
    out = tmp_path / "report.html"
    assert run_cli("report", "--storage", study, "-o", out)[0] == 0
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text().replace("<head>", "<head>" + PROBE, 1))
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=15000", "--dump-dom", probed.as_uri()]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    errors = re.search(r'<pre id="console-errors">(.*?)</pre>', dom, re.S)
    assert errors is not None, proc.stderr[-2000:]  # the page loaded and its scripts ran
    assert errors.group(1) == "[]"
    assert "Uncaught" not in proc.stderr
    for name in PLOTS:  # plotly replaced each placeholder with its drawn SVG
        start = dom.index(f'id="plot-{name}"')
        following = dom[start : start + 200_000]
        assert 'class="main-svg"' in following.split('class="plotly-graph-div"')[0], name
    assert dom.count('class="main-svg"') >= len(PLOTS)
