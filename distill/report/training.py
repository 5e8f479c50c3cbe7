"""What every task's report stage reads the same way from the upstream stages' manifests.

Shared by the report stages of all tasks (``distill/tasks/<task>/stages/report.py``); the
manifests themselves, their folders and weight files are :mod:`distill.artifacts`'.
"""

from __future__ import annotations

from typing import Any


def training_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """Steps, epochs, train time, the budget's reason, whether validation loss was still
    falling at the end, and the validation/test metrics a training stage recorded."""
    metrics = manifest.get("metrics") or {}
    summary = {
        key: metrics.get(key)
        for key in ("steps", "epochs_run", "train_runtime_s", "still_improving")
        if metrics.get(key) is not None
    }
    if isinstance(metrics.get("budget"), dict):
        summary["budget"] = metrics["budget"].get("why")
    for split in ("validation", "test"):
        if isinstance(metrics.get(split), dict):
            summary[split] = metrics[split]
    return summary
