"""Checks that need no compute: every source the recipe names resolves, all problems at once.

Local model folders are checked for safe loading; hub ids for being loadable (offline: in
the local cache; online: one short metadata request, see :mod:`distill.sources.hub`); and
``data.max_length`` against the positions of every model whose config.json can be read
without unpacking or downloading weights; and the header of each local data file (its first
line or schema) for the columns the recipe names, missing or repeated.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import Recipe, StudentConfig, TeacherConfig
from distill.data.readers import read_header, table_format
from distill.errors import DistillError, RecipeError
from distill.serving.positions import usable_positions
from distill.sources import hub
from distill.sources.archives import resolve_parts
from distill.sources.paths import resolve_local
from distill.tasks import TASKS, get_task
from distill.train.models import resolve_model


@dataclass
class _Findings:
    """Problems (the recipe cannot run) and notes (what could not be checked)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    network_down: bool = False
    unchecked_hub: list[str] = field(default_factory=list)


def check_sources(recipe: Recipe, recipe_dir: Path, source: str) -> list[str]:
    """Raise one RecipeError naming every data file or model that cannot be used.

    Returns notes on what could not be checked (e.g. a model inside an archive)."""
    found = _Findings()
    _check_data(recipe, recipe_dir, found)
    _check_adapt_text(recipe, recipe_dir, found)
    configs = _check_models(recipe, recipe_dir, found)
    _check_max_length(recipe, configs, found)
    for table in ("adapt", "teacher", "student"):
        if getattr(recipe, table) is None:
            continue
        wanted = getattr(recipe, table).report_to
        if "tensorboard" in wanted and importlib.util.find_spec("tensorboard") is None:
            found.problems.append(
                f"{table}.report_to: 'tensorboard' needs the tensorboard package (pip install tensorboard)"
            )
    if found.unchecked_hub:
        found.problems.append(
            "not checked, the hub being unreachable: " + ", ".join(found.unchecked_hub)
        )
    if found.problems:
        raise RecipeError(found.problems, source=source)
    return found.notes


def _check_data(recipe: Recipe, recipe_dir: Path, found: _Findings) -> None:
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
                found.problems.append(f"{key}: {path} is a folder; name a data file")
            elif path is None:
                _check_hub(reference, None, "dataset", key, found)
            else:
                _check_columns(recipe, key, path, found)
        except DistillError as exc:
            found.problems.append(str(exc))


def _check_adapt_text(recipe: Recipe, recipe_dir: Path, found: _Findings) -> None:
    """[adapt]'s text: the file exists and has the text column, or rows are left unused."""
    adapt = recipe.adapt
    if adapt is None or adapt.path is None:
        return
    if adapt.path == "unused":
        if recipe.data.max_examples is None:
            found.problems.append(
                "adapt.path = 'unused': data.max_examples is not set, so the data stage leaves "
                "no rows out to adapt on; set it, or name a file"
            )
        return
    try:
        path = resolve_local(adapt.path, recipe_dir, "adapt.path")
        if path is None:
            _check_hub(adapt.path, None, "dataset", "adapt.path", found)
            return
        if path.is_dir():
            found.problems.append(f"adapt.path: {path} is a folder; name a data file")
            return
        fmt = table_format(path, recipe.data.model_copy(update={"format": "auto"}))
        columns = (
            None if fmt is None else read_header(path, fmt, adapt.encoding or recipe.data.encoding)
        )
        if columns is not None and adapt.text_column not in columns:
            found.problems.append(
                f"adapt.path: {path} has no column {adapt.text_column!r} (adapt.text_column); "
                f"its columns are {columns}"
            )
    except DistillError as exc:
        found.problems.append(str(exc))


def _check_columns(recipe: Recipe, key: str, path: Path, found: _Findings) -> None:
    """The columns the data stage will read, against the file's header (its first line or
    schema only): a missing or repeated column is found before any compute."""
    spec = _columns_read(recipe, path)
    if spec is None:
        return
    fmt, wanted = spec
    columns = read_header(path, fmt, recipe.data.encoding)
    if columns is None:
        return
    missing = [f"{column!r} ({name})" for name, column in wanted.items() if column not in columns]
    if missing:
        where = "its first line has the keys" if fmt == "jsonl" else "its columns are"
        found.problems.append(
            f"{key}: {path} has no column {', '.join(missing)}; {where} {columns}"
        )


def _columns_read(recipe: Recipe, path: Path) -> tuple[str, dict[str, str]] | None:
    """The format of a local data file and the columns the data stage reads from it (recipe
    key -> column), by the task's own check if it has one; None: no named columns."""
    task = get_task(recipe.task)
    if task.data_check is not None:
        return task.module(task.data_check).data_columns(recipe.data, path)
    fmt = table_format(path, recipe.data)
    return None if fmt is None else (fmt, task.named_columns(recipe.data))


