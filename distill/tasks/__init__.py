"""Tasks: what differs between sequence classification, causal LM and token classification.

Stages ask the task for its model class, how to encode a split, its metrics and its
distillation loss, so a new task plugs in without rewriting the stages.
"""

from __future__ import annotations

from distill.tasks.base import Task
from distill.tasks.classification.task import SequenceClassification

TASKS: dict[str, type[Task]] = {SequenceClassification.name: SequenceClassification}


def get_task(name: str) -> Task:
    return TASKS[name]()
