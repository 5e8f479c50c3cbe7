"""What domain adaptation bought the tagging teacher and its student: the ``plain-teacher``
stage's row (the same teacher fine-tuned without adaptation, same seed and budget), its word
tags read from its cached test logits through its own tokenizer as the teacher stage scores
the teacher, and the adapted teacher's entity micro-F1 against it, paired per test sentence
(approximate randomization and the bootstrap interval of
:func:`distill.report.significance.paired_f1_comparison`). When the run also distilled a
student from the plain twin (the ``plain-student`` stage, laid out as the student stage's),
its row, scored the same way through that student's own tokenizer, and the distilled
student's entity micro-F1 against it, paired the same way.

The section itself (the adapt stage's text and masked-LM figures around these comparisons)
is :func:`distill.report.adaptation.adaptation_section`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.data.ragged import load_ragged
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
from distill.report.rows import weights_bytes
from distill.report.significance import paired_f1_comparison, verdict_sentence
from distill.tasks.token_classification.metrics import aligned, entity_counts, tagging_metrics
from distill.tasks.token_classification.report.rows import scored_row
from distill.tasks.token_classification.report.significance import TEST, student_test_tags
from distill.tasks.token_classification.training import logits_word_tags
from distill.train.models import load_tokenizer

KEY = "teacher_plain"
NAME = "Teacher (no adaptation)"
PRIMARY_METRIC = "entity_f1"


@dataclass
class PlainTwin:
    """A plain twin's row in the main table and the comparison of its adapted counterpart
    with it."""

    row: dict[str, Any]
    comparison: dict[str, Any]


def plain_teacher(
    inputs: dict[str, Path],
    test: Any,
    tag_names: list[str],
    max_length: int,
    gold: list[list[str]],
    teacher_tags: list[list[str]],
) -> PlainTwin | None:
    """The plain twin's row (scored against ``gold``, agreement with the adapted teacher's
    ``teacher_tags``; latency filled in by the report's timing run) and the paired
    comparison; None when the run trained no twin."""
    folder = inputs.get(PLAIN_TEACHER)
    if folder is None:
        return None
    finished_manifest(folder, PLAIN_TEACHER)
    tokenizer = load_tokenizer(str(folder / "model"), f"plain-teacher model {folder / 'model'}")
    logits = load_ragged(folder / "logits" / "test.npz", test.ids)
    plain_tags = logits_word_tags(tokenizer, test.tokens, logits, tag_names, max_length)
    gold, teacher_tags, plain_tags = aligned(gold, teacher_tags, plain_tags)
    row = _row(folder, PLAIN_TEACHER, KEY, NAME, gold, plain_tags, teacher_tags)
    detail = "test sentences"
    comparison = compare_with_plain(gold, teacher_tags, plain_tags, REFERENCE, detail)
    return PlainTwin(row=row, comparison=comparison)


def plain_student(
    inputs: dict[str, Path],
    test: Any,
    tag_names: list[str],
    max_length: int,
    gold: list[list[str]],
    teacher_tags: list[list[str]],
) -> PlainTwin | None:
    """The row of the student distilled from the plain twin (its test logits read through
    its own tokenizer, scored against ``gold``, agreement with ``teacher_tags``; latency
    filled in by the report's timing run) and the distilled student (``inputs["student"]``)
    against it, on the words both students kept (as the KD test pairs the students); None
    when the run trained no such student."""
    folder = inputs.get(PLAIN_STUDENT)
    if folder is None:
        return None
    finished_manifest(folder, PLAIN_STUDENT)
    plain_tags = student_test_tags(folder, test, tag_names, max_length)
    row = _row(
        folder, PLAIN_STUDENT, STUDENT_KEY, STUDENT_NAME, *aligned(gold, plain_tags, teacher_tags)
    )
    distilled = student_test_tags(inputs["student"], test, tag_names, max_length)
    every_word = [[tag_names[t] for t in tags] for tags in test.tags]
    paired = aligned(every_word, distilled, plain_tags)
    detail = "test sentences, the words both students kept"
    comparison = compare_with_plain(*paired, STUDENT_REFERENCE, detail)
    return PlainTwin(row=row, comparison=comparison)


def _row(
    folder: Path,
    stage: str,
    key: str,
    name: str,
    gold: list[list[str]],
    tags: list[list[str]],
    teacher_tags: list[list[str]],
) -> dict[str, Any]:
    """A plain twin's row: its scores, agreement with the teacher, size and parameters."""
    manifest = finished_manifest(folder, stage)
    parameters = ((manifest.get("metrics") or {}).get("parameters") or {}).get("total")
    return scored_row(
        key,
        name,
        tagging_metrics(gold, tags, teacher_tags),
        bytes=weights_bytes(folder / "model"),
        parameters=parameters,
    )


def compare_with_plain(
    gold: list[list[str]],
    adapted_tags: list[list[str]],
    plain_tags: list[list[str]],
    reference: str = REFERENCE,
    sentences: str = "test sentences",
) -> dict[str, Any]:
    """A model of the adapted teacher's run against its plain counterpart on the same test
    sentences (words both kept): both entity micro-F1s, the gain, and the paired test with
    its verdict (``reference``: how it names the plain one; ``sentences``: what it counts)."""
    comparison = paired_f1_comparison(
        entity_counts(gold, adapted_tags), entity_counts(gold, plain_tags)
    )
    sentence = verdict_sentence(
        comparison,
        SUBJECT,
        reference,
        difference="f1_difference",
        points="points of entity micro-F1",
        detail=(
            f"{comparison['f1_first']:.1%} vs {comparison['f1_second']:.1%} on "
            f"{comparison['examples']} {sentences}"
        ),
        test=TEST,
    )
    return {
        "adapted": comparison["f1_first"],
        "plain": comparison["f1_second"],
        "gain": comparison["f1_difference"],
        "significance": {**comparison, "verdict": sentence},
    }


def tagging_adaptation(
    inputs: dict[str, Path], plain: PlainTwin | None, student: PlainTwin | None = None
) -> dict[str, Any] | None:
    """The report's ``adaptation`` section (None when the run did not adapt)."""
    return adaptation_section(
        inputs,
        PRIMARY_METRIC,
        None if plain is None else plain.comparison,
        None if student is None else student.comparison,
    )
