"""A pipeline stage as the pipeline sees it: its name, the recipe entries it reads, the
stages it needs, where it publishes, and when it runs at all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import Recipe
from distill.pipeline.artifacts import RunContext
from distill.pipeline.fingerprints import Source
from distill.tasks import get_task
from distill.tasks.base import StageFn


@dataclass(frozen=True)
class StageSpec:
    """A stage: its name, the recipe tables it reads, the stages it needs, and where it publishes."""

    name: str
    sections: tuple[str, ...]
    requires: tuple[str, ...]
    # task -> stage body; by default the task's own (imported on demand: `validate` stays
    # light). Tests give their own.
    load: Callable[[str], StageFn] | None = None
    # A twin stage runs the task's body of another stage (on other inputs): that stage's
    # name, whose body and recipe entries (the task's own, where it names them) it takes.
    body_of: str | None = None
    # (context, finished stage folder) -> {sub-folder: public folder it is copied to}
    publish: Callable[[RunContext, Path], dict[str, Path]] = field(default=lambda ctx, folder: {})
    # Data-parallel stages run on every process (the Trainer shards the work); the others
    # run on the main process while the rest wait. Only the main process writes either way.
    distributed: bool = False
    # The files, folders and hub references outside the run that the stage reads: their
    # content (not the recipe text naming them) is part of its fingerprint.
    reads: Callable[[Recipe], list[Source]] = field(default=lambda recipe: [])
    # The recipe table that turns the stage on (None: it always runs); a task that refuses
    # that table (Task.refused_keys) has no body for the stage. ``runs`` may ask more of it.
    switch: str | None = None
    runs: Callable[[Recipe], bool] = field(default=lambda recipe: True)
    # Keys of its tables that do not change what it computes (dotted): left out of its
    # fingerprint, so setting them reruns nothing.
    ignores: tuple[str, ...] = ()
    # Inputs the body reads under another stage's name: {name it reads: stage it gets}.
    renames: dict[str, str] = field(default_factory=dict)

    def active(self, recipe: Recipe) -> bool:
        """Whether the stage runs for ``recipe`` (a switched-off stage is left out, and the
        stages after it get no folder of it among their inputs)."""
        if self.switch is not None and recipe_entry(recipe, self.switch) is None:
            return False
        return self.runs(recipe)

    def has_body(self, task: str) -> bool:
        """Whether ``task`` owes a body for the stage (one it refuses the switch of does not;
        a twin stage runs another stage's body)."""
        if self.load is not None or self.body_of is not None:
            return False
        return self.switch is None or self.switch not in get_task(task).refused_keys

    def sections_for(self, task: str) -> tuple[str, ...]:
        """The recipe entries the stage reads for ``task`` (a task may name single keys)."""
        return get_task(task).stage_sections.get(self.body_of or self.name, self.sections)

    def table_keywords(self, task: str) -> dict[str, str]:
        """The keyword each recipe entry the stage reads is passed to its body by (its last
        name: ``student.transfer`` -> ``transfer``) -> that entry."""
        return {section.rpartition(".")[2]: section for section in self.sections_for(task)}

    def body(self, task: str) -> StageFn:
        """What the stage computes: the task's. The order, manifests, fingerprints,
        resumption, publishing and process roles here are shared."""
        if self.load is not None:
            return self.load(task)
        return get_task(task).stage(self.body_of or self.name)


def recipe_entry(recipe: Recipe, dotted: str) -> Any:
    """A recipe table by name; ``student.transfer`` names a sub-table (None when absent)."""
    value: Any = recipe
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
