"""Every performance figure of resnas as a ratio against its baseline, measured in the same run.

    python experiments/benchmarks/run.py [--quick] [--no-write]

Rows (baseline in brackets): the built ResNet-20 and ResNet-18 [hand-written as torchvision's
resnet.py] train step, eval forward, eval peak memory growth and outputs; search overhead per
trial [a plain Optuna loop training the same architectures with the same function and data];
``--jobs 2`` [``--jobs 1``]; index-slice batching [a DataLoader loop]; start-up and
leaderboard on 2,000 and 10,000-trial studies [the empty study] (experiments/startup).
Baseline and candidate runs alternate; every process runs torch on one thread except the
``--jobs`` row, whose subject is threads. Each row prints the load average beside it.

Train step and eval forward times are the thread's CPU time (``time.thread_time``; with one
torch thread, forward and backward run on it): on a shared machine the wall time mostly
measures the other processes.

Peak memory: each eval forward runs in a fresh process with glibc's mmap threshold fixed at
64 KiB (``MALLOC_MMAP_THRESHOLD_``), so every tensor is its own mapping, returned to the system
when freed; the growth of the peak resident memory (``VmHWM``) across the forward is then the
peak of live tensor memory, to the page, the same on every run.

``--quick`` runs each figure at a toy size (for the test that every row is produced); its
values mean nothing. Without ``--no-write`` the table goes into README.md between the markers.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
README = HERE / "README.md"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
TINY = (ROOT / "tests" / "data" / "tiny.yaml").read_text()


@dataclass
class Row:
    figure: str
    setting: str
    value: str
    target: str
    ok: bool | None  # None: no acceptance target
    load: str


def load_text() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.3f}x [{min(ratios):.2f}-{max(ratios):.2f}]"


def child(*args: object, threads: int | None = 1, env: dict | None = None) -> dict:
    """Run this file's ``--child`` mode in a fresh process; its last stdout line is JSON."""
    full = {**os.environ, **(env or {})}
    full.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        full["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True, env=full, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- built vs hand-written networks ---------------------------------------------------------
MMAP = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # see the module docstring
NETS = {"resnet20": (32, 64, 512), "resnet18": (64, 8, 64)}  # input size, train batch, memory batch


def networks(quick: bool) -> list[Row]:
    import torch

    sys.path.insert(0, str(HERE))
    import reference

    torch.set_num_threads(1)
    rows = []
    for name, (size, batch, mem_batch) in NETS.items():
        if quick:
            size, batch, mem_batch = min(size, 32), 4, 64
        pairs, steps = (3, 2) if quick else (15, 5)
        hand, built = reference.pair(name)
        x = torch.randn(batch, 3, size, size)
        y = torch.randint(0, 10, (batch,))
        same = True
        for mode in ("eval", "train"):
            hand.train(mode == "train")
            built.train(mode == "train")
            with torch.no_grad():
                same &= torch.equal(hand(x), built(x))
        opts = {m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (hand, built)}
        step = functools.partial(train_steps, opts=opts, x=x, y=y, steps=steps)
        forward = functools.partial(eval_forwards, x=x, steps=steps)
        for label, fn in (("train step", step), ("eval forward", forward)):
            fn(hand), fn(built)  # warm-up
            ratios = []
            for i in range(pairs):
                order = (hand, built) if i % 2 == 0 else (built, hand)
                times = {id(m): fn(m) for m in order}
                ratios.append(times[id(built)] / times[id(hand)])
            ok = statistics.median(ratios) <= 1.02 if label == "train step" else None
            target = "<= 1.02x median" if label == "train step" else "keep ~1x"
            rows.append(
                Row(
                    f"{name} {label} time, built / hand-written",
                    f"batch {batch}, {size}px, {pairs} pairs",
                    spread(ratios),
                    target,
                    ok,
                    load_text(),
                )
            )
        growth = {"hand": [], "built": []}
        for _ in range(1 if quick else 3):
            for which in ("hand", "built"):
                growth[which].append(child("memory", name, which, mem_batch, size, env=MMAP)["mb"])
        h, b = (max(statistics.median(growth[w]), 1e-6) for w in ("hand", "built"))
        is_target = name == "resnet20"
        rows.append(
            Row(
                f"{name} eval peak memory growth, built / hand-written",
                f"batch {mem_batch}, {size}px",
                f"{b / h:.3f}x ({b:.1f} vs {h:.1f} MB)",
                "<= 1.05x" if is_target else "-",
                b / h <= 1.05 if is_target else None,
                load_text(),
            )
        )
        rows.append(
            Row(
                f"{name} outputs, built vs hand-written",
                "eval and train mode",
                "bit-identical" if same else "DIFFER",
                "bit-identical",
                same,
                load_text(),
            )
        )
    return rows


def train_steps(model, opts, x, y, steps: int) -> float:
    import torch.nn.functional as F

    model.train()
    start = time.thread_time()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opts[model].zero_grad()
        loss.backward()
        opts[model].step()
    return time.thread_time() - start


def eval_forwards(model, x, steps: int) -> float:
    import torch

    model.eval()
    start = time.thread_time()
    with torch.no_grad():
        for _ in range(steps):
            model(x)
    return time.thread_time() - start


def peak_rss_mb() -> float:
    """This process's peak resident memory: ``VmHWM``, which belongs to the address space and
    starts afresh at exec (``ru_maxrss`` does not: Linux carries it over from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status: peak memory needs Linux")


def memory_child(name: str, which: str, batch: str, size: str) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    import reference

    hand, built = reference.pair(name)
    model = (hand if which == "hand" else built).eval()
    del hand, built
    with torch.no_grad():
        model(torch.randn(2, 3, int(size), int(size)))  # one-time allocations before the baseline
        x = torch.randn(int(batch), 3, int(size), int(size))
        before = peak_rss_mb()
        model(x)
        after = peak_rss_mb()
    return {"mb": after - before}


# ---- search overhead vs a plain Optuna loop -------------------------------------------------
def overhead_spec(trials: int, epochs: int, diagnostics: bool = True) -> str:
    text = TINY.replace("epochs: 4", f"epochs: {epochs}").replace("trials: 4", f"trials: {trials}")
    return text if diagnostics else text.replace("sampler: random,", "sampler: random, diagnostics: false,")


def cpu_s() -> float:
    """CPU seconds of this process, every thread (a trial runs in its own thread)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def calibrate_child(seconds: str) -> dict:
    """The epochs of ``tests/data/tiny.yaml`` that make a trial train for about ``seconds`` CPU
    seconds on this machine (one torch thread; the mean over three of its architectures,
    after a warm-up), so that a row's trials are as long as its target names on any machine."""
    import torch

    from resnas import parse_space
    from resnas.data import load_data
    from resnas.nn import build
    from resnas.space import sample
    from resnas.train import train

    torch.set_num_threads(1)
    space = parse_space(overhead_spec(3, 2))
    data = load_data(space.spec.data, space.spec.search.seed)
    took = []
    for i in range(4):
        s = sample(space, i)
        began = time.thread_time()
        train(build(s.architecture), data, s.train, seed=0)
        took.append((time.thread_time() - began) / s.train["epochs"])
    per_epoch = statistics.mean(took[1:])  # the first is the warm-up
    return {"epochs": max(1, round(float(seconds) / per_epoch)), "per_epoch": per_epoch}


def search_child(kind: str, directory: str, trials: str, epochs: str, diagnostics: str = "on") -> dict:
    """One search of ``trials`` trials: wall and CPU seconds after imports; for each trial, the
    process CPU clock when its training returned and the CPU seconds the training itself took
    (``time.thread_time`` of the thread that trains; the same ``resnas.train.train`` in both loops)."""
    import optuna
    import torch

    import resnas.search._objective
    from resnas import parse_space
    from resnas.arch import Architecture
    from resnas.data import load_data
    from resnas.nn import build
    from resnas.search import search
    from resnas.train import train

    ends, trains = [], []

    def timed_train(*args, **kwargs):
        began = time.thread_time()
        result = train(*args, **kwargs)
        trains.append(time.thread_time() - began)
        ends.append(cpu_s())
        return result

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(overhead_spec(int(trials), int(epochs), diagnostics == "on"))
    root = Path(directory)
    # torch's first forward and backward passes in a process cost more than the later ones; warmed
    # here in both loops, so that neither charges the other's first training (or measurement) with it
    from resnas.space import sample

    warm = build(sample(space, 0).architecture)
    warm(load_data(space.spec.data, space.spec.search.seed).x_train[:32]).sum().backward()
    start, cpu = time.perf_counter(), cpu_s()
    if kind == "resnas":
        resnas.search._objective.train = timed_train
        url = f"sqlite:///{root / f'resnas-{time.time_ns()}.db'}"
        study = search(space, storage=url, trials=int(trials))
        record = [
            {"arch": t.user_attrs["architecture"], "train": t.user_attrs["train"], "seed": t.user_attrs["seed"]}
            for t in study.trials
        ]
        (root / "candidates.json").write_text(json.dumps(record))
    else:
        candidates = json.loads((root / "candidates.json").read_text())
        data = load_data(space.spec.data, space.spec.search.seed)
        study = optuna.create_study(storage=f"sqlite:///{root / f'plain-{time.time_ns()}.db'}", direction="maximize")

        def objective(trial: optuna.Trial) -> float:
            c = candidates[trial.number]
            torch.manual_seed(c["seed"])
            model = build(Architecture.from_dict(c["arch"]))
            return timed_train(model, data, c["train"], seed=c["seed"]).metrics["val_accuracy"]

        study.optimize(objective, n_trials=len(candidates))
    return {"wall": time.perf_counter() - start, "cpu": cpu_s() - cpu, "ends": ends, "trains": trains}


def search_overhead(quick: bool) -> list[Row]:
    """Non-training CPU per trial: each loop's process CPU seconds less the CPU seconds its
    trainings took (measured in the training thread), so that the spread of training times on a
    shared machine does not swamp a difference of milliseconds. Both loops train the same
    architectures with the same function and data, torch on one thread; the ratio of their
    training CPU is printed beside, so that a search that slowed training down would show.
    Before either clock starts, each process has built a network and run it forward and
    backward once (torch's first passes cost more), and loaded the data: what is left of the
    one-time costs is the search's own. With the default ``search.diagnostics: true`` and with
    it false."""
    trials, pairs = (3, 1) if quick else (10, 3)
    epochs = 1 if quick else child("calibrate", 1.0)["epochs"]  # trials of about 1 CPU s
    rows = []
    for diagnostics in ("on", "off"):
        steady, whole, train_ratio, trial_s = [], [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(pairs):
                ours = child("search", "resnas", tmp, trials, epochs, diagnostics)  # records the candidates
                plain = child("search", "plain", tmp, trials, epochs, diagnostics)

                def steady_ms(run: dict) -> float:
                    # trials 2..N: the CPU between the first and the last training's end, less their trainings
                    ends, trains = run["ends"], run["trains"]
                    return (ends[-1] - ends[0] - sum(trains[1:])) / (len(ends) - 1) * 1e3

                steady.append(steady_ms(ours) - steady_ms(plain))
                outside = (ours["cpu"] - sum(ours["trains"])) - (plain["cpu"] - sum(plain["trains"]))
                whole.append(outside / plain["cpu"])
                train_ratio.append(sum(ours["trains"]) / sum(plain["trains"]))
                trial_s.append(plain["cpu"] / trials)
        load = load_text()
        s_ms, share = statistics.median(steady), statistics.median(whole)
        label = "diagnostics on (default)" if diagnostics == "on" else "search.diagnostics: false"
        setting = f"{trials} trials of {statistics.median(trial_s):.2f} CPU s, {pairs} pairs, {label}"
        rows += [
            Row(
                f"search overhead per trial, steady state (trials 2..N), resnas - plain Optuna, {label}",
                setting,
                f"{s_ms:+.0f} CPU ms [{min(steady):+.0f} to {max(steady):+.0f}]; "
                f"training CPU {spread(train_ratio)} of the plain loop's",
                "<= 30 ms",
                s_ms <= 30,
                load,
            ),
            Row(
                f"search overhead over a whole search, one-time costs included, resnas / plain Optuna, {label}",
                setting,
                f"{1 + share:.3f}x CPU ({share * statistics.median(trial_s) * 1e3:+.0f} ms per trial)",
                "<= 1.03x (3 % of a 1 s trial)",
                share <= 0.03,
                load,
            ),
        ]
    return rows


# ---- --jobs 2 vs --jobs 1 -------------------------------------------------------------------
def jobs(quick: bool) -> list[Row]:
    trials, pairs = (2, 1) if quick else (8, 5)
    epochs = 1 if quick else child("calibrate", 3.0)["epochs"]  # trials of about 3 s on one core
    spec = overhead_spec(trials, epochs)
    ratios, walls, trial_s = [], {1: [], 2: []}, {1: [], 2: []}
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tiny.yaml").write_text(spec)
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        for i in range(pairs):
            run = {}
            for n in (1, 2) if i % 2 == 0 else (2, 1):
                db = Path(tmp) / f"jobs{n}-{i}.db"
                start = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "resnas",
                        "search",
                        "tiny.yaml",
                        "--trials",
                        str(trials),
                        "--jobs",
                        str(n),
                        "--storage",
                        f"sqlite:///{db}",
                    ],
                    cwd=tmp,
                    env=env,
                    capture_output=True,
                    check=True,
                )
                run[n] = time.perf_counter() - start
                walls[n].append(run[n])
                for t in optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").trials:
                    if t.datetime_complete is not None:
                        trial_s[n].append((t.datetime_complete - t.datetime_start).total_seconds())
            ratios.append(run[1] / run[2])
            print(f"jobs: pair {i}: wall --jobs 1 {run[1]:.1f} s, --jobs 2 {run[2]:.1f} s", file=sys.stderr)
    med = statistics.median(ratios)
    per = {n: statistics.median(v) for n, v in trial_s.items()}
    return [
        Row(
            "--jobs 2 speed-up, wall(--jobs 1) / wall(--jobs 2)",
            f"{trials} trials of {per[1]:.1f} s (--jobs 1) and {per[2]:.1f} s (--jobs 2, median), "
            f"{os.cpu_count()} cores, {pairs} pairs",
            spread(ratios),
            ">= 1.7x",
            med >= 1.7,
            load_text(),
        )
    ]


