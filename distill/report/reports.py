"""A run's ``report.json``, handed to the task it belongs to: re-rendering it, comparing two.

Nothing here knows a task: :func:`distill.tasks.task_of_report` says whose report it is (reports
written before tasks existed carry no ``task``: :data:`distill.tasks.DEFAULT_TASK`), the task's
``render`` module renders it and its ``compare`` module, when it has one
(:attr:`distill.tasks.base.Task.compare`), compares two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.errors import ArtifactError
from distill.tasks import DEFAULT_TASK, task_of_report
from distill.tasks.contract import CompareModule, RenderModule

REPORT_FILE = "report.json"


def read_report(path: Path) -> tuple[Path, dict[str, Any]]:
    """A run's ``report.json`` (``path``: the file or the report folder), as (file, its JSON)."""
    path = Path(path)
    file = path / REPORT_FILE if path.is_dir() else path
    if not file.is_file():
        raise ArtifactError(f"{path}: no {REPORT_FILE} here; run the report stage first")
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{file}: cannot read the report: {exc}") from None
    if not isinstance(report, dict):
        raise ArtifactError(f"{file}: cannot read the report: not a JSON object")
    return file, report


def task_name(report: dict[str, Any]) -> str:
    """The task a report names (the default task for reports without one)."""
    return report.get("task") or DEFAULT_TASK


def check_same_task(file_a: Path, a: dict[str, Any], file_b: Path, b: dict[str, Any]) -> None:
    """Reports of different tasks share no metric (accuracy vs perplexity): refuse the pair."""
    task_a, task_b = task_name(a), task_name(b)
    if task_a != task_b:
        raise ArtifactError(
            f"cannot compare {file_a} (task {task_a!r}) with {file_b} (task {task_b!r}): "
            "reports of different tasks have different metrics; compare two runs of the same task"
        )


def compare(path_a: Path, path_b: Path, out: Path | None = None) -> Path:
    """Compare two runs' reports of one task with that task's ``compare`` module
    (``run_compare(path_a, path_b, out)``); returns the folder it wrote."""
    (file_a, a), (file_b, b) = read_report(path_a), read_report(path_b)
    check_same_task(file_a, a, file_b, b)
    task = task_of_report(a)
    if task.compare is None:
        raise ArtifactError(
            f"{file_a}, {file_b}: reports of task {task.name!r} cannot be compared yet"
        )
    comparer: CompareModule = task.module(task.compare)
    return comparer.run_compare(path_a, path_b, out)


def rerender(path: Path, out: Path | None = None) -> dict[str, Path]:
    """Render a report.json again with its task's ``render`` module (``load_report``,
    ``write_reports``) into ``out`` (default: its own folder); returns the paths written."""
    file, report = read_report(path)
    render: RenderModule = task_of_report(report).module("render")
    return render.write_reports(render.load_report(file), Path(out) if out else file.parent)
