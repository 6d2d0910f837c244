"""Export a trial of a study: pick it, write its module, and (on request) its weights."""

from __future__ import annotations

import ast
import builtins
import keyword
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch

import resnas
from resnas._redact import redact
from resnas.arch import Architecture
from resnas.data import load_data, require_code_allowed
from resnas.errors import StudyError
from resnas.export._source import class_name_for, export_source, training_header
from resnas.nn import build
from resnas.report import confirmed, leaderboard
from resnas.search._storage import DEFAULT_STORAGE, storage_url
from resnas.search._study import ARTIFACT_DIR, SPEC_HASH, load_study, stored_space
from resnas.train import evaluate, resolve_device, train

WEIGHTS_ARTIFACT = "weights_artifact"  # trial user attr: id in the study's artifact store


@dataclass
class ExportResult:
    path: Path
    trial: int
    reason: str
    fingerprint: str
    weights: Path | None = None
    test_accuracy: float | None = None
    weights_source: str | None = None  # "artifact" or "retrained"
    retrained: dict | None = None  # a retrained trial's validation metrics, threads and seed, beside the recorded
    extra: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said to the user (the CLI prints them on stderr)


def export_module(
    arch: Architecture, path: str | Path, class_name: str = "Net", header: list[tuple[str, str]] | None = None
) -> Path:
    """Write ``arch`` as a standalone Python module (imports only torch)."""
    path = Path(path)
    path.write_text(export_source(arch, class_name, header or []))
    return path


def pick_trial(
    study: optuna.Study, trial: int | None, rank: int | None, force: bool = False
) -> tuple[optuna.trial.FrozenTrial, str]:
    """The trial to export and why: ``--trial N``, ``--rank K``, or the leaderboard's first.

    A trial that did not finish (FAIL, RUNNING, WAITING) is exported only with ``force``.
    """
    trials = study.get_trials(deepcopy=False)
    if trial is not None:
        if not 0 <= trial < len(trials):
            raise StudyError(f"--trial: study {study.study_name!r} has trials 0 to {len(trials) - 1}, not {trial}")
        chosen = trials[trial]
        if "architecture" not in chosen.user_attrs:
            raise StudyError(f"--trial: trial {trial} has no recorded architecture (state {chosen.state.name})")
        state = chosen.state
        if not state.is_finished() or state == optuna.trial.TrialState.FAIL:
            reason = chosen.user_attrs.get("fail_reason")
            if not force:
                raise StudyError(
                    f"--trial: trial {trial} is {state.name}"
                    + (f" ({reason})" if reason else "")
                    + "; export it anyway with --force"
                )
        return chosen, f"asked for (--trial {trial}, state {chosen.state.name})"
    if rank is not None and rank < 1:
        raise StudyError(f"--rank: ranks start at 1 (the best), not {rank}")
    if rank is None and len(study.directions) == 1:
        # Winners confirmed with more seeds (--confirm): the best mean, not one seed's luck.
        best = confirmed(study)
        if not best.empty:
            row = best.iloc[0]
            name = (study.metric_names or ["objective"])[0]
            why = f"best confirmed mean {name} {row['mean ± std']} over {int(row['seeds'])} seeds"
            return trials[int(row["trial"])], why
    board = leaderboard(study)
    if board.empty:
        raise StudyError(f"study {study.study_name!r} has no finished trial to export")
    k = 1 if rank is None else rank
    if not 1 <= k <= len(board):
        raise StudyError(f"--rank: study {study.study_name!r} ranks {len(board)} finished trials, not {k}")
    number = int(board.loc[k - 1, "trial"])
    names = study.metric_names or ["objective"]
    if len(names) > 1:
        why = f"rank {k} of {len(board)}: Pareto rank {int(board.loc[k - 1, 'pareto_rank'])}, then {names[0]}"
    else:
        why = f"rank {k} of {len(board)} by {names[0]}"
    return trials[number], why


def _artifact_weights(study: optuna.Study, chosen: optuna.trial.FrozenTrial, dest: Path) -> bool:
    artifact = chosen.user_attrs.get(WEIGHTS_ARTIFACT)
    root = study.user_attrs.get(ARTIFACT_DIR)
    if not artifact or not root or not Path(root).is_dir():
        return False
    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    dest.unlink(missing_ok=True)
    download_artifact(artifact_store=FileSystemArtifactStore(root), artifact_id=artifact, file_path=str(dest))
    return True


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's intra-op thread count set to ``threads`` for the block (None: left as it is)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def retrain(chosen: optuna.trial.FrozenTrial, arch: Architecture, data, dev: torch.device, seed: int):
    """Train ``arch`` again as trial ``chosen`` was trained: its settings, seed and recorded torch
    thread count (the thread count changes floating-point summation order; on the CPU the same
    count gives the same weights and metrics bit for bit)."""
    threads = chosen.user_attrs.get("torch_threads") if dev.type == "cpu" else None
    torch.manual_seed(seed)
    model = build(arch)
    with torch_threads(threads):
        result = train(model, data, chosen.user_attrs["train"], seed=seed, device=dev)
    recorded = chosen.user_attrs.get("metrics", {})
    return model, {
        "seed": seed,
        "torch_threads": threads or torch.get_num_threads(),
        "metrics": {k: result.metrics[k] for k in ("val_accuracy", "val_loss", "train_loss")},
        "recorded": {k: recorded[k] for k in ("val_accuracy", "val_loss", "train_loss") if k in recorded},
    }


