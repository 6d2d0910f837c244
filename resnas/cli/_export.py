"""``resnas export``: the winner as plain PyTorch."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from resnas.cli._app import app, console
from resnas.cli._options import AllowCodeOpt, StorageOpt, StoredStudyOpt, allow_code_if


@app.command()
def export(
    study: StoredStudyOpt = None,
    storage: StorageOpt = None,
    trial: Annotated[int | None, typer.Option("--trial", min=0, help="Export this trial number.")] = None,
    rank: Annotated[
        int | None, typer.Option("--rank", min=1, help="Export the K-th of the leaderboard (1: best).")
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="The .py file to write.")] = None,
    class_name: Annotated[str | None, typer.Option("--class-name", help="Name of the network class.")] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights", help="Also write weights (.safetensors): kept by the search, or retrained under the spec."
        ),
    ] = None,
    pt2: Annotated[str | None, typer.Option("--pt2", help="Also write a torch.export program (.pt2).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Where to retrain and test [default: auto].")] = None,
    allow_code: AllowCodeOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing files; export a trial that did not finish.")
    ] = False,
) -> None:
    """Write a trial's architecture (default: the best) as a standalone PyTorch module."""
    from resnas.cli._search import quiet_optuna
    from resnas.export._api import export_trial

    if trial is not None and rank is not None:
        raise typer.BadParameter("give --trial or --rank, not both", param_hint="--rank")
    quiet_optuna()
    allow_code_if(allow_code)
    result = export_trial(
        study,
        storage,
        trial=trial,
        rank=rank,
        out=output,
        class_name=class_name,
        weights=weights,
        pt2=pt2,
        device=device,
        force=force,
    )
    console.print(
        f"wrote {result.path}: trial {result.trial} ({result.reason}), fingerprint {result.fingerprint}",
        highlight=False,
    )
    if result.weights is not None:
        console.print(
            f"wrote {result.weights} ({result.weights_source}); test accuracy {result.test_accuracy:.4f}",
            highlight=False,
        )
    if result.retrained is not None:
        r = result.retrained
        again = ", ".join(f"{k} {v!r}" for k, v in r["metrics"].items())
        if r["recorded"] and all(r["metrics"].get(k) == v for k, v in r["recorded"].items()):
            note = "as recorded"
        else:
            note = "recorded: " + (", ".join(f"{k} {v!r}" for k, v in r["recorded"].items()) or "none")
        console.print(
            f"retrained with seed {r['seed']} and {r['torch_threads']} torch threads: {again} ({note})",
            highlight=False,
        )
    for extra in result.extra:
        console.print(f"wrote {extra}", highlight=False)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