# ---- index slices vs DataLoader -------------------------------------------------------------
def batching(quick: bool) -> list[Row]:
    import torch

    from resnas import load_space, sample
    from resnas.data import load_data
    from resnas.nn import build

    torch.set_num_threads(1)
    module = import_path("batching", ROOT / "experiments" / "batching" / "run.py")
    space = load_space(ROOT / "search_spaces" / "digits_cnn.yaml")
    arch = sample(space, 0).architecture
    data = load_data(space.spec.data, 0)
    x, y = (data.x_train[:128], data.y_train[:128]) if quick else (data.x_train, data.y_train)
    ratios = []
    for i in range(1 if quick else 3):
        rate = {}
        for name in ("loader", "slices") if i % 2 == 0 else ("slices", "loader"):
            torch.manual_seed(0)
            model = build(arch)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            rate[name] = getattr(module, name)(model, x, y, 64, 1, opt)
        ratios.append(rate["slices"] / rate["loader"])
    return [
        Row(
            "index-slice batching throughput / DataLoader loop",
            f"digits_cnn, {len(y)} samples, batch 64",
            spread(ratios),
            "-",
            None,
            load_text(),
        )
    ]


# ---- study size: start-up and leaderboard ---------------------------------------------------
def study_size(quick: bool) -> list[Row]:
    sizes = [0, 5, 10] if quick else [0, 2000, 10000]
    new = 1 if quick else 3
    measured = startup_in_process(sizes, new)
    base = measured[sizes[0]]
    rows = []
    for size in sizes[1:]:
        row = measured[size]
        delay = row["start-up"] - base["start-up"]
        last = size == sizes[-1]
        rows.append(
            Row(
                f"resumed search, first new trial later than on the empty study ({'large' if last else 'medium'})",
                f"{size:,} vs 0 trials",
                f"{row['start-up'] / base['start-up']:.2f}x ({delay:+.2f} s)",
                "<= +2 s" if last else "-",
                delay <= 2 if last else None,
                load_text(),
            )
        )
    big = measured[sizes[-1]]
    rows.append(
        Row(
            "leaderboard on the large study",
            f"{sizes[-1]:,} vs 0 trials",
            f"{big['leaderboard'] / base['leaderboard']:.2f}x ({big['leaderboard']:.2f} s)",
            "<= 3 s",
            big["leaderboard"] <= 3,
            load_text(),
        )
    )
    return rows


