"""The typed task contract (distill/tasks/contract.py): every registered task keeps it, and
each obligation, broken on purpose, is reported by its name. Nothing is run: modules are
imported and their signatures read."""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from distill.tasks import TASKS, get_task
from distill.tasks.base import Task
from distill.tasks.contract import OBLIGATIONS, OTHER_OBLIGATIONS, contract_problems


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_keeps_the_contract(name: str) -> None:
    assert contract_problems(get_task(name)) == []


def _distill_imports(module: str) -> set[str]:
    """The distill modules ``module`` imports anywhere in its source, function bodies too."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    names: set[str] = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.startswith("distill") and _is_module(n)}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # ``from module import name``: a name, not a submodule
        return False


def test_task_declarations_import_nothing_above_them() -> None:
    """The registry and every task class are the bottom layer: distill.config builds the
    recipe on them, so nothing they import, even inside a function, reaches config, a data
    reader, model code or a stage (that would close an import circle)."""
    seen, todo = set(), ["distill.tasks"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += sorted(_distill_imports(module))
    outside = sorted(m for m in seen if not m.startswith("distill.tasks") and m != "distill.errors")
    assert outside == []
    assert [m for m in seen if ".stages" in m] == []


def _with(task: Task, **modules: Any) -> Callable[[str], Any]:
    """The task's own modules, but those named (``stages.data``, ``render`` ...) replaced."""
    replaced = {name.replace("__", "."): module for name, module in modules.items()}
    return lambda name: replaced[name] if name in replaced else task.module(name)


def _stage(ctx: Any, inputs: Any, out: Any, *, data: Any) -> dict[str, Any]:
    return {}


def _stage_without_its_table(ctx: Any, inputs: Any, out: Any) -> dict[str, Any]:
    return {}


def _stage_wanting_more(ctx: Any, inputs: Any, out: Any, *, data: Any, extra: Any) -> dict:
    return {}


class _NoIteration:
    def predict(self, texts: list[str]) -> list[Any]:
        return []


class _Line:
    def to_dict(self) -> dict[str, Any]:
        return {}

    def to_tsv(self) -> str:
        return ""


class _Iterates:
    def iter_predict(self, texts: Iterable[str], batch_size: int = 32) -> Iterator[_Line]:
        return iter(())


class _NoTsv:
    def to_dict(self) -> dict[str, Any]:
        return {}


class _DictNeedsArgument(_NoTsv):
    def to_dict(self, indent: int) -> dict[str, Any]:  # type: ignore[override]
        return {}

    def to_tsv(self) -> str:
        return ""


class _IteratesWithoutTsv:
    def iter_predict(self, texts: Iterable[str], batch_size: int = 32) -> Iterator[_NoTsv]:
        return iter(())


class _IteratesDictWithArgument:
    def iter_predict(
        self, texts: Iterable[str], batch_size: int = 32
    ) -> Iterator[_DictNeedsArgument]:
        return iter(())


def _loads_without_tsv(bundle: Any, *, threads: int | None = None) -> _IteratesWithoutTsv:
    return _IteratesWithoutTsv()


def _loads_dict_with_argument(
    bundle: Any, *, threads: int | None = None
) -> _IteratesDictWithArgument:
    return _IteratesDictWithArgument()


def _loads_without_iteration(bundle: Any, *, threads: int | None = None) -> _NoIteration:
    return _NoIteration()


def _loads(bundle: Any, *, threads: int | None = None) -> _Iterates:
    return _Iterates()


def _loads_without_threads(bundle: Any) -> _Iterates:
    return _Iterates()


def _generate_without_sampling(model: Any, prompt: Any, *, max_new_tokens: int) -> Any:
    return None


def _writes(report: dict[str, Any], out: Path) -> dict[str, Path]:
    return {}


def _one_argument(path: Path) -> Any:
    return None


class _WrongCommand(get_task("sequence-classification").__class__):
    command = "serve"


class _NoTemplates(get_task("sequence-classification").__class__):
    @property
    def templates(self) -> Path:
        return Path("/nonexistent/templates")


