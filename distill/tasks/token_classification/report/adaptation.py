"""What domain adaptation bought the tagging teacher: the ``plain-teacher`` stage's row (the
same teacher fine-tuned without adaptation, same seed and budget), its word tags read from
its cached test logits through its own tokenizer as the teacher stage scores the teacher,
and the adapted teacher's entity micro-F1 against it, paired per test sentence (approximate
randomization and the bootstrap interval of
:func:`distill.report.significance.paired_f1_comparison`).

The section itself (the adapt stage's text and masked-LM figures around this comparison)
is :func:`distill.report.adaptation.adaptation_section`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.pipeline.artifacts import finished_manifest
from distill.report.adaptation import PLAIN_TEACHER, REFERENCE, SUBJECT, adaptation_section
from distill.report.rows import weights_bytes
from distill.report.significance import paired_f1_comparison, verdict_sentence
from distill.tasks.token_classification.logits import load_ragged
from distill.tasks.token_classification.metrics import aligned, entity_counts, tagging_metrics
from distill.tasks.token_classification.report.rows import scored_row
from distill.tasks.token_classification.report.significance import TEST
from distill.tasks.token_classification.training import logits_word_tags
from distill.train.models import load_tokenizer

KEY = "teacher_plain"
NAME = "Teacher (no adaptation)"
PRIMARY_METRIC = "entity_f1"


@dataclass
class PlainTeacher:
    """The plain twin's row in the main table and the comparison of the adapted teacher
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
) -> PlainTeacher | None:
    """The plain twin's row (scored against ``gold``, agreement with the adapted teacher's
    ``teacher_tags``; latency filled in by the report's timing run) and the paired
    comparison; None when the run trained no twin."""
    folder = inputs.get(PLAIN_TEACHER)
    if folder is None:
        return None
    manifest = finished_manifest(folder, PLAIN_TEACHER)
    tokenizer = load_tokenizer(str(folder / "model"), f"plain-teacher model {folder / 'model'}")
    logits = load_ragged(folder / "logits" / "test.npz", test.ids)
    plain_tags = logits_word_tags(tokenizer, test.tokens, logits, tag_names, max_length)
    gold, teacher_tags, plain_tags = aligned(gold, teacher_tags, plain_tags)
    parameters = ((manifest.get("metrics") or {}).get("parameters") or {}).get("total")
    row = scored_row(
        KEY,
        NAME,
        tagging_metrics(gold, plain_tags, teacher_tags),
        bytes=weights_bytes(folder / "model"),
        parameters=parameters,
    )
    return PlainTeacher(row=row, comparison=compare_with_plain(gold, teacher_tags, plain_tags))


def compare_with_plain(
    gold: list[list[str]], teacher_tags: list[list[str]], plain_tags: list[list[str]]
) -> dict[str, Any]:
    """The adapted teacher against its plain twin on the same test sentences (words both
    kept): both entity micro-F1s, the gain, and the paired test with its verdict."""
    comparison = paired_f1_comparison(
        entity_counts(gold, teacher_tags), entity_counts(gold, plain_tags)
    )
    sentence = verdict_sentence(
        comparison,
        SUBJECT,
        REFERENCE,
        difference="f1_difference",
        points="points of entity micro-F1",
        detail=(
            f"{comparison['f1_first']:.1%} vs {comparison['f1_second']:.1%} on "
            f"{comparison['examples']} test sentences"
        ),
        test=TEST,
    )
    return {
        "teacher": comparison["f1_first"],
        "plain_teacher": comparison["f1_second"],
        "gain": comparison["f1_difference"],
        "significance": {**comparison, "verdict": sentence},
    }


def tagging_adaptation(
    inputs: dict[str, Path], plain: PlainTeacher | None
) -> dict[str, Any] | None:
    """The report's ``adaptation`` section (None when the run did not adapt)."""
    return adaptation_section(inputs, PRIMARY_METRIC, None if plain is None else plain.comparison)
