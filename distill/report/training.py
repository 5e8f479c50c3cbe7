"""What every task's report shows of a training stage, read from its manifest (and the
Trainer's log history beside it): the summary numbers, the curves, the wall time.

Shared by the report stages of all tasks (``distill/tasks/<task>/stages/report.py``); the
manifests themselves, their folders and weight files are :mod:`distill.pipeline.artifacts`'.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOG_HISTORY = "log_history.json"  # the Trainer's log, in the training stage's folder


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


def training_record(
    manifest: dict[str, Any], stage_dir: Path | None = None, curves: Sequence[str] = ()
) -> dict[str, Any]:
    """A training stage's report entry: its summary, the ``curves`` asked for (from the
    log history in ``stage_dir``; none asked, no ``curves`` entry) and its wall time."""
    record: dict[str, Any] = {"summary": training_summary(manifest)}
    if curves and stage_dir is not None:
        record["curves"] = log_curves(stage_dir / LOG_HISTORY, curves)
    record["wall_time_s"] = manifest.get("wall_time_s")
    return record


def log_curves(path: Path, keys: Sequence[str]) -> dict[str, list[list[float]]]:
    """Each of ``keys`` (``loss``, ``eval_loss``, ...) as [step, value] points from the
    Trainer's log history; a missing or unreadable log gives no curves."""
    curves: dict[str, list[list[float]]] = {}
    if not path.is_file():
        return curves
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        history = []
    for entry in history if isinstance(history, list) else []:
        if not isinstance(entry, dict) or "step" not in entry:
            continue
        for key in keys:
            value = entry.get(key)
            if isinstance(value, int | float):
                curves.setdefault(key, []).append([float(entry["step"]), float(value)])
    return curves
