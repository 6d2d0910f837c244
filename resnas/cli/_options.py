"""Options shared by several commands, defined once."""

from __future__ import annotations

from typing import Annotated

import typer

StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", envvar="RESNAS_STORAGE", help="Optuna storage URL [default: sqlite:///resnas.db]."),
]
StudyOpt = Annotated[str | None, typer.Option("--study", help="Study name [default: the spec's name].")]
