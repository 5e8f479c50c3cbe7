"""What domain adaptation bought the classification teacher and its student: the
``plain-teacher`` stage's row (the same teacher fine-tuned without adaptation, same seed and
budget) and, when the run trained it, the ``plain-student`` stage's (the same student
distilled from that plain teacher), each scored from its cached test logits like the model
it mirrors and timed in the report's interleaved run; the adapted teacher's accuracy against
its plain twin and the distilled student's against the plain teacher's student, paired on
the test split (McNemar's exact test and the bootstrap interval of
:func:`distill.report.significance.paired_comparison`).

The section itself (the adapt stage's text and masked-LM figures around these comparisons)
is :func:`distill.report.adaptation.adaptation_section`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.pipeline.artifacts import finished_manifest
from distill.report.adaptation import (
    PLAIN_STUDENT,
    PLAIN_TEACHER,
    REFERENCE,
    STUDENT_KEY,
    STUDENT_NAME,
    STUDENT_REFERENCE,
    SUBJECT,
    adaptation_section,
)
from distill.report.significance import paired_comparison, verdict_sentence
from distill.tasks.classification.report.floor import PRIMARY_METRIC
from distill.tasks.classification.report.inputs import ReportInputs
from distill.tasks.classification.report.rows import pytorch_row
from distill.timing.latency import TimingPlan

KEY = "teacher_plain"
NAME = "Teacher (no adaptation)"


@dataclass
class PlainTwin:
    """A plain twin's row in the main table and its test logits (in test-split order)."""

    row: dict[str, Any]
    logits: np.ndarray


def plain_twin(
    inputs: dict[str, Path],
    upstream: ReportInputs,
    plan: TimingPlan | None,
    stage: str,
    key: str,
    name: str,
) -> PlainTwin | None:
    """The row ``key`` (named ``name``) of the ``stage`` folder's model, scored from its test
    logits (agreement with the teacher, as every row) and registered with ``plan`` to be
    timed with the others; None when the run has no such folder. An unfinished folder or
    missing logits are errors."""
    folder = inputs.get(stage)
    if folder is None:
        return None
    finished_manifest(folder, stage)
    logits = upstream.logits(folder / "logits" / "test.npz")
    row = pytorch_row(
        key=key,
        name=name,
        model_dir=folder / "model",
        metrics=upstream.score(logits),
        plan=plan,
    )
    return PlainTwin(row=row, logits=logits)


def plain_teacher(
    inputs: dict[str, Path], upstream: ReportInputs, plan: TimingPlan | None
) -> PlainTwin | None:
    """The plain twin's row (``teacher_plain``), or None when the run trained none."""
    return plain_twin(inputs, upstream, plan, PLAIN_TEACHER, KEY, NAME)


def plain_student(
    inputs: dict[str, Path], upstream: ReportInputs, plan: TimingPlan | None
) -> PlainTwin | None:
    """The row of the student distilled from the plain twin (``student_plain_teacher``;
    the folder's ``model/`` and ``logits/test.npz``, laid out as the student stage's), or
    None when the run trained none."""
    return plain_twin(inputs, upstream, plan, PLAIN_STUDENT, STUDENT_KEY, STUDENT_NAME)


def compare_with_plain(
    adapted_logits: np.ndarray,
    plain_logits: np.ndarray,
    labels: np.ndarray,
    reference: str = REFERENCE,
) -> dict[str, Any]:
    """A model of the adapted teacher's run against its plain counterpart on the same test
    examples: both accuracies, the gain, and the paired test with its verdict sentence
    (``reference``: how it names the plain one)."""
    adapted_correct = np.asarray(adapted_logits).argmax(-1) == labels
    plain_correct = np.asarray(plain_logits).argmax(-1) == labels
    comparison = paired_comparison(adapted_correct, plain_correct)
    return {
        "adapted": float(adapted_correct.mean()),
        "plain": float(plain_correct.mean()),
        "gain": comparison["accuracy_difference"],
        "significance": {
            **comparison,
            "verdict": verdict_sentence(comparison, SUBJECT, reference),
        },
    }


def classification_adaptation(
    inputs: dict[str, Path],
    upstream: ReportInputs,
    plain: PlainTwin | None,
    student: PlainTwin | None = None,
) -> dict[str, Any] | None:
    """The report's ``adaptation`` section (None when the run did not adapt): the adapted
    teacher against ``plain``, the distilled student against ``student`` (the plain
    teacher's), each compared when the run trained it."""
    labels = upstream.test.labels
    comparison = (
        None if plain is None else compare_with_plain(upstream.teacher_logits, plain.logits, labels)
    )
    students = (
        None
        if student is None
        else compare_with_plain(upstream.student_logits, student.logits, labels, STUDENT_REFERENCE)
    )
    return adaptation_section(inputs, PRIMARY_METRIC, comparison, students)
