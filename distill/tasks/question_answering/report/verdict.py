"""What the question-answering report concludes: whether distillation's F1 gain over the
no-KD twin is more than test-set luck (per-question SQuAD F1 of both students, paired:
approximate randomization and the bootstrap interval of
:func:`distill.report.significance.paired_score_comparison`), and the headline (F1 kept,
size, speed, that verdict, and warnings of a deployed student no better than answering
nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill.report.ratios import kept_sentence
from distill.report.significance import (
    RESAMPLES,
    SEED,
    paired_score_comparison,
    verdict_sentence,
)
from distill.tasks.question_answering.examples import Answer, QAExample
from distill.tasks.question_answering.metrics import question_scores

TEST = "approximate randomization"
POINTS = "points of F1"


def compare_f1(
    test: Sequence[QAExample],
    first: Sequence[Answer],
    second: Sequence[Answer],
    subject: str,
    reference: str,
) -> dict[str, Any]:
    """Two models' per-question F1 on the same test questions, paired: both means
    (``f1_first``, ``f1_second``), their difference (``f1_difference``), the paired test's
    figures and its ``verdict`` sentence (``subject`` against ``reference``)."""
    _, f1_first = question_scores(test, first)
    _, f1_second = question_scores(test, second)
    comparison = dict(paired_score_comparison(f1_first, f1_second, resamples=RESAMPLES, seed=SEED))
    comparison.update(
        examples=len(test),
        f1_first=float(f1_first.mean()),
        f1_second=float(f1_second.mean()),
        f1_difference=float(f1_first.mean() - f1_second.mean()),
    )
    comparison["verdict"] = verdict_sentence(
        comparison,
        subject,
        reference,
        difference="f1_difference",
        points=POINTS,
        detail=(
            f"F1 {comparison['f1_first']:.1%} vs {comparison['f1_second']:.1%} on "
            f"{comparison['examples']} test questions"
        ),
        test=TEST,
    )
    return comparison


def kd_significance(
    test: Sequence[QAExample], student: Sequence[Answer], twin: Sequence[Answer] | None
) -> dict[str, Any] | None:
    """The distilled student against its no-KD twin; None when the run trained no twin."""
    if twin is None:
        return None
    return compare_f1(test, student, twin, "Distillation", "the same student trained without it")


def no_answer_floor(test: Sequence[QAExample]) -> float | None:
    """The F1 of answering nothing to every question (the share of unanswerable ones); None
    when every question has an answer (SQuAD 1.1 data)."""
    unanswerable = sum(not e.answerable for e in test)
    return unanswerable / len(test) if unanswerable and test else None


# How far the teacher's int8 graph may answer better than the deployed student before the
# report says so (the export gate's default F1 drop).
BASELINE_MARGIN = 0.02


def headline(
    rows: list[dict[str, Any]],
    significance: dict[str, Any] | None,
    floor: float | None,
) -> dict[str, Any]:
    """The verdict in numbers and words: the deployed student's share of the teacher's F1,
    its size as a share of the teacher's bytes, how many times faster it answers at batch 1;
    the KD gain and the paired test's sentence when there is a twin; a warning for each of
    teacher and deployed student at or below the no-answer floor (``floor``), and one when
    the teacher's int8 graph answers better than the deployed student."""
    by_key = {row["key"]: row for row in rows}
    teacher, deployed, student = by_key["teacher"], by_key["deployed"], by_key["student"]
    twin = by_key.get("student_no_kd")
    result: dict[str, Any] = {
        "f1_kept": deployed.get("f1_kept"),
        "size_ratio": deployed.get("size_ratio"),
        "speedup": deployed.get("speedup"),
        "kd_gain": None if twin is None else student["f1"] - twin["f1"],
        "no_answer_floor": floor,
        "summary": summary_sentence(deployed),
        "warnings": [
            f"{row['name']} ({row['f1']:.1%} F1) is no better than answering nothing "
            f"({floor:.1%} F1: the share of unanswerable test questions)"
            for row in (teacher, deployed)
            if floor is not None and row["f1"] <= floor
        ],
    }
    baseline = by_key.get("teacher_onnx_int8")
    if baseline is not None and baseline["f1"] - deployed["f1"] > BASELINE_MARGIN:
        result["warnings"].append(baseline_warning(baseline, deployed))
    if significance is not None:
        result["verdict"] = significance["verdict"]
    return result


def baseline_warning(baseline: dict[str, Any], deployed: dict[str, Any]) -> str:
    """What a user gives up for the student's size and speed: the teacher in int8 (what
    they would try instead of distilling) answers better."""
    ratios = [
        f"{baseline['bytes'] / 1e6:.1f} MB" if baseline.get("bytes") else None,
        f"{baseline['speedup']:.2f}× faster" if baseline.get("speedup") else None,
    ]
    said = ", ".join(r for r in ratios if r)
    return (
        f"{baseline['name']} ({baseline['f1']:.1%} F1{', ' + said if said else ''}) answers "
        f"better than the deployed student ({deployed['f1']:.1%} F1): the student buys its "
        f"size and speed with {100 * (baseline['f1'] - deployed['f1']):.1f} points of F1"
    )


def summary_sentence(deployed: dict[str, Any]) -> str:
    """ "The deployed student keeps 93.1% of the teacher's F1 at 12.0% of its size, 6.20×
    faster at batch 1." (a figure not measured is left out)."""
    return kept_sentence(
        deployed.get("f1_kept"), "F1", deployed.get("size_ratio"), deployed.get("speedup")
    )
