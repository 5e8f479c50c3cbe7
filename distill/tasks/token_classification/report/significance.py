"""Whether distillation's entity-F1 gain over the no-KD twin is more than test-set luck: both
students' test tags (from the logits the student stage saved, read through each one's own
tokenizer) counted per sentence, then the paired approximate-randomization test and
bootstrap interval of :func:`distill.report.significance.paired_f1_comparison`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.data.ragged import load_ragged
from distill.report.significance import paired_f1_comparison, verdict_sentence
from distill.tasks.token_classification.metrics import aligned, entity_counts
from distill.tasks.token_classification.training import logits_word_tags
from distill.train.models import load_tokenizer

TEST = "approximate randomization"


def student_test_tags(
    folder: Path, test: Any, tag_names: list[str], max_length: int
) -> list[list[str]]:
    """A student's word tags on the test split: its saved logits, its tokenizer's word starts."""
    tokenizer = load_tokenizer(str(folder / "model"), f"student model {folder / 'model'}")
    logits = load_ragged(folder / "logits" / "test.npz", test.ids)
    return logits_word_tags(tokenizer, test.tokens, logits, tag_names, max_length)


def kd_significance(
    student_dir: Path, test: Any, tag_names: list[str], max_length: int
) -> dict[str, Any] | None:
    """The distilled student (``student_dir``) against its no-KD twin (``baseline/``), on the
    words both kept; None when the run trained no twin."""
    if not (student_dir / "baseline" / "logits" / "test.npz").is_file():
        return None
    gold = [[tag_names[t] for t in tags] for tags in test.tags]
    distilled = student_test_tags(student_dir, test, tag_names, max_length)
    twin = student_test_tags(student_dir / "baseline", test, tag_names, max_length)
    gold, distilled, twin = aligned(gold, distilled, twin)
    comparison = paired_f1_comparison(entity_counts(gold, distilled), entity_counts(gold, twin))
    sentence = verdict_sentence(
        comparison,
        difference="f1_difference",
        points="points of entity micro-F1",
        detail=(
            # Each student's own vocabulary may truncate a long sentence elsewhere: the
            # test scores the words both kept, which can differ from the rows in the last digit.
            f"{comparison['f1_first']:.1%} vs {comparison['f1_second']:.1%} on "
            f"{comparison['examples']} test sentences, the words both students kept"
        ),
        test=TEST,
    )
    return {**comparison, "verdict": sentence}
