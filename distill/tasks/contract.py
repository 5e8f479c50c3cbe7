"""The typed contract of a task folder: every module convention the shared machinery relies
on, written down as Protocols, and :func:`contract_problems`, which checks a task against
them without running it.

The shared machinery calls a task only through these names:

- ``stages/<stage>.py``: ``run(ctx, inputs, out, **tables) -> metrics`` for every pipeline
  stage (:data:`distill.pipeline.stages.STAGE_NAMES`), called by the pipeline;
- the runner module (``Task.runner``, torch-free): ``load_bundle(bundle, *, threads)``,
  called by ``distill predict`` / ``distill generate``, with each of ``Task.predict_options``
  as a keyword; for ``predict`` the object it returns has ``iter_predict(texts, batch_size)``,
  whose items (its return annotation's) write their own output line, ``to_dict()`` for
  ``--json`` and ``to_tsv()`` else; for ``generate`` the module has
  ``generate(model, prompt, ...)``;
- ``render.py``: ``load_report(path)`` and ``write_reports(report, out)``, called by
  ``distill report`` and the report stage; ``templates/`` beside it;
- optional: ``Task.bench`` (``load_model(folder)``, ``test_texts(data_dir)``) for
  ``distill bench``, ``Task.compare`` (``run_compare(path_a, path_b, out)``) for
  ``distill report --compare``, ``Task.data_check`` (``data_columns(data, path)``) for
  ``distill validate``.

Each obligation has a name (:data:`OBLIGATIONS`); a problem names the obligation it breaks,
so ``tests/test_task_interface.py`` can say which one a task fails.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from distill.tasks.base import Task

COMMANDS = ("predict", "generate")


@runtime_checkable
class StageModule(Protocol):
    # ``tables``: the recipe entries of ``StageSpec.sections_for(task)``, each passed by its
    # last name (``student.transfer`` -> ``transfer=``); the metrics go in the manifest.
    def run(self, ctx: Any, inputs: dict[str, Path], out: Path, **tables: Any) -> Any: ...


@runtime_checkable
class Prediction(Protocol):
    def to_dict(self) -> dict[str, Any]: ...

    def to_tsv(self) -> str: ...


@runtime_checkable
class Predictor(Protocol):
    def iter_predict(self, texts: Iterable[str], batch_size: int = ...) -> Iterator[Prediction]: ...


@runtime_checkable
class PredictRunner(Protocol):
    def load_bundle(self, bundle: Any, *, threads: int | None = None) -> Predictor: ...


@runtime_checkable
class GenerateRunner(Protocol):
    def load_bundle(self, bundle: Any, *, threads: int | None = None) -> Any: ...

    def generate(
        self,
        model: Any,
        prompt: Any,
        *,
        max_new_tokens: int,
        do_sample: bool,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        seed: int | None,
        max_new_tokens_name: str,
    ) -> Any: ...


@runtime_checkable
class RenderModule(Protocol):
    def load_report(self, path: Path) -> dict[str, Any]: ...

    def write_reports(self, report: dict[str, Any], out: Path) -> dict[str, Path]: ...


@runtime_checkable
class BenchModule(Protocol):
    def load_model(self, folder: Path) -> Any: ...

    def test_texts(self, data_dir: Path) -> list[str]: ...


@runtime_checkable
class CompareModule(Protocol):
    def run_compare(self, path_a: Path, path_b: Path, out: Path | None = None) -> Path: ...


@runtime_checkable
class DataCheckModule(Protocol):
    def data_columns(self, data: Any, path: Path) -> tuple[str, dict[str, str]] | None: ...


# Obligation -> the Protocol and method whose signature an implementation must accept.
OBLIGATIONS: dict[str, tuple[type, str]] = {
    "stage.run": (StageModule, "run"),
    "runner.load_bundle": (PredictRunner, "load_bundle"),
    "predictor.iter_predict": (Predictor, "iter_predict"),
    "prediction.to_dict": (Prediction, "to_dict"),
    "prediction.to_tsv": (Prediction, "to_tsv"),
    "runner.generate": (GenerateRunner, "generate"),
    "render.load_report": (RenderModule, "load_report"),
    "render.write_reports": (RenderModule, "write_reports"),
    "bench.load_model": (BenchModule, "load_model"),
    "bench.test_texts": (BenchModule, "test_texts"),
    "compare.run_compare": (CompareModule, "run_compare"),
    "data_check.data_columns": (DataCheckModule, "data_columns"),
}
# The obligations that are not a signature.
OTHER_OBLIGATIONS = ("attributes", "render.templates")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _parameters(function: Any) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(function).parameters.values() if p.name != "self"]


def _signature_problem(
    obligation: str, where: str, function: Any, passed: set[str] | None = None
) -> str | None:
    """Why ``function`` cannot be called as the obligation's Protocol method is (its
    positional parameters by position, its keyword-only ones by name; for ``**`` in the
    Protocol, the keywords ``passed``), or None."""
    if not callable(function):
        return f"{obligation}: {where} is missing or not callable"
    protocol, method = OBLIGATIONS[obligation]
    expected, actual = _parameters(getattr(protocol, method)), _parameters(function)
    kinds = {p.kind for p in actual}
    accepts_any_keyword = inspect.Parameter.VAR_KEYWORD in kinds
    positional = [p for p in expected if p.kind in _POSITIONAL]
    taken = [p for p in actual if p.kind in _POSITIONAL]
    keywords = {p.name for p in expected if p.kind is p.KEYWORD_ONLY} | (passed or set())
    required = [p for p in actual if p.default is p.empty and p.kind not in _VARIADIC]
    problems = [
        len(taken) < len(positional) and inspect.Parameter.VAR_POSITIONAL not in kinds,
        # an argument it needs that the caller never passes
        any(p.name not in keywords for p in required[len(positional) :]),
        not accepts_any_keyword and not keywords <= {p.name for p in actual},
    ]
    if any(problems):
        signature = inspect.signature(getattr(protocol, method))
        wanted = str(signature.replace(return_annotation=inspect.Signature.empty))
        wanted = wanted.replace("self, ", "")
        if passed is not None:
            named = ", ".join(f"{k}=" for k in sorted(passed))
            if "**tables" in wanted:
                wanted = wanted.replace("**tables: 'Any'", named)
            else:  # keywords the caller adds to the Protocol's (a task's predict options)
                wanted = f"{wanted[:-1]}, {named})"
        return f"{obligation}: {where}{inspect.signature(function)} must accept {wanted}"
    return None


def _attribute_problems(task: type[Task]) -> list[str]:
    problems = []
    for attribute in ("name", "bundle_task", "package", "runner", "command"):
        value = getattr(task, attribute, None)
        if not isinstance(value, str) or not value:
            problems.append(f"attributes: {task.__name__}.{attribute} must be a non-empty string")
    if getattr(task, "command", None) not in COMMANDS:
        problems.append(f"attributes: {task.__name__}.command must be one of {COMMANDS}")
    return problems


def _runner_problems(task: Task, load: Callable[[str], Any]) -> list[str]:
    runner = load(task.runner)
    where = f"{task.package}.{task.runner}"
    loader = getattr(runner, "load_bundle", None)
    options = {option.name for option in task.predict_options}
    problems = [
        _signature_problem("runner.load_bundle", f"{where}.load_bundle", loader, options or None)
    ]
    if task.command == "generate":
        generate = getattr(runner, "generate", None)
        problems.append(_signature_problem("runner.generate", f"{where}.generate", generate))
    elif callable(loader):
        returned = typing.get_type_hints(loader).get("return")
        iterate = getattr(returned, "iter_predict", None)
        what = f"{getattr(returned, '__name__', returned)}.iter_predict (load_bundle's return)"
        problem = _signature_problem("predictor.iter_predict", what, iterate)
        problems += [problem] if problem else _prediction_problems(iterate)
    return [problem for problem in problems if problem]


def _prediction_problems(iterate: Any) -> list[str | None]:
    """The prediction's obligations, on the item type of ``iter_predict``'s annotation."""
    item = (typing.get_args(typing.get_type_hints(iterate).get("return")) or (None,))[0]
    name = getattr(item, "__name__", repr(item))
    return [
        _signature_problem(f"prediction.{method}", f"{name}.{method}", getattr(item, method, None))
        for method in ("to_dict", "to_tsv")
    ]


def _module_problems(
    task: Task, load: Callable[[str], Any], module_name: str, obligations: tuple[str, ...]
) -> list[str]:
    """The obligations (``<module>.<function>``) one of the task's modules breaks."""
    module = load(module_name)
    problems = []
    for obligation in obligations:
        function_name = obligation.split(".")[1]
        where = f"{task.package}.{module_name}.{function_name}"
        problems.append(_signature_problem(obligation, where, getattr(module, function_name, None)))
    return [problem for problem in problems if problem]


