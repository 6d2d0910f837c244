"""``resnas report``: the study as one self-contained HTML file."""

from __future__ import annotations

from typing import Annotated

import typer

from resnas.cli._app import app, console
from resnas.cli._options import StorageOpt, StoredStudyOpt


@app.command()
def report(
    study: StoredStudyOpt = None,
    storage: StorageOpt = None,
    output: Annotated[str, typer.Option("--output", "-o", help="The HTML file to write.")] = "report.html",
    top: Annotated[int, typer.Option("--top", min=1, help="Rows of the report's leaderboard.")] = 20,
    upload: Annotated[
        bool, typer.Option("--upload", help="Also store it in the study's artifact store (optuna-dashboard shows it).")
    ] = False,
) -> None:
    """Write the study report: leaderboard, Pareto fronts, placement map, gradient flow, curves."""
    from resnas.cli._search import quiet_optuna
    from resnas.htmlreport import upload_report, write_report
    from resnas.search import load_study

    quiet_optuna()
    if not output.lower().endswith((".html", ".htm")):
        raise typer.BadParameter(f"{output}: give an .html file", param_hint="--output")
    st = load_study(study, storage)
    path = write_report(st, output, top)
    console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB, opens offline)", highlight=False)
    if upload:
        console.print(f"stored as artifact {upload_report(st, path)} of study {st.study_name}", highlight=False)
