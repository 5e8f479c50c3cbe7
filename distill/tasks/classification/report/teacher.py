"""The report's "teacher ONNX fp32 / int8" rows: the teacher as the export stage built it
through the student's export path (:mod:`distill.tasks.classification.stages.export_teacher`), scored from its
saved test predictions and timed in the report's interleaved run. A baseline, never the
deployed model.
"""

from __future__ import annotations

from typing import Any

from distill.tasks.classification.report.inputs import ReportInputs, tokenizer
from distill.tasks.classification.report.rows import onnx_row
from distill.timing.latency import TimingPlan

FOLDER = "teacher"  # under the export stage folder


def teacher_onnx_rows(
    inputs: ReportInputs, teacher_row: dict[str, Any], plan: TimingPlan
) -> tuple[list[dict[str, Any]], str | None]:
    """The teacher's ONNX rows (registered with ``plan`` for timing), or a note saying why
    there are none."""
    export_dir = inputs.export_dir
    folder = export_dir / FOLDER
    info = (inputs.manifests["export"].get("metrics") or {}).get("teacher_baseline") or {}
    if not (folder / "model_fp32.onnx").is_file():
        why = info.get("skipped") or "the export stage did not export the teacher"
        return [], f"No quantized-teacher baseline rows: {why}."
    int8 = info.get("int8") or {}
    models = [("teacher_onnx_fp32", "Teacher ONNX fp32", "fp32", "fp32")]
    if (folder / "model_int8.onnx").is_file():
        precision = f"int8 ({int8['candidate']})" if int8.get("candidate") else "int8"
        models.append(("teacher_onnx_int8", "Teacher ONNX int8", "int8", precision))
    loaded_tokenizer = tokenizer(inputs.teacher_dir / "model")
    rows = []
    for key, name, suffix, precision in models:
        path = folder / f"model_{suffix}.onnx"
        plan.add_onnx(key, path, loaded_tokenizer)
        metrics = inputs.score(inputs.logits(folder / "predictions" / f"test_{suffix}.npz"))
        row = onnx_row(key, name, precision, path, export_dir, like=teacher_row, metrics=metrics)
        row["baseline_of"] = "teacher"  # agreement here = with the PyTorch teacher
        rows.append(row)
    return rows, None
