"""The exported module's header says how its weights were trained and what input they expect."""

from __future__ import annotations

import ast

import optuna
import pytest
from helpers import TINY

from resnas import load_space
from resnas.export._api import export_trial
from resnas.export._source import training_header
from resnas.search import search
from resnas.space._model import DataSpec


def header_of(path) -> dict[str, str]:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    return dict(line.split(": ", 1) for line in doc.splitlines() if ": " in line)


def test_header_gives_training_settings_and_preprocessing(tmp_path):
    url = f"sqlite:///{tmp_path / 'resnas.db'}"
    space = load_space(TINY)
    search(space, storage=url, trials=1)
    trial = optuna.load_study(study_name="tiny", storage=url).trials[0]
    train = trial.user_attrs["train"]
    export_trial("tiny", url, trial=0, out=tmp_path / "net.py")
    header = header_of(tmp_path / "net.py")
    assert header["optimizer"].split(" ")[0] == train["optimizer"]
    assert header["learning rate"].startswith(f"{train['lr']!r}, {train['schedule']} schedule")
    assert header["epochs"] == str(train["epochs"])
    assert header["batch size"] == str(train["batch_size"])
    assert header["seed"] == str(trial.user_attrs["seed"])
    assert header["augmentation"] == "none"
    assert space.spec.data.dataset == "digits"
    assert "divided by 16" in header["input preprocessing"]


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("cifar10", "(x - mean) / std with mean (0.4914, 0.4822, 0.4465)"),
        ("mnist1d", "as generated, no further scaling"),
        ("mydata:load", "the arrays mydata:load returns"),
    ],
)
def test_preprocessing_follows_the_dataset(dataset, expected):
    extra = {"shape": [3], "classes": 2} if ":" in dataset else {}
    lines = dict(training_header({}, DataSpec(dataset=dataset, **extra)))
    assert expected in lines["input preprocessing"]
    assert "optimizer" not in lines  # no training settings recorded: none invented
