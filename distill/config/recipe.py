"""A whole recipe: its tables together, `--set` overrides, reading the TOML file, one error
listing every problem, and the JSON Schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import tomllib
from pydantic import (
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from distill.config.adapt import AdaptConfig, adapt_description
from distill.config.data import DataConfig
from distill.config.export import ExportConfig, ReportConfig
from distill.config.student import StudentTable
from distill.config.tables import TaskName, _Table, task_tables
from distill.config.training import TeacherConfig
from distill.errors import RecipeError, UnreadableRecipeError
from distill.tasks import DEFAULT_TASK, TASKS, get_task
from distill.wording import listed


class _Recipe(_Table):
    """A whole recipe: run identity plus one table per stage."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="Run name: folder name under runs/, export/ and reports/.",
    )
    seed: int = Field(
        13,
        ge=0,
        le=2**32 - 1,
        description="Seeds splitting, sampling, initialisation and training.",
    )
    task: TaskName = Field(
        DEFAULT_TASK,
        description="What the models learn, each task with its own page: "
        + "; ".join(f"{task.name!r}: {task.about}" for task in TASKS.values())
        + ".",
    )
    data: DataConfig
    adapt: AdaptConfig | None = Field(None, description=adapt_description())
    teacher: TeacherConfig
    student: StudentTable
    # then the tables tasks add (Task.recipe_tables), [export] and [report]: see Recipe.

    @model_validator(mode="before")
    @classmethod
    def _students_fit_the_task(cls, data: Any) -> Any:
        """A student the task cannot build is said first and alone: the complaints its
        table would raise (a token-table student's layer keys, say) are noise beside it."""
        if not isinstance(data, dict) or not isinstance(data.get("student"), dict):
            return data
        name = data.get("task", DEFAULT_TASK)
        task = TASKS.get(name) if isinstance(name, str) else None
        if task is None:
            return data  # the task key's own error says it
        student = data["student"]
        variants = student.get("variants")
        tables = [("student", student)] + [
            (f"student.variants.{name}", table)
            for name, table in (variants.items() if isinstance(variants, dict) else ())
            if isinstance(table, dict)
        ]
        problems = []
        for where, table in tables:
            init = table.get("init")
            builders = [t.name for t in TASKS.values() if init in t.student_inits]
            if builders and task.name not in builders:
                problems.append(
                    f"{where}.init = {init!r} is not supported for task {task.name!r}: "
                    f"{init!r} students are built by task {' and '.join(map(repr, builders))} "
                    f"only (this task builds: {', '.join(map(repr, task.student_inits))})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return data

    @model_validator(mode="after")
    def _keys_fit_the_task(self) -> _Recipe:
        """Each task owns its keys: one set for another task would be ignored, so it is an
        error naming the key and the task that reads it."""
        task = get_task(self.task)
        owners: dict[str, list[str]] = {}
        for other in TASKS.values():
            for key in other.owned_keys():
                owners.setdefault(key, []).append(other.name)
        problems = [
            f"{where} is read by task {listed([repr(n) for n in names])} only, not by this "
            f"recipe's task {task.name!r}"
            for key, names in owners.items()
            if task.name not in names
            for where in self._where_set(key)
        ]
        problems += [f"{key}: {why}" for key, why in task.refused_keys.items() if self.is_set(key)]
        problems += task.check_recipe(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _where_set(self, dotted: str) -> list[str]:
        """Where the recipe sets ``dotted``: the key itself, and for a [student] key each
        [student.variants.NAME] table that sets it too."""
        found = [dotted] if self.is_set(dotted) else []
        table, _, key = dotted.partition(".")
        if table == "student" and key and "." not in key:
            found += [
                f"student.variants.{name}.{key}"
                for name, variant in self.student.variants.items()
                if key in variant.model_fields_set
            ]
        return found

    def is_set(self, dotted: str) -> bool:
        """Whether the recipe gives ``dotted`` (a table, or a key of one) itself."""
        table: Any = self
        *parents, key = dotted.split(".")
        for part in parents:
            if part not in table.model_fields_set:
                return False
            table = getattr(table, part)
        return key in table.model_fields_set


# The tables tasks add come after [student], as the stages read them.
Recipe = create_model(
    "Recipe",
    __base__=_Recipe,
    __module__=__name__,
    __doc__=_Recipe.__doc__,
    **task_tables(),
    export=(ExportConfig, Field(default_factory=ExportConfig)),
    report=(ReportConfig, Field(default_factory=ReportConfig)),
)


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value``; the value is read as a TOML value, else taken as a plain string."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError([f"--set {assignment!r}: expected KEY.PATH=VALUE"], source="--set")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the raw recipe with every ``--set`` applied."""
    merged = copy.deepcopy(raw)
    for assignment in overrides:
        path, value = parse_override(assignment)
        table = merged
        for part in path[:-1]:
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise RecipeError(
                    [f"--set {assignment!r}: {part!r} is a value, not a table"], source="--set"
                )
            table = nxt
        table[path[-1]] = value
    return merged


# Strict number errors: what the key wants, for a message that says what it got instead.
_NUMBER_TYPES = {"int_type": "an integer", "float_type": "a number"}


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    value = error.get("input")
    if error["type"] in _NUMBER_TYPES and isinstance(value, bool):
        return f"{where}: expected {_NUMBER_TYPES[error['type']]}, not the boolean {str(value).lower()}"
    if error["type"] in _NUMBER_TYPES and isinstance(value, str):
        return (
            f"{where}: expected {_NUMBER_TYPES[error['type']]}, not the string {_shown(value)} "
            "(numbers are written without quotes)"
        )
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("value_error",) and "input" in error:
        return f"{where}: {message} (got {_shown(value)})"
    return f"{where}: {message}"


def _shown(value: Any, limit: int = 80) -> str:
    """A value as the message echoes it: cut, so a huge or deeply nested one stays one line."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def validate_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Check a raw recipe dict, raising one :class:`RecipeError` listing every problem."""
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError([_describe(e) for e in exc.errors()], source=source) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, Path]:
    """Read, override and validate a TOML recipe; returns it with the folder it came from."""
    path = Path(path)
    raw = read_toml(path)
    try:
        raw = apply_overrides(raw, overrides or [])
        return validate_recipe(raw, source=str(path)), path.resolve().parent
    except RecursionError:  # tomllib's own limit is near the interpreter's: a margin case
        raise UnreadableRecipeError(str(path), _TOO_DEEP) from None


_TOO_DEEP = "not readable: its arrays or inline tables are nested too deeply"


def read_toml(path: Path) -> dict[str, Any]:
    """The recipe file as TOML; whatever stops it being read is one :class:`UnreadableRecipeError`
    naming the file (a missing file, a bad byte, a syntax error, nesting deeper than the parser
    recurses)."""
    if not path.is_file():
        raise UnreadableRecipeError(str(path), "no such recipe file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UnreadableRecipeError(str(path), f"not valid TOML: {exc}") from None
    except RecursionError:
        raise UnreadableRecipeError(str(path), _TOO_DEEP) from None
    except (OSError, ValueError, MemoryError) as exc:  # unreadable file, parser failure
        raise UnreadableRecipeError(
            str(path), f"cannot be read: {type(exc).__name__}: {exc}"
        ) from None


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema of the recipe, for editor completion (taplo's ``#:schema`` directive) and
    docs/recipe-reference.md."""
    schema = Recipe.model_json_schema()
    _mark_owned_keys(schema)
    return schema


def _mark_owned_keys(schema: dict[str, Any]) -> None:
    """A shared key (or table) that only some tasks read says so, as the keys tasks add do
    (:func:`_described`): in another task's recipe it is an error, in [student.variants.NAME]
    too."""

    def table(node: dict[str, Any]) -> dict[str, Any]:
        return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]

    owners: dict[str, list[str]] = {}
    for task in TASKS.values():
        for dotted in task.own_keys:
            owners.setdefault(dotted, []).append(task.name)
    for dotted, names in owners.items():
        if len(names) == len(TASKS):
            continue  # every task reads it
        *tables, key = dotted.split(".")
        node = schema
        for name in tables:
            node = table(node["properties"][name])
        nested = [
            table(value)
            for prop in node["properties"].values()
            for value in prop.get("patternProperties", {}).values()
        ]
        only = f"task{'s' if len(names) > 1 else ''} {listed([repr(n) for n in names])} only"
        for holder in [node, *nested]:
            if key in holder["properties"]:
                prop = holder["properties"][key]
                prop["description"] = f"{only}: {prop['description']}"
