"""The report's Distillation section: the student's settings and training examples, and
the distilled student against each twin the student stage trained (accuracy gain, the
paired test of whether it beats this test split's luck, the gain split in two)."""

from __future__ import annotations

from typing import Any

import numpy as np

from distill.tasks.classification.report.verdict import gain_decomposition, kd_significance


def training_examples(student_manifest: dict[str, Any]) -> dict[str, Any]:
    """How many labelled and transfer (teacher-labelled only) examples the student saw."""
    examples = (student_manifest.get("metrics") or {}).get("training_examples")
    if not examples:
        return {}
    return {
        "labelled training examples": examples.get("labelled"),
        "transfer examples (teacher soft targets only)": examples.get("transfer"),
    }


def distillation_section(
    student_manifest: dict[str, Any],
    by_key: dict[str, dict[str, Any]],
    student_logits: np.ndarray,
    twin_logits: dict[str, np.ndarray],
    labels: np.ndarray,
) -> dict[str, Any]:
    """The Distillation section: the settings, and the distilled student against each twin
    it has (accuracy gain, and the paired test of whether it beats this test split's luck)."""
    student_cfg = (student_manifest.get("config") or {}).get("student") or {}

    def gain(key: str) -> float | None:
        return by_key["student"]["accuracy"] - by_key[key]["accuracy"] if key in by_key else None

    def significance(twin: str) -> dict[str, Any] | None:
        if twin not in twin_logits:
            return None
        return kd_significance(student_logits, twin_logits[twin], labels, twin)

    both = {"student_no_kd", "student_pseudo"} <= by_key.keys()
    return {
        "settings": {
            key: student_cfg.get(key)
            for key in ("init", "num_layers", "layers", "temperature", "alpha")
            if key in student_cfg
        }
        | training_examples(student_manifest),
        # What the teacher bought (soft targets and transfer text): minus the no-KD twin.
        "accuracy_gain_over_no_kd": gain("student_no_kd"),
        "significance": significance("baseline"),
        # What the soft targets bought beyond the extra text: minus the pseudo-label twin.
        "accuracy_gain_over_pseudo_labels": gain("student_pseudo"),
        "soft_target_significance": significance("pseudo"),
        "gain_decomposition": gain_decomposition(
            *(by_key[k]["accuracy"] for k in ("student", "student_no_kd", "student_pseudo"))
        )
        if both
        else None,
    }
