"""The base of every recipe table. It sits in the tasks' layer, below distill.config, so that
a task can declare keys and whole tables of its own in its folder (``Task.recipe_keys``,
``Task.recipe_tables``) that distill.config adds to the recipe."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RecipeTable(BaseModel):
    """Base for every recipe table: unknown keys are errors, values are immutable once checked.

    Strict types: a number is a TOML number (``epochs = true`` or ``alpha = "0.5"`` is an
    error, not 1 or 0.5), an integer key refuses 2.5, a float key takes an integer; a flag
    is true or false and a string a string."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
