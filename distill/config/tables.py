"""What the shared recipe tables take from the registry: the keys and whole tables tasks add
(each described as read by its task only), the notes tasks give on shared keys, and the dump
of a table without other tasks' keys. The table base itself is distill.tasks.tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import create_model
from pydantic.fields import FieldInfo

from distill.tasks import TASK_NAMES, TASKS
from distill.tasks.tables import RecipeTable
from distill.wording import listed

# One spelling per task, from the registry (distill/tasks/__init__.py).
TaskName = Literal[TASK_NAMES]  # type: ignore[valid-type]
# The twins a student can be trained beside (folder under the student's, metrics key).
TwinName = Literal["no-kd", "pseudo-labels"]


# The base of every recipe table (distill.tasks.tables: tasks declare tables of their own).
_Table = RecipeTable


def noted(dotted: str, description: str) -> str:
    """``description`` followed by what each task says of the shared key ``dotted`` for
    itself (``Task.key_notes``): the shared tables name no task."""
    notes = [
        f" Task {task.name!r}: {task.key_notes[dotted]}."
        for task in TASKS.values()
        if dotted in task.key_notes
    ]
    return description + "".join(notes)


def readers(predicate: Callable[[Any], bool]) -> str:
    """The tasks for which ``predicate(task class)`` holds, as a description names them."""
    names = [repr(task.name) for task in TASKS.values() if predicate(task)]
    return f"task{'s' if len(names) > 1 else ''} {listed(names)}"


def with_task_keys(base: type[_Table], table: str) -> Any:
    """``base`` plus the keys tasks add to ``[table]``: a task declares its own keys in its
    folder (``Task.recipe_keys``), each described as read by that task only."""
    fields = {
        key: (annotation, _described(field, task.name))
        for task in TASKS.values()
        for key, (annotation, field) in task.recipe_keys.get(table, {}).items()
    }
    name = base.__name__.removeprefix("_")
    return create_model(name, __base__=base, __module__=__name__, __doc__=base.__doc__, **fields)


def task_tables() -> dict[str, Any]:
    """The whole tables tasks add to the recipe (``Task.recipe_tables``), as fields of
    :func:`pydantic.create_model`, each described as read by its task only."""
    return {
        table: (annotation, _described(field, task.name))
        for task in TASKS.values()
        for table, (annotation, field) in task.recipe_tables.items()
    }


def foreign_keys(task: str, table: str) -> set[str]:
    """The keys of ``[table]`` that other tasks add and ``task`` does not read."""
    own = set(TASKS[task].recipe_keys.get(table, {}))
    return {
        key
        for other in TASKS.values()
        if other.name != task
        for key in other.recipe_keys.get(table, {})
    } - own


def task_dump(value: Any, table: str, task: str) -> Any:
    """A recipe table as JSON, without the keys only other tasks read (they would be noise in
    the task's manifests and report, and would change its fingerprints for nothing)."""
    if not hasattr(value, "model_dump"):
        return value
    return value.model_dump(mode="json", exclude=foreign_keys(task, table) or None)


def _described(field: FieldInfo, task: str) -> FieldInfo:
    return FieldInfo.merge_field_infos(
        field, description=f"task {task!r} only: {field.description}"
    )
