"""A storage password never reaches the terminal or a file: every command that takes --storage."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from helpers import PG_URL, TINY, postgres_up

from resnas._redact import redact

PASSWORD = "SECRETPW"


def test_redact_hides_the_password_and_keeps_the_rest():
    url = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:5432/postgres"
    assert redact(url) == "postgresql+psycopg2://postgres:***@127.0.0.1:5432/postgres"
    assert (
        redact(f"cannot open {url}: refused")
        == "cannot open postgresql+psycopg2://postgres:***@127.0.0.1:5432/postgres: refused"
    )
    assert redact("mysql://u:p@ss@h/db") == "mysql://u:***@h/db"
    for plain in ("sqlite:///resnas.db", "postgresql://postgres@h/db", "no url here: a@b"):
        assert redact(plain) == plain


def _every_file_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def test_unreachable_storage_error_hides_the_password(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:1/postgres"
    for args in (
        ("studies",),
        ("leaderboard", "--study", "x"),
        ("export", "--study", "x"),
        ("search", TINY),
        ("report", "--study", "x"),
        ("diagnose", "--study", "x", "--trial", "0"),
    ):
        code, out, err = run_cli(*args, "--storage", url)
        assert code == 2, (args, err)
        assert "127.0.0.1:1" in err, err  # the error names where it could not connect
        assert PASSWORD not in out + err + _every_file_text(tmp_path), args


@pytest.mark.slow
@pytest.mark.skipif(not postgres_up(), reason="no PostgreSQL server on 127.0.0.1:5432")
def test_password_appears_in_no_output_and_no_file(run_cli, tmp_path, monkeypatch):
    """search, studies, leaderboard, export and report against a password URL (the server trusts any password)."""
    monkeypatch.chdir(tmp_path)
    name = f"pw-{uuid.uuid4().hex[:8]}"
    url = PG_URL.replace("postgres@", f"postgres:{PASSWORD}@")
    assert PASSWORD in url
    spec = tmp_path / "spec.yaml"
    text = TINY.read_text().replace("name: tiny", f"name: {name}").replace("trials: 4", "trials: 1")
    spec.write_text(text.replace("epochs: 4", "epochs: 1"))
    seen = []
    try:
        runs = [
            ("search", spec, "--keep-weights"),
            ("studies",),
            ("leaderboard", "--study", name, "--csv", tmp_path / "board.csv"),
            ("leaderboard", "--study", "no-such-study"),
            ("export", "--study", name, "-o", tmp_path / "best.py", "--weights", tmp_path / "best.safetensors"),
            ("export", "--study", "no-such-study"),
            ("search", "--study", "no-such-study"),
            ("report", "--study", name, "-o", tmp_path / "report.html"),
        ]
        for args in runs:
            code, out, err = run_cli(*args, "--storage", url)
            seen.append((args, code, out + err))
        header = (tmp_path / "best.py").read_text()
    finally:
        import optuna

        optuna.delete_study(study_name=name, storage=PG_URL)
    assert [code for _, code, _ in seen] == [0, 0, 0, 2, 0, 2, 2, 0], seen
    assert "no study named 'no-such-study' in postgresql+psycopg2://postgres:***@" in seen[3][2]
    assert "--storage 'postgresql+psycopg2://postgres:***@" in header
    assert "(artifact)" in seen[4][2], "search --keep-weights kept the weights export used"
    for args, _, text in seen:
        assert PASSWORD not in text, args
    assert PASSWORD not in _every_file_text(tmp_path)
