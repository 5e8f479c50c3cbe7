"""What each stage reads outside the run (files, folders, hub references): their content is
part of the stage's fingerprint (``StageSpec.reads``)."""

from __future__ import annotations

from typing import Any

from distill.config import Recipe
from distill.pipeline.fingerprints import Source


def model_sources(table: str, config: Any) -> list[Source]:
    """A model's weights: its archive parts when it comes from one, else its folder or hub id."""
    if config.archive:
        return [Source(f"{table}.archive[{i}]", part) for i, part in enumerate(config.archive)]
    return [Source(f"{table}.model", config.model, config.revision)]


def data_reads(recipe: Recipe) -> list[Source]:
    data = recipe.data
    keys = {"data.path": data.path, "data.validation_path": data.validation_path}
    keys["data.test_path"] = data.test_path
    return [Source(key, ref, repo_type="dataset") for key, ref in keys.items() if ref]


def transfer_reads(recipe: Recipe) -> list[Source]:
    transfer = recipe.student.transfer
    if transfer is None or transfer.path == "unused":  # "unused" rows come from the data stage
        return []
    return [Source("student.transfer.path", transfer.path, repo_type="dataset")]


def adapt_reads(recipe: Recipe) -> list[Source]:
    """The teacher's weights and the adaptation text ("unused" rows come from the data stage)."""
    sources = model_sources("teacher", recipe.teacher)
    path = recipe.adapt.path if recipe.adapt is not None else None
    if path and path != "unused":
        sources.append(Source("adapt.path", path, repo_type="dataset"))
    return sources


def student_reads(recipe: Recipe) -> list[Source]:
    sources = []
    for table, config in recipe.student.by_table():
        if config.init == "pretrained":
            sources += model_sources(table, config)
    return sources
