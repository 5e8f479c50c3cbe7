"""The rows of the classification report's main table for the teacher and the students:
PyTorch rows (the teacher, the distilled student, its twins) with their size breakdown, and
the student's ONNX rows. Each timed model is registered with the report's
:class:`~distill.timing.latency.TimingPlan`; its latency is filled in after the interleaved run.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ArtifactError, ModelLoadError
from distill.export.bundle import FP32_REFERENCE
from distill.pipeline.artifacts import weight_files
from distill.report.rows import model_row, onnx_model_row
from distill.tasks.classification.models import load_saved_classifier
from distill.tasks.classification.report.inputs import ReportInputs, quantization, tokenizer
from distill.timing.latency import TimingPlan

# The student stage's twins the report has a row for: (folder, row key, row name).
TWIN_ROWS = (
    ("baseline", "student_no_kd", "Student without KD"),
    ("pseudo", "student_pseudo", "Student, teacher's hard labels on the transfer text"),
)


def pytorch_row(
    *,
    key: str,
    name: str,
    model_dir: Path,
    metrics: dict[str, Any],
    plan: TimingPlan | None,
) -> dict[str, Any]:
    """A PyTorch model's row; with ``plan``, the model is registered there to be timed (the
    row's latency is filled in after the interleaved run)."""
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model folder is missing")
    try:
        model = load_saved_classifier(model_dir)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{model_dir}: cannot load the model: {exc}") from None
    model.eval()
    parameters = int(sum(p.numel() for p in model.parameters()))
    model_config = model.config
    architecture = {
        "model_type": getattr(model_config, "model_type", None),
        "layers": getattr(model_config, "num_hidden_layers", None),
        "hidden_size": getattr(model_config, "hidden_size", None),
    }
    if plan is not None:
        plan.add_torch(key, model, tokenizer(model_dir))
    breakdown = size_breakdown(model)
    del model  # the plan keeps a timed model alive until it has run
    gc.collect()
    head = model_row(
        key,
        name,
        kind="transformer",
        runtime="pytorch",
        precision="fp32",
        parameters=parameters,
        architecture=architecture,
        files=weight_files(model_dir),
        base=model_dir.parent,
    )
    return {**head, **metrics, "latency": None, "size_breakdown": breakdown}


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
    head = onnx_model_row(
        key, name, precision, path, base, like=like, kind="transformer", deployed=deployed
    )
    return {**head, **metrics, "latency": None}


def twin_rows(inputs: ReportInputs) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The rows of the student stage's twins it trained (:data:`TWIN_ROWS`), and their test
    logits by twin folder (for the paired verdicts). Same architecture as the student: their
    latency would repeat the student's, so it is not re-measured; the rows are there to show
    what distillation itself gained."""
    logits: dict[str, np.ndarray] = {}
    rows = []
    for twin, key, name in TWIN_ROWS:
        logits_path = inputs.student_dir / twin / "logits" / "test.npz"
        model_dir = inputs.student_dir / twin / "model"
        if not (logits_path.is_file() and model_dir.is_dir()):
            continue
        logits[twin] = inputs.logits(logits_path)
        metrics = inputs.score(logits[twin])
        rows.append(
            pytorch_row(key=key, name=name, model_dir=model_dir, metrics=metrics, plan=None)
        )
    return logits, rows


def _student_onnx_models(
    inputs: ReportInputs, notes: list[str]
) -> list[tuple[str, str, str, Path, Path]]:
    """(key, name, precision, model file, cached predictions) of the student's ONNX models:
    fp32, and int8 unless fp32 was deployed (a note says so)."""
    export_dir = inputs.export_dir
    quantized = quantization(export_dir, inputs.manifests["export"])
    bundle = export_dir / "bundle"
    fp32_path = bundle / FP32_REFERENCE if quantized != "none" else bundle / "model.onnx"
    if not fp32_path.is_file():  # export.fp32_reference = false: kept beside the bundle
        fp32_path = export_dir / FP32_REFERENCE
    predictions = export_dir / "predictions"
    models = [
        ("student_onnx_fp32", "Student ONNX fp32", "fp32", fp32_path, predictions / "test_fp32.npz")
    ]
    if quantized != "none":
        models.append(
            (
                "student_onnx_int8",
                "Student ONNX int8",
                f"int8 ({quantized})",
                bundle / "model.onnx",
                predictions / "test_int8.npz",
            )
        )
    else:
        notes.append("export.quantization = none: there is no int8 model to report.")
    return models


def student_onnx_rows(
    inputs: ReportInputs, student_row: dict[str, Any], plan: TimingPlan, notes: list[str]
) -> tuple[list[dict[str, Any]], tuple[str, np.ndarray] | None]:
    """The student's ONNX rows (fp32, int8), registered with the timing plan, and the
    deployed one's test logits (key, logits)."""
    rows: list[dict[str, Any]] = []
    deployed_model = inputs.export_dir / "bundle" / "model.onnx"
    student_tokenizer = tokenizer(inputs.student_dir / "model")
    deployed_logits: tuple[str, np.ndarray] | None = None
    for key, name, precision, model_path, predictions in _student_onnx_models(inputs, notes):
        if not model_path.is_file():
            raise ArtifactError(f"{model_path}: the export stage's ONNX model is missing")
        logits = inputs.logits(predictions)
        if model_path == deployed_model:
            deployed_logits = (key, logits)
        row_metrics = inputs.score(logits)
        row_metrics["max_abs_logit_diff_vs_student"] = float(
            np.max(np.abs(logits - inputs.student_logits))
        )
        plan.add_onnx(key, model_path, student_tokenizer)
        rows.append(
            onnx_row(
                key,
                name,
                precision,
                model_path,
                inputs.export_dir,
                like=student_row,
                metrics=row_metrics,
                deployed=model_path == deployed_model,
            )
        )
    return rows, deployed_logits


def size_breakdown(model: Any) -> dict[str, Any]:
    """Parameters of the embeddings, the transformer layers and the rest (pooler + classifier).

    Parameters are attributed by name (any dotted component containing ``embed``, or
    GPT-style ``wte``/``wpe``) and by membership in the layer stack
    (:func:`distill.train.models.transformer_layers`); whatever is left is the head.
    """
    from distill.train.models import transformer_layers

    try:
        stack = transformer_layers(model)
    except ModelLoadError:
        stack = None
    in_stack = {id(p) for p in stack.parameters()} if stack is not None else set()
    totals = {"embeddings": 0, "encoder layers": 0, "head": 0}
    modules: dict[str, set[str]] = {name: set() for name in totals}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        if id(parameter) in in_stack:
            part = "encoder layers"
        elif any("embed" in p or p in ("wte", "wpe") for p in parts[:-1]):
            part = "embeddings"
        else:
            part = "head"
        totals[part] += int(parameter.numel())
        # The module path up to the first level that tells parts apart (bert.pooler, classifier).
        prefix = parts[:2] if len(parts) > 2 else parts[:1]
        modules[part].add(".".join(prefix))
    total = sum(totals.values())
    layers = len(stack) if stack is not None else 0
    return {
        "total_parameters": total,
        "parts": [
            {
                "part": part,
                "parameters": count,
                "share": count / total if total else None,
                "fp32_bytes": 4 * count,
                "modules": sorted(modules[part]),
                **(
                    {"layers": layers, "per_layer": count // layers if layers else None}
                    if part == "encoder layers"
                    else {}
                ),
            }
            for part, count in totals.items()
        ],
    }
