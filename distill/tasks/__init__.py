"""The one registry of tasks: a new task is its folder plus one line here.

Each task (:class:`~distill.tasks.base.Task`) says where its stages, runner and report
live and which recipe keys are its own; nothing outside ``distill/tasks/`` names a task.
"""

from __future__ import annotations

from typing import Any

from distill.errors import ArtifactError
from distill.tasks.base import Task
from distill.tasks.causal_lm.task import CausalLM
from distill.tasks.classification.task import SequenceClassification
from distill.tasks.question_answering.task import QuestionAnswering
from distill.tasks.seq2seq.task import Seq2Seq
from distill.tasks.token_classification.task import TokenClassification

# The first is the default task of a recipe, and of reports written before tasks existed.
TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (
        SequenceClassification,
        CausalLM,
        TokenClassification,
        QuestionAnswering,
        Seq2Seq,
    )
}
TASK_NAMES = tuple(TASKS)
DEFAULT_TASK = TASK_NAMES[0]


def get_task(name: str) -> Task:
    return TASKS[name]()


def task_of_bundle(bundle_task: Any, where: str) -> Task:
    """The task whose bundles carry ``bundle_task`` in their manifest.json."""
    for task in TASKS.values():
        if task.bundle_task == bundle_task:
            return task()
    known = ", ".join(repr(t.bundle_task) for t in TASKS.values())
    raise ArtifactError(f"{where}: task is {bundle_task!r}; distill bundles have {known}")


def task_of_report(report: dict[str, Any]) -> Task:
    """The task a report.json belongs to (reports from before tasks existed: the default)."""
    name = report.get("task") or DEFAULT_TASK
    if name not in TASKS:
        raise ArtifactError(f"report task {name!r} is not one of {', '.join(TASK_NAMES)}")
    return get_task(name)
