"""The report's "teacher ONNX fp32 / int8" rows: the teacher as the export stage built it
through the student's export path (:mod:`distill.tasks.classification.stages.export_teacher`), scored from its
saved test predictions and timed in the report's interleaved run. A baseline, never the
deployed model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifacts import onnx_files, relative_path
from distill.report.timing import TimingPlan

FOLDER = "teacher"  # under the export stage folder


def teacher_onnx_rows(
    export_dir: Path,
    export_metrics: dict[str, Any],
    teacher_row: dict[str, Any],
    tokenizer: Callable[[], Any],
    load: Callable[[Path], np.ndarray],
    score: Callable[[np.ndarray], dict[str, Any]],
    plan: TimingPlan,
) -> tuple[list[dict[str, Any]], str | None]:
    """The teacher's ONNX rows (registered with ``plan`` for timing), or a note saying why
    there are none."""
    folder = export_dir / FOLDER
    info = export_metrics.get("teacher_baseline") or {}
    if not (folder / "model_fp32.onnx").is_file():
        why = info.get("skipped") or "the export stage did not export the teacher"
        return [], f"No quantized-teacher baseline rows: {why}."
    int8 = info.get("int8") or {}
    models = [("teacher_onnx_fp32", "Teacher ONNX fp32", "fp32", "fp32")]
    if (folder / "model_int8.onnx").is_file():
        precision = f"int8 ({int8['candidate']})" if int8.get("candidate") else "int8"
        models.append(("teacher_onnx_int8", "Teacher ONNX int8", "int8", precision))
    loaded_tokenizer = tokenizer()
    rows = []
    for key, name, suffix, precision in models:
        path = folder / f"model_{suffix}.onnx"
        plan.add_onnx(key, path, loaded_tokenizer)
        metrics = score(load(folder / "predictions" / f"test_{suffix}.npz"))
        row = onnx_row(key, name, precision, path, export_dir, like=teacher_row, metrics=metrics)
        row["baseline_of"] = "teacher"  # agreement here = with the PyTorch teacher
        rows.append(row)
    return rows, None


def onnx_row(
    key: str,
    name: str,
    precision: str,
    path: Path,
    base: Path,
    *,
    like: dict[str, Any],
    metrics: dict[str, Any],
    deployed: bool = False,
) -> dict[str, Any]:
    """One ONNX model's row (a student's or the teacher's): the parameters and architecture
    of the PyTorch row ``like``, its files (relative to ``base``) and ``metrics``; the
    latency is filled in after the interleaved run."""
    files = onnx_files(path)
    return {
        "key": key,
        "name": name,
        "kind": "transformer",
        "runtime": "onnxruntime",
        "precision": precision,
        "deployed": deployed,
        "parameters": like["parameters"],
        "architecture": like.get("architecture"),
        "bytes": sum(f.stat().st_size for f in files),
        "weight_files": [relative_path(f, base) for f in files],
        **metrics,
        "latency": None,
    }