def contract_problems(task: Task, load: Callable[[str], Any] | None = None) -> list[str]:
    """Every obligation ``task`` breaks, each problem starting with the obligation's name
    (empty: the task keeps the contract). ``load`` imports one of the task's modules by its
    name in the folder (default: :meth:`Task.module`); stages are loaded as
    ``stages.<name>``. Importing the modules is all it runs."""
    from distill.pipeline.stages import STAGES

    load = load or task.module
    problems = _attribute_problems(type(task))
    if problems:
        return problems
    for spec in (spec for spec in STAGES if spec.has_body(task.name)):
        function = getattr(load(f"stages.{spec.name}"), "run", None)
        where = f"{task.package}.stages.{spec.name}.run"
        passed = set(spec.table_keywords(task.name))
        problems.append(_signature_problem("stage.run", where, function, passed))
    problems += _runner_problems(task, load)
    problems += _module_problems(
        task, load, "render", ("render.load_report", "render.write_reports")
    )
    if not task.templates.is_dir():
        problems.append(f"render.templates: {task.templates} is not a folder")
    if task.bench is not None:  # optional modules
        problems += _module_problems(
            task, load, task.bench, ("bench.load_model", "bench.test_texts")
        )
    if task.compare is not None:
        problems += _module_problems(task, load, task.compare, ("compare.run_compare",))
    if task.data_check is not None:
        problems += _module_problems(task, load, task.data_check, ("data_check.data_columns",))
    return [problem for problem in problems if problem]
