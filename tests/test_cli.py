"""The command line: validate, schema, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.cli import main
from distill.config import recipe_json_schema

ROOT = Path(__file__).parent.parent


def write_recipe(folder: Path, body: str) -> Path:
    path = folder / "recipe.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_committed_schema_matches_the_code() -> None:
    committed = json.loads((ROOT / "recipes" / "recipe.schema.json").read_text(encoding="utf-8"))
    assert committed == recipe_json_schema(), "run: distill schema -o recipes/recipe.schema.json"


def test_shipped_recipes_declare_the_schema() -> None:
    for recipe in (ROOT / "recipes").glob("*.toml"):
        assert recipe.read_text(encoding="utf-8").startswith("#:schema ./recipe.schema.json"), (
            recipe.name
        )


def test_validate_quickstart(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "recipes" / "quickstart.toml")]) == 0
    assert "ok" in capsys.readouterr().out


def test_validate_reports_every_problem_with_exit_2(tmp_path: Path, sentiment_csv: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        f"""
name = "x"
[data]
path = "{sentiment_csv}"
[teacher]
model = "./no-such-folder"
epochs = -1
[student]
num_layers = 2
alpha = 3
""",
    )
    result = subprocess.run(
        [sys.executable, "-m", "distill", "validate", str(recipe), "--set", "student.colour=1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "teacher.epochs: Input should be greater than 0" in result.stderr
    assert "student.alpha: Input should be less than or equal to 1" in result.stderr
    assert "student.colour: unknown key" in result.stderr


def test_sources_are_checked_before_compute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
name = "x"
[data]
path = "missing.csv"
[teacher]
model = "./no-such-folder"
[student]
num_layers = 2
""",
    )
    assert main(["run", str(recipe), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "data.path: 'missing.csv' does not exist" in err
    assert "teacher.model: './no-such-folder' does not exist" in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_schema_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "student" in schema["properties"] and schema["additionalProperties"] is False
