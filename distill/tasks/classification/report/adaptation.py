"""What domain adaptation bought the classification teacher: the ``plain-teacher`` stage's
row (the same teacher fine-tuned without adaptation, same seed and budget), scored from its
cached test logits like the teacher and timed in the report's interleaved run, and the
adapted teacher's accuracy against it, paired on the test split (McNemar's exact test and
the bootstrap interval of :func:`distill.report.significance.paired_comparison`).

The section itself (the adapt stage's text and masked-LM figures around this comparison)
is :func:`distill.report.adaptation.adaptation_section`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.pipeline.artifacts import finished_manifest
from distill.report.adaptation import PLAIN_TEACHER, REFERENCE, SUBJECT, adaptation_section
from distill.report.significance import paired_comparison, verdict_sentence
from distill.tasks.classification.report.floor import PRIMARY_METRIC
from distill.tasks.classification.report.inputs import ReportInputs
from distill.tasks.classification.report.rows import pytorch_row
from distill.timing.latency import TimingPlan

KEY = "teacher_plain"
NAME = "Teacher (no adaptation)"


@dataclass
class PlainTeacher:
    """The plain twin's row in the main table and its test logits (in test-split order)."""

    row: dict[str, Any]
    logits: np.ndarray


def plain_teacher(
    inputs: dict[str, Path], upstream: ReportInputs, plan: TimingPlan | None
) -> PlainTeacher | None:
    """The plain twin's row (registered with ``plan`` to be timed with the others), or None
    when the run trained none. An unfinished folder or missing logits are errors."""
    folder = inputs.get(PLAIN_TEACHER)
    if folder is None:
        return None
    finished_manifest(folder, PLAIN_TEACHER)
    logits = upstream.logits(folder / "logits" / "test.npz")
    row = pytorch_row(
        key=KEY,
        name=NAME,
        model_dir=folder / "model",
        metrics=upstream.score(logits),
        plan=plan,
    )
    return PlainTeacher(row=row, logits=logits)


def compare_with_plain(
    teacher_logits: np.ndarray, plain_logits: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """The adapted teacher against its plain twin on the same test examples: both
    accuracies, the gain, and the paired test with its verdict sentence."""
    teacher_correct = np.asarray(teacher_logits).argmax(-1) == labels
    plain_correct = np.asarray(plain_logits).argmax(-1) == labels
    comparison = paired_comparison(teacher_correct, plain_correct)
    return {
        "teacher": float(teacher_correct.mean()),
        "plain_teacher": float(plain_correct.mean()),
        "gain": comparison["accuracy_difference"],
        "significance": {
            **comparison,
            "verdict": verdict_sentence(comparison, SUBJECT, REFERENCE),
        },
    }


def classification_adaptation(
    inputs: dict[str, Path], upstream: ReportInputs, plain: PlainTeacher | None
) -> dict[str, Any] | None:
    """The report's ``adaptation`` section (None when the run did not adapt)."""
    comparison = (
        None
        if plain is None
        else compare_with_plain(upstream.teacher_logits, plain.logits, upstream.test.labels)
    )
    return adaptation_section(inputs, PRIMARY_METRIC, comparison)
