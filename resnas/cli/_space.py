"""``resnas validate``, ``show`` and ``schema``: the search-space language at the terminal."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from resnas.arch import Architecture
from resnas.cli._app import app, console
from resnas.cli._options import AllowCodeOpt, allow_code_if
from resnas.errors import SpecError
from resnas.space import Choice, FloatRange, IntRange, SearchSpace, json_schema, load_space, sample, space_size
from resnas.space._model import MAX_SEED
from resnas.space._yaml import format_path, line_of

SpecArg = Annotated[str, typer.Argument(help="A search-space spec (YAML).", show_default=False)]


def describe(value: object) -> str:
    if isinstance(value, IntRange):
        return (
            f"int [{value.low}, {value.high}]"
            + (f" step {value.step}" if value.step > 1 else "")
            + (" log" if value.log else "")
        )
    if isinstance(value, FloatRange):
        return f"float [{value.low:g}, {value.high:g}]" + (" log" if value.log else "")
    if isinstance(value, Choice):
        return "choice " + ", ".join(map(str, value.options))
    return str(value)


def count_params(arch: Architecture) -> int:
    """Counted on the meta device: shapes only, no memory for the weights themselves."""
    import torch

    from resnas.costs import count_params as params_of
    from resnas.nn import build

    with torch.device("meta"):
        return params_of(build(arch))


def architecture_table(arch: Architecture) -> Table:
    table = Table(title=f"architecture {arch.fingerprint}", title_justify="left")
    for col in ("block", "stage", "type", "in", "out", "stride", "merges (src -> dst, kind)"):
        table.add_column(col, justify="right" if col in ("block", "stage", "in", "out", "stride") else "left")
    for k, b in enumerate(arch.blocks):
        merges = ", ".join(
            f"h{c.src}->h{c.dst} {c.kind}"
            + (f"({c.shortcut})" if c.shortcut else "")
            + (" concat" if c.merge == "concat" else "")
            for c in arch.incoming(k)
        )
        table.add_row(
            f"b{k}", str(b.stage), b.type, str(b.in_channels), str(b.out_channels), str(b.stride), merges or "-"
        )
    return table


def architecture_summary(arch: Architecture) -> str:
    kinds = ", ".join(f"{k} x{sum(c.kind == k for c in arch.connections)}" for k in arch.kinds_used()) or "none"
    spans = sorted({c.span for c in arch.connections})
    return (
        f"{arch.kind}, {arch.num_blocks} blocks, {len(arch.connections)} connections ({kinds}; spans "
        f"{spans or '-'}), order {arch.order}, "
        + (f"branch scale {arch.branch_scale}, " if arch.branch_scale != "none" else "")
        + (f"drop path {arch.drop_path:.3g}, " if arch.drop_path else "")
        + f"{count_params(arch):,} parameters"
    )


def check_code_data(space: SearchSpace) -> str:
    """A code dataset, called once and checked against the spec; what was (or was not) checked."""
    from resnas.data import ALLOW_CODE, DataError, check_code_dataset, code_allowed, is_code_dataset

    data = space.spec.data
    if not is_code_dataset(data.dataset):
        return ""
    if not code_allowed():
        return (
            f"data: {data.dataset} not imported, so not checked; run validate with --allow-code "
            f"(or {ALLOW_CODE}=1) to call it once and check its shapes, dtypes and labels"
        )
    try:
        return "data checked: " + check_code_dataset(data)
    except DataError as exc:
        path = ("data", "dataset")
        raise SpecError(
            str(exc).removeprefix("data.dataset: "), format_path(path), line_of(space.lines, path), space.source
        ) from None


@app.command()
def validate(spec: SpecArg, allow_code: AllowCodeOpt = False) -> None:
    """Check a spec; print its searchable parameters, space size and one sampled architecture.

    With --allow-code, a 'module:function' dataset is called once and what it returns is checked."""
    allow_code_if(allow_code)
    space = load_space(spec)
    checked = check_code_data(space)
    shape = "x".join(map(str, space.input_shape))
    console.print(f"[bold]{space.name}[/bold]  spec hash {space.hash}  ok", highlight=False)
    console.print(f"data: {space.spec.data.dataset}, input {shape}, {space.num_classes} classes", highlight=False)
    if checked:
        console.print(checked, highlight=False)
    params = space.searchable()
    table = Table(title="searchable parameters", title_justify="left")
    table.add_column("path")
    table.add_column("values")
    for path, value in params:
        table.add_row(path, describe(value))
    res = space.spec.residual
    table.add_row(
        "residual.s{S}b{I}-s{S}b{J}",
        f"one per placement (blocks I..J of stage S): none or {', '.join(res.kinds)}; "
        f"span {describe(res.span)}; scope {res.scope}; count {describe(res.count)}",
    )
    console.print(table)
    console.print(f"space size: {space_size(space)} architectures", highlight=False)
    candidate = sample(space, space.spec.search.seed)
    console.print(
        f"sampled (seed {space.spec.search.seed}): {architecture_summary(candidate.architecture)}", highlight=False
    )


@app.command()
def show(
    spec: SpecArg,
    seed: Annotated[
        int, typer.Option("--seed", "-s", min=0, max=MAX_SEED, help="Seed of the sampled architecture.")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the architecture as JSON.")] = False,
) -> None:
    """Sample one architecture and show its blocks and connections."""
    space = load_space(spec)
    candidate = sample(space, seed)
    arch = candidate.architecture
    if as_json:
        print(arch.to_json(indent=2))
        return
    console.print(architecture_table(arch))
    console.print(architecture_summary(arch), highlight=False)
    console.print(
        "train: " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in candidate.train.items()),
        highlight=False,
    )


@app.command()
def schema(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the reference of every key (docs/spec.md) instead.")
    ] = False,
) -> None:
    """Print the JSON Schema of the spec language (for editors and CI checks), or its reference."""
    if markdown:
        from resnas.space._docs import reference_markdown

        print(reference_markdown(), end="")
        return
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