def _check_hub(
    repo_id: str, revision: str | None, repo_type: str, key: str, found: _Findings
) -> None:
    """Offline: the model or data set is cached; online: it exists (one short request)."""
    if hub.hub_offline():
        if repo_type == "model":
            hub.check_cached_model(repo_id, revision, key)
        else:
            hub.check_cached_dataset(repo_id, key)
        return
    if found.network_down:
        found.unchecked_hub.append(f"{key} {repo_id!r}")
        return
    try:
        hub.check_online(repo_id, revision, repo_type, key)
    except hub.HubUnreachable:
        found.network_down = True
        raise


def _model_refs(recipe: Recipe) -> list[tuple[str, TeacherConfig | StudentConfig]]:
    """The teacher and every student that loads a pre-trained model of its own."""
    refs: list[tuple[str, TeacherConfig | StudentConfig]] = [("teacher", recipe.teacher)]
    refs += [(t, s) for t, s in recipe.student.by_table() if s.init == "pretrained" and s.model]
    return refs


def _check_models(
    recipe: Recipe, recipe_dir: Path, found: _Findings
) -> dict[str, dict[str, Any] | None]:
    """Check every model reference; returns each table's config.json (None: not readable)."""
    configs: dict[str, dict[str, Any] | None] = {}
    for table, config in _model_refs(recipe):
        configs[table] = None
        try:
            configs[table] = _check_model(recipe, recipe_dir, table, config, found)
        except DistillError as exc:
            found.problems.append(str(exc))
    return configs


def _check_model(
    recipe: Recipe,
    recipe_dir: Path,
    table: str,
    config: TeacherConfig | StudentConfig,
    found: _Findings,
) -> dict[str, Any] | None:
    key = f"{table}.model"
    if config.archive:  # unpacking is compute: here only check that the parts exist
        resolve_parts(config.archive, recipe_dir, f"{table}.archive")
        found.notes.append(_unchecked_positions(key, f"it is inside {table}.archive"))
        return None
    if str(config.model).lower().endswith(".gguf"):
        path = resolve_local(config.model, recipe_dir, key)
        if not get_task(recipe.task).reads_gguf:
            readers = ", ".join(repr(t.name) for t in TASKS.values() if t.reads_gguf)
            found.problems.append(f"{key}: GGUF files are read by task {readers} only")
        elif path is None or not path.is_file():
            found.problems.append(f"{key}: {config.model!r} is not a GGUF file")
        else:
            found.notes.append(_unchecked_positions(key, "it is a GGUF file"))
        return None
    resolved = resolve_model(config.model, recipe_dir, key, config.trust_remote_code)
    if Path(resolved).is_absolute():  # resolve_model gives local folders as absolute paths
        return hub.read_config(Path(resolved) / hub.CONFIG_FILE)
    _check_hub(resolved, config.revision, "model", key, found)
    model_config = None if found.network_down else hub.model_config(resolved, config.revision)
    if model_config is None:
        found.notes.append(_unchecked_positions(key, "its config.json could not be read"))
    return model_config


def _unchecked_positions(key: str, why: str) -> str:
    return f"{key}: its token positions were not compared with data.max_length ({why})"


def _check_max_length(
    recipe: Recipe, configs: dict[str, dict[str, Any] | None], found: _Findings
) -> None:
    """data.max_length against the positions of the teacher and of each own-config student.

    Only config.json decides: a longer input would index past the position table (a crash
    in the teacher stage). The tokenizer's model_max_length is no limit here, because
    tokenizing passes max_length explicitly."""
    references = {table: ref.model for table, ref in _model_refs(recipe)}
    models = {f"{table}.model {references[table]!r}": config for table, config in configs.items()}
    teacher = configs.get("teacher")
    for table, student in recipe.student.by_table():
        if student.init != "config" or teacher is None or not student.config:
            continue
        merged = {**teacher, **student.config}
        if usable_positions(merged) != usable_positions(teacher):  # else the teacher's check
            models[f"{table}.config (the teacher's config with these overrides)"] = merged
    max_length = recipe.data.max_length
    for model, config in models.items():
        limit = usable_positions(config) if config is not None else None
        if limit is not None and max_length > limit[0]:
            found.problems.append(
                f"data.max_length: {max_length} exceeds the {limit[0]} token positions of "
                f"{model} ({limit[1]}); set data.max_length to at most {limit[0]}"
            )
