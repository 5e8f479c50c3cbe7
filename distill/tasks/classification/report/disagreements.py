"""The report's disagreements: test examples where the deployed student and the teacher
predict different labels, the student's mistakes first."""

from __future__ import annotations

from typing import Any

import numpy as np

from distill.tasks.classification.files import Split
from distill.tasks.classification.metrics import softmax

MAX_DISAGREEMENTS = 20
MAX_TEXT_CHARS = 500


def find_disagreements(
    test: Split,
    label_names: list[str],
    teacher_logits: np.ndarray,
    student_logits: np.ndarray,
    student_key: str,
    limit: int = MAX_DISAGREEMENTS,
) -> dict[str, Any]:
    """Test examples where the (deployed) student and the teacher predict different labels.

    The student's mistakes that the teacher got right come first, then examples both got
    wrong, then the student's corrections of the teacher; within each group the student's
    most confident predictions first. At most ``limit`` are kept (``total`` counts all);
    texts longer than ``MAX_TEXT_CHARS`` are cut.
    """
    teacher_probs = softmax(np.asarray(teacher_logits, dtype=np.float64))
    student_probs = softmax(np.asarray(student_logits, dtype=np.float64))
    teacher_pred = teacher_probs.argmax(axis=-1)
    student_pred = student_probs.argmax(axis=-1)
    rows = np.flatnonzero(teacher_pred != student_pred)
    gold = test.labels

    def category(i: int) -> str:
        if teacher_pred[i] == gold[i]:
            return "student wrong"
        if student_pred[i] == gold[i]:
            return "teacher wrong"
        return "both wrong"

    rank = {"student wrong": 0, "both wrong": 1, "teacher wrong": 2}
    ordered = sorted(
        (int(i) for i in rows),
        key=lambda i: (rank[category(i)], -student_probs[i, student_pred[i]], i),
    )
    counts = {name: 0 for name in rank}
    for i in rows:
        counts[category(int(i))] += 1

    def prediction(probs: np.ndarray, i: int, label: int) -> dict[str, Any]:
        return {
            "label": label_names[label],
            "probability": float(probs[i, label]),
            "probability_of_gold": float(probs[i, gold[i]]),
        }

    examples = []
    for i in ordered[:limit]:
        text = test.texts[i]
        examples.append(
            {
                "id": test.ids[i],
                "text": text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…",
                "text_truncated": len(text) > MAX_TEXT_CHARS,
                "gold": label_names[int(gold[i])],
                "category": category(i),
                "teacher": prediction(teacher_probs, i, int(teacher_pred[i])),
                "student": prediction(student_probs, i, int(student_pred[i])),
            }
        )
    return {
        "student": student_key,
        "reference": "teacher",
        "total": int(rows.size),
        "examples_in_test": len(test),
        "by_category": counts,
        "limit": limit,
        "examples": examples,
    }
