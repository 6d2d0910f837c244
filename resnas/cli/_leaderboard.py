"""``resnas leaderboard``: a table that fits the terminal, with units; CSV or JSON for machines."""

from __future__ import annotations

import math
import sys
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from resnas.cli._app import app, console
from resnas.cli._options import StorageOpt, StoredStudyOpt

DEFAULT_WIDTH = 100  # the compact table fits this many columns (or a narrower terminal)
LABELS = {
    "pareto_rank": "front",
    "val_accuracy": "val acc",
    "train_flops": "train FLOP",
    "train_seconds": "train time",
    "peak_memory_mb": "memory",
    "latency_ms": "latency",
    "grad_ratio": "grad ratio",
    "connections": "conns",
}
TEXT_COLUMNS = ("placements", "kinds", "fingerprint", "node")
SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float, unit: str = "", space: str = " ") -> str:
    """``29600 -> '29.6 k'``, ``1.2e9, 'FLOP' -> '1.2 GFLOP'``: three significant digits."""
    if value != value:
        return "-"
    for scale, prefix in SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{space}{prefix}{unit}"
    return f"{value:.3g}{space}{unit}".rstrip()


def cell(column: str, value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column == "params":
        return si(float(value), " params").replace("  ", " ")
    if column == "train_flops":
        return si(float(value), "FLOP")
    if column == "train_seconds":
        return f"{float(value):.3g} s"
    if column == "peak_memory_mb":
        return f"{float(value):.3g} MB"
    if column == "latency_ms":
        return f"{float(value):.3g} ms"
    if column == "grad_ratio":
        return f"{float(value):.2g}x"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


def default_columns(df, names: list[str]) -> list[str]:
    cols = ["rank", "pareto_rank", "trial"]
    if (df["state"] != "COMPLETE").any():
        cols.append("state")
    cols += [*names, "val_accuracy", "params", "train_flops", "grad_ratio", "placements"]
    seen: list[str] = []
    for c in cols:
        if c in df.columns and c not in seen:
            seen.append(c)
    return seen


def table(df, title: str, columns: list[str], width: int | None = None) -> Table:
    """Numbers keep their full width; text columns (placements) are cut with an ellipsis to fit ``width``."""
    rows = []
    for _, row in df.iterrows():
        cells = [cell(c, row[c]) for c in columns]
        if "placements" in columns and isinstance(row.get("baseline"), str) and row["baseline"]:
            i = columns.index("placements")
            cells[i] = f"[{row['baseline']}] {cells[i]}"
        rows.append(cells)
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    fits = [max([len(LABELS.get(col, col)), *(len(r[i]) for r in rows)]) for i, col in enumerate(columns)]
    texts = [i for i, col in enumerate(columns) if col in TEXT_COLUMNS]
    room = None
    if width is not None and texts:  # what the numbers leave, shared by the text columns
        used = sum(f for i, f in enumerate(fits) if i not in texts) + 2 * len(columns) + 1
        room = max(8, (width - used) // len(texts))
    for i, col in enumerate(columns):
        label = LABELS.get(col, col)
        if i in texts:
            t.add_column(label, no_wrap=True, overflow="ellipsis", max_width=room and min(room, fits[i]))
        else:
            justify = "right" if df[col].dtype.kind in "iuf" else "left"
            t.add_column(label, justify=justify, no_wrap=True, min_width=fits[i])
    for cells in rows:
        t.add_row(*(Text(c) for c in cells))  # plain text: "[classic ResNet]" is not rich markup
    return t


def print_leaderboard(
    df,
    title: str,
    names: list[str],
    top: int | None = None,
    columns: list[str] | None = None,
    wide: bool = False,
) -> None:
    """The compact table (fits ``DEFAULT_WIDTH`` columns), or every column with ``wide``; with
    ``top``, the best ``top`` rows and a line saying how many more there are."""
    shown = df.head(top) if top else df
    if wide:
        cols = [c for c in df.columns if c not in ("node",)]
        out = Console(width=1000, file=console.file, highlight=False)
        out.print(table(shown, title, cols))
    else:
        cols = columns or default_columns(df, names)
        width = min(console.width, DEFAULT_WIDTH) if sys.stdout.isatty() else DEFAULT_WIDTH
        out = Console(width=width, file=console.file, highlight=False)
        out.print(table(shown, title, cols, width))
    if len(shown) < len(df):
        out.print(f"… {len(df) - len(shown)} more, see `resnas leaderboard`", highlight=False, markup=False)


def _columns(df, option: str | None) -> list[str] | None:
    if not option:
        return None
    cols = [c.strip() for c in option.split(",") if c.strip()]
    unknown = [c for c in cols if c not in df.columns]
    if unknown:
        raise typer.BadParameter(
            f"unknown column(s) {', '.join(unknown)}; the table has: {', '.join(df.columns)}", param_hint="--columns"
        )
    return cols


@app.command("leaderboard")
def leaderboard_cmd(
    study: StoredStudyOpt = None,
    storage: StorageOpt = None,
    top: Annotated[int | None, typer.Option("--top", "-k", min=1, help="Show the best K.")] = None,
    columns: Annotated[
        str | None, typer.Option("--columns", help="Comma-separated columns to show (see --wide for all).")
    ] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Every column (wider than a terminal).")] = False,
    csv: Annotated[
        str | None, typer.Option("--csv", help="Write the whole table as CSV to FILE ('-': stdout).")
    ] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", help="Write the whole table as JSON records to FILE ('-': stdout).")
    ] = None,
    include_partial: Annotated[
        bool, typer.Option("--include-partial", help="Rank early-stopped trials with the rest.")
    ] = False,
) -> None:
    """The finished trials of a study, ranked (Pareto rank first, for several objectives)."""
    from resnas.cli._search import print_results, quiet_optuna
    from resnas.report import finished_trials, leaderboard
    from resnas.search import load_study

    quiet_optuna()
    st = load_study(study, storage)
    trials = finished_trials(st)  # read once, for the table, the confirmed runs and the summary
    df = leaderboard(st, include_partial, trials)
    cols = _columns(df, columns)
    machine = df[cols] if cols else df
    if csv:
        machine.to_csv(sys.stdout if csv == "-" else csv, index=False)
    if json_out:
        text = machine.to_json(orient="records", indent=1, force_ascii=False)
        if json_out == "-":
            print(text)
        else:
            with open(json_out, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    if "-" in (csv, json_out):
        return
    names = st.metric_names or [f"objective{i}" for i in range(len(st.directions))]
    print_leaderboard(df, f"leaderboard: {st.study_name}", names, top, cols, wide)
    print_results(st, trials, None if include_partial else df)
