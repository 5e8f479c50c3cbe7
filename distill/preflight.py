"""Checks that need no compute: every source the recipe names resolves, all problems at once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from distill.archives import resolve_parts
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
    model_refs = [("teacher", recipe.teacher)]
    for name in recipe.student.student_names():
        student = recipe.student.variant(name)
        table = "student" if name == "main" else f"student.variants.{name}"
        if student.init == "pretrained" and student.model:
            model_refs.append((table, student))
    for table, config in model_refs:
        try:
            if config.archive:  # unpacking is compute: here only check that the parts exist
                resolve_parts(config.archive, recipe_dir, f"{table}.archive")
            elif str(config.model).lower().endswith(".gguf"):
                path = resolve_local(config.model, recipe_dir, f"{table}.model")
                if recipe.task != "causal-lm":
                    problems.append(f"{table}.model: GGUF files are read for task 'causal-lm' only")
                elif path is None or not path.is_file():
                    problems.append(f"{table}.model: {config.model!r} is not a GGUF file")
            else:
                resolve_model(config.model, recipe_dir, f"{table}.model", config.trust_remote_code)
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