CLASSIFICATION = "sequence-classification"
# obligation -> (task, broken modules, where the problem points)
BROKEN: dict[str, tuple[str, dict[str, Any], str]] = {
    "stage.run": (
        CLASSIFICATION,
        {"stages__data": SimpleNamespace(run=_stage_without_its_table)},
        "stages.data.run",
    ),
    "runner.load_bundle": (
        CLASSIFICATION,
        {"runner": SimpleNamespace(load_bundle=_loads_without_threads)},
        "runner.load_bundle",
    ),
    "predictor.iter_predict": (
        CLASSIFICATION,
        {"runner": SimpleNamespace(load_bundle=_loads_without_iteration)},
        "_NoIteration.iter_predict",
    ),
    "prediction.to_dict": (
        CLASSIFICATION,
        {"runner": SimpleNamespace(load_bundle=_loads_dict_with_argument)},
        "_DictNeedsArgument.to_dict",
    ),
    "prediction.to_tsv": (
        CLASSIFICATION,
        {"runner": SimpleNamespace(load_bundle=_loads_without_tsv)},
        "_NoTsv.to_tsv is missing",
    ),
    "runner.generate": (
        "causal-lm",
        {"generate": SimpleNamespace(load_bundle=_loads, generate=_generate_without_sampling)},
        "generate.generate",
    ),
    "render.load_report": (
        CLASSIFICATION,
        {"render": SimpleNamespace(write_reports=_writes)},
        "render.load_report is missing",
    ),
    "render.write_reports": (
        CLASSIFICATION,
        {"render": SimpleNamespace(load_report=_one_argument, write_reports=_one_argument)},
        "render.write_reports",
    ),
    "bench.load_model": (
        CLASSIFICATION,
        {"bench_models": SimpleNamespace(test_texts=_one_argument)},
        "bench_models.load_model is missing",
    ),
    "bench.test_texts": (
        CLASSIFICATION,
        {"bench_models": SimpleNamespace(load_model=_one_argument, test_texts=_stage)},
        "bench_models.test_texts",
    ),
    "compare.run_compare": (
        CLASSIFICATION,
        {"compare": SimpleNamespace(run_compare=_one_argument)},
        "compare.run_compare",
    ),
    "data_check.data_columns": (
        "token-classification",
        {"data": SimpleNamespace(data_columns=_one_argument)},
        "data.data_columns",
    ),
}


def test_every_obligation_has_a_breaking_case_here() -> None:
    assert set(BROKEN) | {"attributes", "render.templates"} == set(OBLIGATIONS) | set(
        OTHER_OBLIGATIONS
    )


@pytest.mark.parametrize("obligation", sorted(BROKEN))
def test_a_broken_obligation_is_reported_by_its_name(obligation: str) -> None:
    name, modules, where = BROKEN[obligation]
    task = get_task(name)
    problems = contract_problems(task, _with(task, **modules))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{obligation}: ")
    assert where in problems[0]


def test_a_stage_must_take_each_table_the_pipeline_passes_and_need_no_other() -> None:
    task = get_task(CLASSIFICATION)
    fine = contract_problems(task, _with(task, stages__data=SimpleNamespace(run=_stage)))
    assert fine == []
    greedy = SimpleNamespace(run=_stage_wanting_more)
    (problem,) = contract_problems(task, _with(task, stages__data=greedy))
    assert problem.startswith("stage.run: distill.tasks.classification.stages.data.run")
    assert problem.endswith(
        "must accept (ctx: 'Any', inputs: 'dict[str, Path]', out: 'Path', data=)"
    )


def test_a_task_class_with_an_unknown_command_breaks_its_attributes() -> None:
    (problem,) = contract_problems(_WrongCommand())
    assert problem == "attributes: _WrongCommand.command must be one of ('predict', 'generate')"


def test_a_task_without_templates_breaks_render_templates() -> None:
    (problem,) = contract_problems(_NoTemplates())
    assert problem == "render.templates: /nonexistent/templates is not a folder"


def test_a_missing_stage_function_is_named() -> None:
    task = get_task("token-classification")
    (problem,) = contract_problems(task, _with(task, stages__report=SimpleNamespace()))
    assert problem == (
        "stage.run: distill.tasks.token_classification.stages.report.run is missing or not callable"
    )


def test_a_runner_must_take_each_predict_option_its_task_declares() -> None:
    """`distill predict --aggregation` reaches token classification's load_bundle as a
    keyword: a loader without it breaks runner.load_bundle, naming the keyword."""
    task = get_task("token-classification")
    assert [option.flag for option in task.predict_options] == ["--aggregation"]
    (problem,) = contract_problems(task, _with(task, runner=SimpleNamespace(load_bundle=_loads)))
    assert problem.startswith("runner.load_bundle: distill.tasks.token_classification.runner")
    assert problem.endswith(
        "must accept (bundle: 'Any', *, threads: 'int | None' = None, aggregation=)"
    )
