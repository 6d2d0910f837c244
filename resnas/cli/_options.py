"""Options shared by several commands, defined once."""

from __future__ import annotations

from typing import Annotated

import typer

StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", envvar="RESNAS_STORAGE", help="Optuna storage URL [default: sqlite:///resnas.db]."),
]
StudyOpt = Annotated[str | None, typer.Option("--study", help="Study name [default: the spec's name].")]
StoredStudyOpt = Annotated[
    str | None, typer.Option("--study", help="Study name [default: the only study in the storage].")
]
AllowCodeOpt = Annotated[
    bool,
    typer.Option(
        "--allow-code",
        help="Allow a 'package.module:function' dataset: the spec (perhaps from a shared database) names code to run.",
    ),
]


def allow_code_if(flag: bool) -> None:
    """The flag reaches worker processes through the environment, as RESNAS_ALLOW_CODE does."""
    if flag:
        import os

        from resnas.data import ALLOW_CODE

        os.environ[ALLOW_CODE] = "1"
