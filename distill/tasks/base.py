"""The interface every task implements, and nothing else: the registry lives in
:mod:`distill.tasks`.

A task is one folder under ``distill/tasks/``: its stage bodies (``stages/<name>.py``, one
``run(ctx, inputs, out, **tables)`` each), its bundle runner, its report rendering
(``render.py``: ``load_report(path)`` and ``write_reports(report, out)``), optionally the
comparison of two of its reports, and its templates (their signatures:
:mod:`distill.tasks.contract`). This class says where those are, which recipe keys and
tables are the task's own and what it says of shared ones, so the shared machinery
(pipeline, config, preflight, CLI, report loading) can ask without naming a task.

Task declarations are the bottom layer: this module, ``tables.py`` and each task's
``task.py`` (and the keys it declares) import nothing of distill above them, so that
distill.config can build the recipe on them; the work a task does lives in its modules,
which its stages import directly. Importing a task must stay cheap: ``distill validate``
reads every task's keys without torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

StageFn = Callable[..., dict[str, Any]]


# The shared [student] keys every task with encoder students reads, and a task without them
# refuses (so each such task lists them in its own_keys): the encoder-student helpers of
# distill.train read them (prepare_student: hidden_weight / attention_weight and layer_map
# through layer_distillation, trim_vocabulary), and the task's labels and student stages
# read transfer (unlabelled text the teacher labels too).
ENCODER_STUDENT_KEYS: tuple[str, ...] = (
    "student.transfer",
    "student.hidden_weight",
    "student.attention_weight",
    "student.layer_map",
    "student.trim_vocabulary",
)


@dataclass(frozen=True)
class StudentKind:
    """A way of building students (a ``student.init`` value) that makes no transformer
    layers: what it builds, the keys only it reads, and the budget measured for it. The
    [student] table checks and fills these in; a variant of another kind drops the primary's
    budget (``epochs``, ``learning_rate``) and building keys."""

    builds: str  # in errors: "init = '<init>' builds <this>, not transformer layers"
    description: str  # what it is, in student.init's description
    keys: tuple[str, ...]  # [student] keys (the task's recipe_keys) only this kind reads
    learning_rate: float  # where the recipe sets none
    learning_rate_why: str
    defaults: dict[str, Any] = field(default_factory=dict)  # e.g. epochs, where unset


@dataclass(frozen=True)
class PredictHelp:
    """How ``distill predict --help`` describes a task's bundles."""

    does: str  # "classify texts": what predict does with its bundles
    line: str  # its output line, e.g. "label<TAB>probability ... for a classifier"
    json: str  # the fields of its --json objects


