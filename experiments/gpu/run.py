"""The GPU path, measured: one script, at most about 8 minutes on one H100/H200-class GPU.

Prints, each as a ratio against a baseline measured in the same run:

1. trial throughput of the headline space with resnas's trainer (data resident on the GPU,
   index-slice batches, bf16 autocast) against a naive fp32 loop (a DataLoader over CPU
   tensors, every batch copied to the GPU), same architecture, settings and epochs;
2. bf16 autocast (+ channels_last for 2-D convolutions) against fp32, for the headline
   conv1d space and the conv2d digits space;
3. 1, 2, 4 and 8 trials packed on one GPU (``resnas search --jobs K --gpus-per-trial 1/K``),
   in trials per minute, with the CUDA peak memory of each trial;

and exits 1, loudly, if any trial did not run on the GPU (its recorded ``device``) or failed.

``--dry-run`` runs every step on the CPU with tiny budgets (1 epoch, packs of 1 and 2), so the
script is known to work before a GPU is at hand; CI runs it.

Run:  bash experiments/gpu/run.sh            (on a machine with CUDA)
      bash experiments/gpu/run.sh --dry-run  (anywhere)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, TensorDataset

from resnas import build, load_space, sample
from resnas.data import load_data
from resnas.train import train

ROOT = Path(__file__).resolve().parents[2]
HEADLINE = ROOT / "search_spaces" / "adaptive.yaml"
CONV2D = ROOT / "search_spaces" / "digits_cnn.yaml"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resnas_trial(spec: Path, device: torch.device, precision: str) -> float:
    """Seconds for one trial with resnas's trainer (build + train, data moved once)."""
    space = load_space(spec)
    cand = sample(space, 0)
    cfg = {**cand.train, "precision": precision}
    data = load_data(space.spec.data, 0)
    torch.manual_seed(0)
    sync(device)
    start = time.perf_counter()
    train(build(cand.architecture), data, cfg, seed=0, device=device)
    sync(device)
    return time.perf_counter() - start


def naive_trial(spec: Path, device: torch.device) -> float:
    """Seconds for the same trial as a plain fp32 loop: DataLoader over CPU tensors, batch by batch to the device."""
    space = load_space(spec)
    cand = sample(space, 0)
    cfg = cand.train
    data = load_data(space.spec.data, 0)
    torch.manual_seed(0)
    sync(device)
    start = time.perf_counter()
    model = build(cand.architecture).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train),
        batch_size=int(cfg["batch_size"]),
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    for _ in range(int(cfg["epochs"])):
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(data.y_val), 512):
                model(data.x_val[i : i + 512].to(device)).argmax(1).cpu()
    sync(device)
    return time.perf_counter() - start


def variant(spec: Path, tmp: Path, epochs: int, limit: int | None, trials: int = 1) -> Path:
    """``spec`` with fixed epochs, at most ``limit`` samples, random sampling, no baselines or confirmation."""
    doc = yaml.safe_load(spec.read_text())
    doc["train"]["epochs"] = epochs
    if limit:
        doc["data"]["limit"] = limit
    doc["search"] = {"trials": trials, "sampler": "random", "baselines": False, "seed": 0}
    path = tmp / f"{spec.stem}-{trials}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def packed(spec: Path, tmp: Path, jobs: int, trials: int, device: str) -> dict:
    """Run ``resnas search --jobs K --gpus-per-trial 1/K``; trials/min and every trial's device and peak memory."""
    import optuna

    storage = f"sqlite:///{tmp / f'pack{jobs}.db'}"
    cmd = [sys.executable, "-m", "resnas", "search", str(spec), "--study", f"pack{jobs}", "--storage", storage]
    cmd += ["--trials", str(trials), "--jobs", str(jobs), "--gpus-per-trial", str(1 / jobs), "--top", "1"]
    if device == "cpu":
        cmd += ["--device", "cpu"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd[2:])} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=f"pack{jobs}", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    bad = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    if len(done) != trials or bad:
        sys.exit(f"FAIL: pack of {jobs}: {len(done)} of {trials} trials complete, {len(bad)} not")
    devices = sorted({str(t.user_attrs.get("device", "?")) for t in done})
    off = [t.number for t in done if not str(t.user_attrs.get("device", "")).startswith(device)]
    if off:
        sys.exit(f"FAIL: pack of {jobs}: trials {off} did not run on {device} (recorded devices: {devices})")
    peaks = [t.user_attrs["metrics"]["peak_memory_mb"] for t in done]
    return {
        "jobs": jobs,
        "trials": trials,
        "wall_s": wall,
        "per_min": 60 * trials / wall,
        "devices": devices,
        "peak_mb_max": max(peaks),
        "peak_mb_median": statistics.median(peaks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny budgets")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial [5; dry run 1]")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.dry_run:  # tiny budgets: 1 epoch, 400 samples, packs of 1 and 2
        device, epochs, limit, packs = torch.device("cpu"), args.epochs or 1, 400, (1, 2)
    else:
        if not torch.cuda.is_available():
            sys.exit("error: no CUDA device here; run with --dry-run to check the script on the CPU")
        device, epochs, limit, packs = torch.device("cuda"), args.epochs or 5, None, (1, 2, 4, 8)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    print(f"device {name}; torch {torch.__version__}; {epochs} epochs per trial; load average {load:.2f}")
    figures: dict = {"device": name, "epochs": epochs, "load": load}

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        headline = variant(HEADLINE, tmp_path, epochs, limit)
        conv2d = variant(CONV2D, tmp_path, epochs, limit)
        resnas_trial(variant(HEADLINE, tmp_path, 1, limit), device, "auto")  # warm-up: CUDA context, cuDNN
        ours = min(resnas_trial(headline, device, "auto") for _ in range(2))
        naive = min(naive_trial(headline, device) for _ in range(2))
        figures["trainer"] = {"resnas_s": ours, "naive_s": naive, "ratio": naive / ours}
        print(
            f"1. trial throughput, headline space: resnas {60 / ours:.1f}/min, naive fp32 DataLoader loop "
            f"{60 / naive:.1f}/min: {naive / ours:.2f}x"
        )

        figures["precision"] = {}
        for spec, extra in ((headline, ""), (conv2d, " + channels_last")):
            fp32 = min(resnas_trial(spec, device, "fp32") for _ in range(2))
            bf16 = min(resnas_trial(spec, device, "bf16") for _ in range(2))
            figures["precision"][spec.stem] = {"fp32_s": fp32, "bf16_s": bf16, "ratio": fp32 / bf16}
            print(
                f"2. {spec.stem}: bf16 autocast{extra} {fp32 / bf16:.2f}x fp32 ({bf16:.2f} s vs {fp32:.2f} s a trial)"
            )

        rows = []
        for jobs in packs:
            trials = 2 * jobs
            rows.append(packed(variant(HEADLINE, tmp_path, epochs, limit, trials), tmp_path, jobs, trials, device.type))
        base = rows[0]["per_min"]
        print("3. trials packed on one device (resnas search --jobs K --gpus-per-trial 1/K):")
        print("   K  trials  trials/min  vs K=1  peak MB (median / max)  devices")
        for r in rows:
            print(
                f"   {r['jobs']}  {r['trials']:6d}  {r['per_min']:10.1f}  {r['per_min'] / base:5.2f}x"
                f"  {r['peak_mb_median']:10.1f} / {r['peak_mb_max']:.1f}  {', '.join(r['devices'])}"
            )
        figures["packing"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print(f"all trials ran on {device.type}")


if __name__ == "__main__":
    main()
