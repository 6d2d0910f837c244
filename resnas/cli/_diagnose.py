"""``resnas diagnose``: gradient flow of a spec's sampled network or of a study's trial."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from resnas.cli._app import app, console
from resnas.cli._options import StorageOpt, StoredStudyOpt

if TYPE_CHECKING:  # torch loads with the command, not with every command of the CLI
    from resnas.diagnose import GradientProfile


def verdict(ratio: float) -> str:
    if ratio >= 1000:
        return "vanished"
    if ratio >= 10:
        return "shrinking"
    if ratio <= 0.1:
        return "exploding towards the input"
    return "flows"


def profile_table(profiles: dict[str, GradientProfile], stages: list[int]) -> Table:
    table = Table(title="gradient flow per block (one batch)", title_justify="left")
    table.add_column("block", justify="right")
    table.add_column("stage", justify="right")
    for name in profiles:
        table.add_column(f"|dL/dW| {name}", justify="right")
        table.add_column(f"|dL/dh| {name}", justify="right")
    n = len(stages)
    for k in range(n):
        cells = [f"b{k}", str(stages[k])]
        for p in profiles.values():
            cells += [f"{p.weight[k]:.3g}", f"{p.input[k]:.3g}"]
        table.add_row(*cells)
    return table


def save_plot(profiles: dict[str, GradientProfile], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, p in profiles.items():
        blocks = range(len(p.weight))
        ax.semilogy(blocks, p.weight, marker="o", ms=3, label=f"|dL/dW| {name}")
        ax.semilogy(blocks, p.input, ls="--", label=f"|dL/dh| {name}")
    ax.set_xlabel("block")
    ax.set_ylabel("gradient norm")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@app.command()
def diagnose(
    spec: Annotated[
        str | None, typer.Argument(help="A spec; its sampled network is diagnosed.", show_default=False)
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sample and weight seed (with SPEC).")] = 0,
    study: StoredStudyOpt = None,
    storage: StorageOpt = None,
    trial: Annotated[int | None, typer.Option("--trial", help="Diagnose this trial of --study.")] = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Also save the profile as FILE.png or FILE.svg.")] = None,
) -> None:
    """Gradient flow at initialisation (and after training, for a trial whose weights were kept)."""
    from resnas.diagnose import diagnosis_batch, gradient_profile, initial_model

    if plot is not None and Path(plot).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise typer.BadParameter(f"{plot}: give a .png, .svg or .pdf file", param_hint="--plot")
    if spec is not None:
        from resnas.space import load_space, sample

        space = load_space(spec)
        arch = sample(space, seed).architecture
        label = f"{spec} (seed {seed})"
    elif trial is not None:
        arch, space, seed, trained = _trial(study, storage, trial)
        label = f"study {study or ''} trial {trial}".replace("  ", " ")
    else:
        raise typer.BadParameter("give a spec file, or --study NAME --trial N", param_hint="SPEC")
    x, y = diagnosis_batch(space)
    profiles = {"init": gradient_profile(initial_model(arch, seed), x, y)}
    if spec is None and trained is not None:
        profiles["trained"] = gradient_profile(trained, x, y)
    console.print(profile_table(profiles, [b.stage for b in arch.blocks]))
    for name, p in profiles.items():
        console.print(
            f"{name}: gradient ratio last/first block {p.ratio:.3g}x ({verdict(p.ratio)}); "
            f"{arch.num_blocks} blocks, {len(arch.connections)} connections, loss {p.loss:.4g}",
            highlight=False,
        )
    if plot:
        save_plot(profiles, plot, f"gradient flow: {label}")
        console.print(f"wrote {plot}", highlight=False)


def _trial(study_name: str | None, storage: str | None, number: int):
    """(architecture, space, seed, trained model or None) of a stored trial."""
    import tempfile

    from resnas.arch import Architecture
    from resnas.errors import StudyError
    from resnas.export._api import _artifact_weights
    from resnas.nn import build
    from resnas.search import load_study, stored_space

    st = load_study(study_name, storage)
    trials = st.get_trials(deepcopy=False)
    if not 0 <= number < len(trials) or "architecture" not in trials[number].user_attrs:
        raise StudyError(f"--trial: study {st.study_name!r} has no trial {number} with an architecture")
    t = trials[number]
    space = stored_space(st)
    arch = Architecture.from_dict(t.user_attrs["architecture"])
    seed = int(t.user_attrs.get("seed", space.spec.search.seed + number))
    trained = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        if _artifact_weights(st, t, path):
            from safetensors.torch import load_model

            trained = build(arch)
            load_model(trained, str(path))
    return arch, space, seed, trained
