"""The ``resnas`` command line: a thin layer over the library."""

from resnas.cli import _diagnose, _export, _leaderboard, _report, _search, _space  # noqa: F401  (registers commands)
from resnas.cli._app import app, main, run

__all__ = ["app", "main", "run"]