def startup_in_process(sizes: list[int], new: int) -> dict[int, dict[str, float]]:
    """experiments/startup's ``fill`` and ``measure`` (each a study of ``size`` copied trials, then
    a resumed search of ``new`` trials); its command's table, parsed, where they are missing."""
    module = import_path("startup", ROOT / "experiments" / "startup" / "run.py")
    if hasattr(module, "fill") and hasattr(module, "measure"):
        out = {}
        with tempfile.TemporaryDirectory() as tmp:
            for size in sizes:
                directory = Path(tmp) / str(size)
                directory.mkdir()
                module.fill(directory, size)
                out[size] = module.measure(directory, size, new)
        return out
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "startup" / "run.py"),
            "--sizes",
            *map(str, sizes),
            "--new",
            str(new),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    keys = [k.strip() for k in lines[0].strip("|").split("|")][1:]
    out = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[int(cells[0].replace(",", ""))] = {
            k: float(re.match(r"[\d.]+", c).group()) for k, c in zip(keys, cells[1:])
        }
    return out


# ---- table ----------------------------------------------------------------------------------
FIGURES = {"networks": networks, "search": search_overhead, "batching": batching, "study": study_size, "jobs": jobs}


def table(rows: list[Row], note: str) -> str:
    lines = [
        note,
        "",
        "| figure | setting | value | target | pass | load avg (1, 5, 15 min) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = "-" if r.ok is None else ("pass" if r.ok else "FAIL")
        lines.append(f"| {r.figure} | {r.setting} | {r.value} | {r.target} | {verdict} | {r.load} |")
    return "\n".join(lines) + "\n"


def stored_rows() -> list[Row]:
    """The rows of the table in README.md."""
    rows = []
    for line in README.read_text().split(BEGIN, 1)[1].split(END, 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] != "figure":
            ok = {"pass": True, "FAIL": False}.get(cells[4])
            rows.append(Row(cells[0], cells[1], cells[2], cells[3], ok, cells[5]))
    return rows


def write_readme(rows: list[Row], note: str, only: list[str] | None) -> None:
    """The table into README.md; with ``only``, the new rows replace theirs and the others stay."""
    if only:
        new = {r.figure: r for r in rows}
        old = stored_rows()
        rows = [new.pop(r.figure, r) for r in old] + list(new.values())
        note += f" Re-measured here: {', '.join(only)}; the other rows are from the run before."
    readme = README.read_text()
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{table(rows, note)}{END}{tail}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, *args = sys.argv[2:]
        print(json.dumps({"memory": memory_child, "search": search_child, "calibrate": calibrate_child}[mode](*args)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks that every row is produced")
    parser.add_argument("--no-write", action="store_true", help="print the table only, leave README.md")
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), help="run these groups of rows only")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []

    def note() -> str:
        quick = " (--quick: toy sizes, the values mean nothing)" if args.quick else ""
        return (
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores "
            f"in {(time.perf_counter() - start) / 60:.1f} min{quick}."
        )

    for name, fn in FIGURES.items():
        if args.only and name not in args.only:
            continue
        rows += fn(args.quick)
        if not args.no_write and not args.quick:  # what is measured so far, in case a later group fails
            write_readme(rows, note(), args.only)
        print(f"{name}: done ({time.perf_counter() - start:.0f} s, load {load_text()})", file=sys.stderr, flush=True)
    print(table(rows, note()))


if __name__ == "__main__":
    main()
