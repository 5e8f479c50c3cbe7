"""What the token-classification report concludes: each entity type, teacher against the
deployed student; the headline (F1 kept, size, speed, the distillation gain and the paired
test's sentence) and the warnings of anything below the memorization floor."""

from __future__ import annotations

from typing import Any


def per_type(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each entity type: teacher vs deployed student precision / recall / F1, with support."""
    by_key = {row["key"]: row.get("per_type") or {} for row in rows}
    teacher, deployed = by_key.get("teacher", {}), by_key.get("deployed", {})
    return [
        {
            "type": name,
            "support": teacher[name]["support"],
            "teacher": teacher[name],
            "deployed": deployed.get(name),
        }
        for name in sorted(teacher)
    ]


def headline(
    rows: list[dict[str, Any]], significance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The verdict in numbers and words (the paired test's sentence when there is a twin)."""
    by_key = {row["key"]: row for row in rows}
    teacher, deployed, floor = by_key["teacher"], by_key["deployed"], by_key["memorization"]
    student, twin = by_key["student"], by_key.get("student_no_kd")
    headline: dict[str, Any] = {
        "f1_kept": deployed.get("f1_kept"),
        "size_ratio": deployed.get("size_ratio"),
        "speedup": deployed.get("speedup"),
        "kd_gain": None if twin is None else student["entity_f1"] - twin["entity_f1"],
        "warnings": [
            f"{row['name']} ({row['entity_f1']:.1%} entity F1) is below the memorization floor ({floor['entity_f1']:.1%})"
            for row in (teacher, deployed)
            if row["entity_f1"] < floor["entity_f1"]
        ],
    }
    if significance is not None:
        headline["verdict"] = significance["verdict"]
    return headline
