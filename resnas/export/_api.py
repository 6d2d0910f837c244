"""Export a trial of a study: pick it, write its module, and (on request) its weights."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch

import resnas
from resnas._redact import redact
from resnas.arch import Architecture
from resnas.data import load_data
from resnas.errors import StudyError
from resnas.export._source import class_name_for, export_source
from resnas.nn import build
from resnas.report import leaderboard
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
    extra: list[Path] = field(default_factory=list)


def export_module(
    arch: Architecture, path: str | Path, class_name: str = "Net", header: list[tuple[str, str]] | None = None
) -> Path:
    """Write ``arch`` as a standalone Python module (imports only torch)."""
    path = Path(path)
    path.write_text(export_source(arch, class_name, header or []))
    return path


def pick_trial(study: optuna.Study, trial: int | None, rank: int | None) -> tuple[optuna.trial.FrozenTrial, str]:
    """The trial to export and why: ``--trial N``, ``--rank K``, or the leaderboard's first."""
    trials = study.get_trials(deepcopy=False)
    if trial is not None:
        if not 0 <= trial < len(trials):
            raise StudyError(f"--trial: study {study.study_name!r} has trials 0 to {len(trials) - 1}, not {trial}")
        chosen = trials[trial]
        if "architecture" not in chosen.user_attrs:
            raise StudyError(f"--trial: trial {trial} has no recorded architecture (state {chosen.state.name})")
        return chosen, f"asked for (--trial {trial}, state {chosen.state.name})"
    board = leaderboard(study)
    if board.empty:
        raise StudyError(f"study {study.study_name!r} has no finished trial to export")
    k = rank or 1
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


def _weights(study, chosen, arch: Architecture, dest: Path, device: str | None) -> tuple[float, str]:
    """Weights for ``arch`` in ``dest``; returns (test accuracy, where the weights came from)."""
    from safetensors.torch import load_model, save_model

    space = stored_space(study)
    data = load_data(space.spec.data, space.spec.search.seed)
    dev = resolve_device(device)
    model = build(arch)
    if _artifact_weights(study, chosen, dest):
        load_model(model, str(dest))
        source = "artifact"
        model.to(dev)
    else:
        seed = int(chosen.user_attrs.get("seed", space.spec.search.seed + chosen.number))
        torch.manual_seed(seed)
        model = build(arch)
        train(model, data, chosen.user_attrs["train"], seed=seed, device=dev)
        model.to("cpu")
        save_model(model, str(dest))
        model.to(dev)
        source = "retrained"
    accuracy, _ = evaluate(model, data.x_test.to(dev), data.y_test.to(dev))
    return accuracy, source


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
) -> ExportResult:
    """Export a trial (default: the best) of a study as ``.py``, with optional weights."""
    st = load_study(study, storage)
    chosen, why = pick_trial(st, trial, rank)
    arch = Architecture.from_dict(chosen.user_attrs["architecture"])
    class_name = class_name or class_name_for(st.study_name)
    out = Path(out or f"{st.study_name}_trial{chosen.number}.py")
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
        result.test_accuracy, result.weights_source = _weights(st, chosen, arch, result.weights, device)
        header.append(
            ("test accuracy", f"{result.test_accuracy!r} ({result.weights_source} weights: {result.weights.name})")
        )
    header.append(("resnas version", resnas.__version__))
    command = ["resnas", "export", "--study", st.study_name, "--trial", str(chosen.number), "-o", out.name]
    if storage_url(storage) != DEFAULT_STORAGE:
        command[2:2] = ["--storage", redact(storage_url(storage))]
    if weights is not None:
        command += ["--weights", Path(weights).name]
    header.append(("regenerate", shlex.join(command)))
    export_module(arch, out, class_name, header)
    if pt2 is not None:
        result.extra.append(export_program(arch, pt2, result.weights))
    return result


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
