"""Checks that need no compute: every source the recipe names resolves, all problems at once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from distill.config import Recipe
from distill.errors import DistillError, RecipeError
from distill.models import resolve_model
from distill.sources import resolve_local


def check_sources(recipe: Recipe, recipe_dir: Path, source: str) -> None:
    """Raise one RecipeError naming every data file or model folder that cannot be used."""
    problems: list[str] = []
    data_refs = {
        "data.path": recipe.data.path,
        "data.validation_path": recipe.data.validation_path,
        "data.test_path": recipe.data.test_path,
    }
    for key, reference in data_refs.items():
        if reference is None:
            continue
        try:
            path = resolve_local(reference, recipe_dir, key)
            if path is not None and path.is_dir():
                problems.append(f"{key}: {path} is a folder; name a data file")
        except DistillError as exc:
            problems.append(str(exc))
    model_refs = [("teacher.model", recipe.teacher.model, recipe.teacher.trust_remote_code)]
    if recipe.student.init == "pretrained" and recipe.student.model:
        model_refs.append(("student.model", recipe.student.model, recipe.student.trust_remote_code))
    for key, reference, trust in model_refs:
        try:
            resolve_model(reference, recipe_dir, key, trust)
        except DistillError as exc:
            problems.append(str(exc))
    for table in ("teacher", "student"):
        wanted = getattr(recipe, table).report_to
        if "tensorboard" in wanted and importlib.util.find_spec("tensorboard") is None:
            problems.append(
                f"{table}.report_to: 'tensorboard' needs the tensorboard package (pip install tensorboard)"
            )
    if problems:
        raise RecipeError(problems, source=source)
