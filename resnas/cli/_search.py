"""``resnas search`` and ``studies``."""

from __future__ import annotations

import logging
import warnings
from typing import Annotated

import typer
from rich.table import Table

from resnas.cli._app import app, console
from resnas.cli._leaderboard import print_leaderboard
from resnas.cli._options import AllowCodeOpt, StorageOpt, StudyOpt, allow_code_if


def quiet_optuna() -> None:
    import optuna

    # resnas prints its own line per trial (with the failure reason); Optuna would add tracebacks.
    optuna.logging.set_verbosity(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def print_frame(df, title: str, top: int | None = None, drop: tuple[str, ...] = ()) -> None:
    table = Table(title=title, title_justify="left")
    shown = (df.head(top) if top else df).drop(columns=[c for c in drop if c in df.columns])
    for col in shown.columns:
        table.add_column(str(col), justify="right" if shown[col].dtype.kind in "iuf" else "left")
    for _, row in shown.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("-" if v != v else (f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"))
            else:
                cells.append("-" if v is None else str(v))
        table.add_row(*cells)
    console.print(table)


@app.command()
def search(
    spec: Annotated[
        str | None, typer.Argument(help="Spec file; omit to resume --study from the storage.", show_default=False)
    ] = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    trials: Annotated[
        int | None, typer.Option("--trials", "-n", min=1, help="Finished trials wanted in the study, in total.")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes on this machine.")] = 1,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="Torch threads per worker, recorded on each trial (torch_threads) "
            "[default: the cores divided among --jobs workers; one process: torch's default].",
        ),
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="optuna or ray.")] = "optuna",
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 [default: auto].")] = None,
    trial_timeout: Annotated[
        float | None, typer.Option("--trial-timeout", min=0.001, help="Seconds one trial may train.")
    ] = None,
    gpus_per_trial: Annotated[
        float, typer.Option("--gpus-per-trial", min=0.0, max=8.0, help="0.5 packs two trials on a GPU.")
    ] = 1.0,
    cpus_per_trial: Annotated[float, typer.Option("--cpus-per-trial", min=0.1, help="ray: CPUs a trial needs.")] = 1.0,
    max_concurrent: Annotated[int | None, typer.Option("--max-concurrent", min=1, help="ray: trials at once.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="ray: 'auto' or ray://HOST:PORT.")] = None,
    max_failures: Annotated[int, typer.Option("--max-failures", min=0, help="ray: retries of a failing trial.")] = 2,
    keep_weights: Annotated[
        bool,
        typer.Option(
            "--keep-weights",
            help="Keep every trained trial's weights in the study's artifact store (resnas export uses them).",
        ),
    ] = False,
    artifacts: Annotated[
        str | None,
        typer.Option("--artifacts", help="Artifact directory [default: resnas-artifacts beside the database]."),
    ] = None,
    log: Annotated[
        list[str] | None,
        typer.Option(
            "--log",
            metavar="KIND:DIR",
            help="Log each trial as a run (params, per-epoch metrics, final costs): mlflow:DIR (or a tracking URI) "
            "tensorboard:DIR or wandb:DIR (offline); repeatable. Needs pip install 'resnas[tracking]'.",
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Rows of the final leaderboard.")] = 10,
    confirm: Annotated[
        int | None,
        typer.Option(
            "--confirm",
            min=0,
            help="After the search, retrain the best K with --seeds more seeds each and rank them by the mean "
            "[default: search.confirm of the spec].",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="More seeds per confirmed trial.")] = 2,
    allow_code: AllowCodeOpt = False,
    strategy: Annotated[
        str | None,
        typer.Option("--strategy", help="sample (a trial per architecture) or oneshot [default: the spec's]."),
    ] = None,
) -> None:
    """Search a spec (or resume a stored study) until the study has --trials finished trials."""
    if jobs > 1 and backend == "optuna":
        from resnas._workers import start_worker_server

        start_worker_server()  # its imports (torch, resnas) run while this process does its own
    quiet_optuna()
    allow_code_if(allow_code)
    from resnas.report import finished_trials, leaderboard
    from resnas.search import search as run_search
    from resnas.space import load_space

    if backend == "ray" and (keep_weights or artifacts is not None):
        raise typer.BadParameter(
            "the ray backend does not keep weights; use --backend optuna", param_hint="--keep-weights"
        )
    if log:
        from resnas.tracking import parse_targets

        parse_targets(log)  # before anything is stored: a missing package or a bad target is one line
    space = load_space(spec) if spec else None
    if space is None and study is None:
        raise typer.BadParameter("give a spec file, or --study NAME to resume a stored study", param_hint="SPEC")
    if space is not None:
        check_data_in_time(space)  # a broken data function: one line (spec path and line), before any trial is stored
    result = run_search(
        space,
        storage=storage,
        study=study,
        trials=trials,
        backend=backend,
        jobs=jobs,
        threads=threads,
        log=tuple(log or ()),
        device=device,
        trial_timeout=trial_timeout,
        gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial,
        max_concurrent=max_concurrent,
        address=address,
        max_failures=max_failures,
        confirm=confirm,
        seeds=seeds,
        keep_weights=keep_weights,
        artifacts=artifacts,
        strategy=strategy,
    )
    names = result.metric_names or [f"objective{i}" for i in range(len(result.directions))]
    done = finished_trials(result)  # read once
    board = leaderboard(result, trials=done)
    print_leaderboard(board, f"leaderboard: {result.study_name}", names, top)
    print_results(result, done, board)


def check_data_in_time(space, seconds: float | None = None) -> None:
    """Call a code dataset once before the search (``check_code_data``), in a thread given up on
    after ``seconds`` (``RESNAS_DATA_CHECK_SECONDS``, default 30): a data function that hangs is
    then left to the trials, whose thread and ``--trial-timeout`` bound it, instead of holding
    the search before it starts."""
    import os
    import threading

    from resnas.cli._space import check_code_data

    if seconds is None:
        seconds = float(os.environ.get("RESNAS_DATA_CHECK_SECONDS", "30"))
    box: dict = {}

    def run() -> None:
        try:
            check_code_data(space)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="resnas-data-check", daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        console.print(
            f"data: {space.spec.data.dataset} has not returned after {seconds:g} s; searching without the check",
            highlight=False,
        )
    elif "error" in box:
        raise box["error"]


def print_results(study, trials=None, board=None) -> None:
    """The confirmed trials (mean ± std over seeds) and the summary line against the baselines
    (``trials``, ``board``: read and ranked already)."""
    from resnas.report import confirmed, summary

    sure = confirmed(study, trials)
    if not sure.empty:
        print_frame(sure, f"confirmed: {study.study_name} (ranked by the mean over seeds)", drop=("std",))
    console.print(summary(study, trials, board, sure), highlight=False)


@app.command()
def studies(storage: StorageOpt = None) -> None:
    """List the studies in a storage with their progress."""
    quiet_optuna()
    from resnas.report import studies as list_studies

    df = list_studies(storage)
    if df.empty:
        console.print("no studies", highlight=False)
        return
    print_frame(df, "studies")