@dataclass(frozen=True)
class PredictOption:
    """A ``distill predict`` flag that only some tasks' bundles take: its value reaches the
    runner's ``load_bundle`` as the keyword ``name``; for a bundle of another task it is an
    error naming the flag, and a value outside ``choices`` is one naming them."""

    name: str  # load_bundle's keyword; the flag is --name (underscores as dashes)
    metavar: str
    help: str  # in `distill predict --help`
    applies_to: str  # in the error for another task's bundle: "--x applies to <this>"
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class Task:
    """A task: where its code lives, what it owns, and how its results read in a terminal."""

    name: ClassVar[str]  # the one spelling, in recipes (`task = ...`), manifests and reports
    bundle_task: ClassVar[str]  # the pipeline tag a bundle's manifest.json records
    package: ClassVar[str]  # the task's folder as a module path
    # The CLI verb that runs this task's bundles, and the module (torch-free) it calls.
    command: ClassVar[str]
    runner: ClassVar[str]
    # How the names in a config.json's `architectures` of this task's models end
    # (`BertForTokenClassification`): the bundle reader refuses a bundle whose manifest names
    # this task but whose config names a model of another task's ending.
    architecture_suffixes: ClassVar[tuple[str, ...]] = ()
    # Recipe keys that only this task reads: set in a recipe of another task, each is an
    # error naming the key and the task. `recipe_keys` adds keys to the shared tables
    # (table -> key -> (type, pydantic Field)); `own_keys` names shared keys (dotted; a whole
    # table by its name) that only this task reads.
    recipe_keys: ClassVar[dict[str, dict[str, Any]]] = {}
    own_keys: ClassVar[tuple[str, ...]] = ()
    # Shared keys or tables (dotted) that this task cannot use, each with why: set in its
    # recipe, the error says the key and the reason.
    refused_keys: ClassVar[dict[str, str]] = {}
    # Whole tables only this task reads, added to the recipe after [student]: table -> (its
    # type, a distill.tasks.tables.RecipeTable; its pydantic Field).
    recipe_tables: ClassVar[dict[str, tuple[type, Any]]] = {}
    # What this task says of shared keys for itself (dotted key -> a note): the recipe's
    # descriptions (schema, docs/recipe-reference.md) end with it, so no shared table names a
    # task.
    key_notes: ClassVar[dict[str, str]] = {}
    # What its models learn and its page in docs/, for the recipe's `task` key.
    about: ClassVar[str] = ""
    # Stage -> the recipe entries it reads, where they differ from the stage's default tables.
    stage_sections: ClassVar[dict[str, tuple[str, ...]]] = {}
    # The ways (`student.init`) this task's students can be built.
    student_inits: ClassVar[tuple[str, ...]] = ("teacher-layers", "pretrained", "config")
    # Those of them that build no transformer layers (init -> what it is).
    student_kinds: ClassVar[dict[str, StudentKind]] = {}
    # The [data] keys naming the columns the data stage reads from a table file (besides
    # data.id_column), which `distill validate` looks for in the file's header.
    data_column_keys: ClassVar[tuple[str, ...]] = ()
    # The module (in the task's folder) whose `data_columns(data, path)` tells `distill
    # validate` the format of a local data file and the columns to look for in its header
    # (None: no named columns to check); None here: the shared table reader's format
    # (data.format, else the file's extension) and `named_columns`.
    data_check: ClassVar[str | None] = None
    # Modules (in the task's folder) that register the task's own saved model types with
    # transformers' Auto classes when imported (see `register_models`).
    model_modules: ClassVar[tuple[str, ...]] = ()
    # Optimizer-step floor of a training run that sets no min_steps.
    default_min_steps: ClassVar[int] = 0
    # Whether model references may name GGUF files.
    reads_gguf: ClassVar[bool] = False
    # The module (in the task's folder) through which `distill bench` times this task's
    # bundles beside the run's PyTorch models: `load_model(folder) -> torch module` (a model
    # an earlier stage saved) and `test_texts(data_dir) -> list[str]` (the texts its inputs
    # are cut from); None: not benched.
    bench: ClassVar[str | None] = None
    # The `distill predict` flags its bundles take beyond the shared ones (--aggregation...).
    predict_options: ClassVar[tuple[PredictOption, ...]] = ()
    # What `distill predict --help` says of its bundles (tasks served by predict): what it
    # does to a text, its output line, its --json fields.
    predict_help: ClassVar[PredictHelp | None] = None
    # The module (in the task's folder) that compares two of its reports, for
    # `distill report --compare`: `run_compare(path_a, path_b, out) -> Path`; None: not yet.
    compare: ClassVar[str | None] = None

    @classmethod
    def owned_keys(cls) -> tuple[str, ...]:
        """Every recipe key only this task reads: its shared ones and those it adds."""
        added = tuple(f"{table}.{key}" for table, keys in cls.recipe_keys.items() for key in keys)
        return cls.own_keys + tuple(cls.recipe_tables) + added

    def stage(self, name: str) -> StageFn:
        """The task's body for pipeline stage ``name`` (the task's model types registered)."""
        self.register_models()
        return importlib.import_module(f"{self.package}.stages.{name}").run

    def module(self, name: str) -> Any:
        """One of the task's modules by its name in the folder (``report``, ``runner`` ...)."""
        return importlib.import_module(f"{self.package}.{name}")

    @property
    def templates(self) -> Path:
        """The task's report templates (they extend the shared ones in distill/report/)."""
        # __path__, not __file__: a task folder without an __init__.py has no __file__.
        return Path(next(iter(importlib.import_module(self.package).__path__))) / "templates"

    def register_models(self) -> None:
        """Make the task's own saved model types (if any) loadable by transformers' Auto
        classes: before any of its stages runs, and in code outside them that loads its
        students (``distill bench``)."""
        for name in self.model_modules:
            self.module(name)  # importing it registers its types

    @classmethod
    def named_columns(cls, data: Any) -> dict[str, str]:
        """The columns ``[data]`` names for the data stage: recipe key -> column name."""
        keys = (*cls.data_column_keys, "id_column")
        return {f"data.{key}": getattr(data, key) for key in keys if getattr(data, key)}

    def check_recipe(self, recipe: Any) -> list[str]:
        """Problems with values this task cannot use (its keys are checked by the registry)."""
        return []

    def summary_lines(self, report: dict[str, Any]) -> list[str]:
        """The report's key rows as plain text, for the end of `distill run`."""
        return []