def _weights(study, chosen, arch: Architecture, dest: Path, device: str | None) -> tuple[float, str, dict | None]:
    """Weights for ``arch`` in ``dest``; returns (test accuracy, where the weights came from, the retrain's record)."""
    from safetensors.torch import load_model, save_model

    space = stored_space(study)
    data = load_data(space.spec.data, space.spec.search.seed)
    dev = resolve_device(device)
    model = build(arch)
    record = None
    if _artifact_weights(study, chosen, dest):
        load_model(model, str(dest))
        source = "artifact"
        model.to(dev)
    else:
        seed = int(chosen.user_attrs.get("seed", space.spec.search.seed + chosen.number))
        model, record = retrain(chosen, arch, data, dev, seed)
        model.to("cpu")
        save_model(model, str(dest))
        model.to(dev)
        source = "retrained"
    accuracy, _ = evaluate(model, data.x_test.to(dev), data.y_test.to(dev))
    return accuracy, source, record


def check_class_name(arch: Architecture, name: str) -> None:
    """A class name the exported module can define without hiding a name it uses."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise StudyError(f"--class-name: {name!r} is not a Python class name")
    probe = ast.parse(export_source(arch, "ResnasProbeNet"))
    taken = set(dir(builtins))
    for node in probe.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            taken |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ClassDef | ast.FunctionDef):
            taken.add(node.name)
        elif isinstance(node, ast.Assign):
            taken |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    taken.discard("ResnasProbeNet")
    if name in taken:
        raise StudyError(f"--class-name: {name!r} is a name the exported module already uses; choose another")


def check_output(option: str, path: Path, force: bool) -> None:
    """Before any work: the file's directory exists, and an existing file is replaced only with --force."""
    if path.is_dir():
        raise StudyError(f"{option}: {path} is a directory; name a file")
    if not path.parent.is_dir():
        raise StudyError(f"{option}: directory {path.parent} does not exist")
    if path.exists() and not force:
        raise StudyError(f"{option}: {path} exists; replace it with --force")


def export_trial(
    study: str | None = None,
    storage: str | None = None,
    *,
    trial: int | None = None,
    rank: int | None = None,
    out: str | Path | None = None,
    class_name: str | None = None,
    weights: str | Path | None = None,
    pt2: str | Path | None = None,
    device: str | None = None,
    force: bool = False,
) -> ExportResult:
    """Export a trial (default: the best) of a study as ``.py``, with optional weights.

    Every output path is checked before anything is trained or written; existing files
    are replaced only with ``force``, which also allows a trial that did not finish.
    """
    st = load_study(study, storage)
    chosen, why = pick_trial(st, trial, rank, force)
    arch = Architecture.from_dict(chosen.user_attrs["architecture"])
    class_name = class_name or class_name_for(st.study_name)
    check_class_name(arch, class_name)
    out = Path(out or f"{st.study_name}_trial{chosen.number}.py")
    for option, path in (("--output", out), ("--weights", weights), ("--pt2", pt2)):
        if path is not None:
            check_output(option, Path(path), force)
    if weights is not None:
        if "train" not in chosen.user_attrs:
            raise StudyError(f"--weights: trial {chosen.number} recorded no training settings to retrain with")
        require_code_allowed(stored_space(st).spec.data)
    names = st.metric_names or [f"objective{i}" for i in range(len(st.directions))]
    header = [
        ("study", st.study_name),
        ("trial", f"{chosen.number} ({why})"),
        ("fingerprint", arch.fingerprint),
        ("spec hash", st.user_attrs.get(SPEC_HASH, "-")),
    ]
    if chosen.values is not None:
        header.append(("objectives", ", ".join(f"{n}={v:.6g}" for n, v in zip(names, chosen.values))))
    result = ExportResult(out, chosen.number, why, arch.fingerprint)
    if weights is not None:
        result.weights = Path(weights)
        result.test_accuracy, result.weights_source, result.retrained = _weights(
            st, chosen, arch, result.weights, device
        )
        header.append(
            ("test accuracy", f"{result.test_accuracy!r} ({result.weights_source} weights: {result.weights.name})")
        )
    header += training_header(chosen.user_attrs, stored_space(st).spec.data)
    header.append(("resnas version", resnas.__version__))
    command = ["resnas", "export", "--study", st.study_name, "--trial", str(chosen.number), "-o", out.name]
    if storage_url(storage) != DEFAULT_STORAGE:
        command[2:2] = ["--storage", redact(storage_url(storage))]
    if weights is not None:
        command += ["--weights", Path(weights).name]
    header.append(("regenerate", shlex.join(command)))
    export_module(arch, out, class_name, header)
    if pt2 is not None:
        _pt2(st, chosen, arch, Path(pt2), result)
    return result


def _pt2(study: optuna.Study, chosen: optuna.trial.FrozenTrial, arch: Architecture, pt2: Path, result) -> None:
    """The program with the written weights, else the weights the search kept; with neither, an
    untrained program, said in a warning."""
    if result.weights is not None:
        result.extra.append(export_program(arch, pt2, result.weights))
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        kept = Path(tmp) / "kept.safetensors"
        if _artifact_weights(study, chosen, kept):
            result.extra.append(export_program(arch, pt2, kept))
            result.warnings.append(f"{pt2}: holds the weights the search kept for trial {chosen.number}")
            return
    result.extra.append(export_program(arch, pt2, None))
    result.warnings.append(
        f"--pt2 {pt2}: trial {chosen.number} has no kept weights, so the program holds untrained (random) "
        "weights; add --weights W.safetensors to retrain it (or search with --keep-weights)"
    )


def export_program(arch: Architecture, path: str | Path, weights: Path | None = None) -> Path:
    """``torch.export`` the network (eval mode, batch dimension dynamic) to a ``.pt2`` file."""
    model = build(arch).eval()
    if weights is not None:
        from safetensors.torch import load_model

        load_model(model, str(weights))
    example = (torch.randn(2, *arch.input_shape),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return Path(path)
