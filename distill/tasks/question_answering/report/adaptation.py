"""What domain adaptation bought the QA teacher and its student: the ``plain-teacher``
stage's row (the same teacher fine-tuned without adaptation, same seed and budget) scored on
its saved test answers, and the adapted teacher's per-question F1 against it, paired
(:func:`~distill.tasks.question_answering.report.verdict.compare_f1`); when the run also
distilled a student from the plain twin (``plain-student``, laid out as the student stage's),
its row and the distilled student against it, paired the same way.

The section around these comparisons is :func:`distill.report.adaptation.adaptation_section`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.pipeline.artifacts import finished_manifest
from distill.report.adaptation import (
    PLAIN_TEACHER,
    REFERENCE,
    STUDENT_KEY,
    STUDENT_NAME,
    STUDENT_REFERENCE,
    SUBJECT,
    adaptation_section,
)
from distill.tasks.question_answering.examples import Answer, QAExample
from distill.tasks.question_answering.report.rows import pytorch_row, saved_answers
from distill.tasks.question_answering.report.verdict import compare_f1

KEY = "teacher_plain"
NAME = "Teacher (no adaptation)"
PRIMARY_METRIC = "f1"


@dataclass
class PlainTwin:
    """A plain twin's row in the main table and the comparison of its adapted counterpart
    with it."""

    row: dict[str, Any]
    comparison: dict[str, Any]


def plain_twin(
    inputs: dict[str, Path],
    stage: str,
    test: Sequence[QAExample],
    teacher: Sequence[Answer],
    adapted: Sequence[Answer],
) -> PlainTwin | None:
    """The row of the plain twin of ``stage`` (``plain-teacher`` or ``plain-student``; its
    agreement is with the adapted ``teacher``) and the paired comparison of its adapted
    counterpart's answers (``adapted``) with its own; None when the run trained none."""
    folder = inputs.get(stage)
    if folder is None:
        return None
    manifest = finished_manifest(folder, stage)
    key, name, reference = (
        (KEY, NAME, REFERENCE)
        if stage == PLAIN_TEACHER
        else (STUDENT_KEY, STUDENT_NAME, STUDENT_REFERENCE)
    )
    row = pytorch_row(key, name, folder, manifest.get("metrics") or {}, test, teacher)
    comparison = compare_f1(test, adapted, saved_answers(folder, test), SUBJECT, reference)
    return PlainTwin(
        row=row,
        comparison={
            "adapted": comparison["f1_first"],
            "plain": comparison["f1_second"],
            "gain": comparison["f1_difference"],
            "significance": comparison,
        },
    )


def qa_adaptation(
    inputs: dict[str, Path], plain: PlainTwin | None, student: PlainTwin | None
) -> dict[str, Any] | None:
    """The report's ``adaptation`` section (None when the run did not adapt)."""
    return adaptation_section(
        inputs,
        PRIMARY_METRIC,
        None if plain is None else plain.comparison,
        None if student is None else student.comparison,
    )
