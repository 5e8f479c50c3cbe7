"""What the report concludes, in numbers and in words: is distillation's gain significant,
how does the deployed student compare with the quantized teacher, is anything below the
TF-IDF floor. Built from the report's rows and cached predictions; no models are run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distill.report.ratios import times_faster, times_smaller
from distill.report.significance import paired_comparison, verdict_sentence

FLOOR_NAME = "TF-IDF + logistic-regression floor"


# Each twin of the student stage (its folder beside the distilled student): what the
# verdict credits for the distilled student's gain over it, and how it names the twin.
TWIN_VERDICTS = {
    "baseline": ("Distillation", "the same student trained without it"),
    "pseudo": (
        "Soft targets",
        "the same student trained on the same labelled and transfer text with the "
        "teacher's hard labels",
    ),
}


def kd_significance(
    student_logits: np.ndarray, twin_logits: np.ndarray, labels: np.ndarray, twin: str = "baseline"
) -> dict[str, Any]:
    """Distilled student vs one of its twins (``baseline``: no-KD; ``pseudo``: pseudo-label)
    on the same test examples (aligned by id by the caller): McNemar's exact p, the
    bootstrap interval, and the verdict sentence."""
    comparison = paired_comparison(
        np.asarray(student_logits).argmax(-1) == labels,
        np.asarray(twin_logits).argmax(-1) == labels,
    )
    return {**comparison, "verdict": verdict_sentence(comparison, *TWIN_VERDICTS[twin])}


def student_kd_significance(
    student_folder: Path,
    labels: np.ndarray,
    load: Callable[[Path], np.ndarray],
    twin: str = "baseline",
) -> dict[str, Any] | None:
    """:func:`kd_significance` of one student folder of the student stage (``logits/`` and
    ``<twin>/logits/``); None when it has no such twin."""
    twin_logits = student_folder / twin / "logits" / "test.npz"
    if not twin_logits.is_file():
        return None
    return kd_significance(
        load(student_folder / "logits" / "test.npz"), load(twin_logits), labels, twin
    )


def gain_decomposition(distilled: float, no_kd: float, pseudo: float) -> str:
    """In words, the distilled student's accuracy gain over its no-KD twin split in two:
    what the transfer text brought with hard labels alone (pseudo-label twin minus no-KD
    twin) and what the soft targets added beyond it (distilled minus pseudo-label twin)."""
    total, data, soft = distilled - no_kd, pseudo - no_kd, distilled - pseudo
    return (
        f"Of the {100 * total:+.1f} points the distilled student gained over its no-KD twin, "
        f"{100 * data:+.1f} come with the transfer text itself (the teacher's hard labels on "
        f"it, over the labelled examples alone) and {100 * soft:+.1f} from the soft targets "
        "(the distilled student over the pseudo-label twin, on the same examples)."
    )


def floor_warnings(
    rows: list[dict[str, Any]], students: list[dict[str, Any]] | None = None
) -> list[str]:
    """A sentence for the teacher, the deployed student and each student variant (as its
    bundle deploys it, from the report's ``students``) that does not beat the TF-IDF floor
    on accuracy (none without a floor)."""
    floor = next((r for r in rows if r["key"] == "tfidf"), None)
    if floor is None:
        return []
    measured = []
    for row in rows:
        if row["key"] == "teacher":
            measured.append((f"the teacher ({100 * row['accuracy']:.1f}%)", row["accuracy"], ""))
        elif row.get("deployed"):
            who = f"the deployed student ({row['name']}, {100 * row['accuracy']:.1f}%)"
            measured.append((who, row["accuracy"], ""))
    for student in students or []:
        if student["name"] == "main":  # the deployed student, above
            continue
        who = f"student variant {student['name']!r} ({100 * student['accuracy']:.1f}% as deployed)"
        # A student no better than a bag of words is not worth its bundle: say where to look.
        hint = ": no better than a bag of words; check its learning_rate and epochs"
        measured.append((who, student["accuracy"], hint))
    bar = floor["accuracy"]
    warnings = []
    for who, accuracy, hint in measured:
        if accuracy > bar:
            continue
        relation = "is below" if accuracy < bar else "only ties"
        warnings.append(
            f"Warning: {who} {relation} the {FLOOR_NAME} ({100 * bar:.1f}%) on test accuracy{hint}."
        )
    return warnings


def versus(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``row`` against ``reference``: how many times smaller and faster (p50), and the
    accuracy difference (None where a number is missing)."""
    return {
        "reference": reference["key"],
        "size_ratio": times_smaller(row, reference),
        "speedup": times_faster(row, reference),
        "accuracy_delta": row["accuracy"] - reference["accuracy"],
    }


def headline(
    rows: list[dict[str, Any]], students: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The report's first lines: the deployed model against the PyTorch teacher and against
    the teacher quantized the same way (int8, else fp32 ONNX), and the floor warnings (of
    the variants in ``students`` too)."""
    by_key = {r["key"]: r for r in rows}
    deployed = next((r for r in rows if r.get("deployed")), None)
    quantized = by_key.get("teacher_onnx_int8") or by_key.get("teacher_onnx_fp32")
    return {
        "deployed": deployed["key"] if deployed else None,
        "vs_teacher": versus(deployed, by_key["teacher"]) if deployed else None,
        "vs_quantized_teacher": versus(deployed, quantized) if deployed and quantized else None,
        "floor_warnings": floor_warnings(rows, students),
    }
