"""The typed recipe: one model per TOML table, unknown keys rejected, every error reported at once.

Each stage receives only its own table (plus a small :class:`~distill.pipeline.artifacts.RunContext`),
never the whole recipe, so components stay independent of the recipe's shape. The tables
live one module per job (``tables`` the base and the keys tasks add, ``data``,
``training``, ``student``, ``export``, ``recipe``); this is what the rest of distill reads.
"""

from distill.config.adapt import AdaptConfig
from distill.config.data import DataConfig, TransferConfig
from distill.config.export import ExportCandidate, ExportConfig, ReportConfig
from distill.config.recipe import (
    Recipe,
    apply_overrides,
    load_recipe,
    parse_override,
    recipe_json_schema,
    validate_recipe,
)
from distill.config.student import StudentConfig, StudentTable
from distill.config.tables import task_dump
from distill.config.training import TeacherConfig, TrainingConfig

__all__ = [
    "AdaptConfig",
    "DataConfig",
    "ExportCandidate",
    "ExportConfig",
    "Recipe",
    "ReportConfig",
    "StudentConfig",
    "StudentTable",
    "TeacherConfig",
    "TrainingConfig",
    "TransferConfig",
    "apply_overrides",
    "load_recipe",
    "parse_override",
    "recipe_json_schema",
    "task_dump",
    "validate_recipe",
]
