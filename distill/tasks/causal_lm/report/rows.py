"""The rows of the causal-LM report: the teacher and the students in PyTorch fp32 (test
perplexities from the upstream manifests), the student's fp32 and int8 ONNX files and the
teacher's own (``export.teacher_baseline``); sizes from the files on disk, speed filled in
after the timing run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.errors import ArtifactError
from distill.pipeline.artifacts import weight_files
from distill.report.rows import model_row, onnx_model_row


def deployed_files(
    bundle: Path, export_metrics: dict[str, Any], notes: list[str]
) -> tuple[str, Path, Path | None]:
    """Which ONNX file is which (the bundle's model.onnx is what ships): the deployed
    precision, the fp32 file and the int8 file (None when fp32 is deployed)."""
    deployed = export_metrics.get("deployed")
    if deployed not in ("int8", "fp32"):
        deployed = "int8" if (bundle / "fp32" / "model.onnx").is_file() else "fp32"
    fp32_path = bundle / "fp32" / "model.onnx" if deployed == "int8" else bundle / "model.onnx"
    int8_path = bundle / "model.onnx" if deployed == "int8" else None
    if deployed == "fp32":
        if export_metrics.get("int8_perplexity") is not None:
            notes.append(
                "The int8 model was measured (test perplexity "
                f"{export_metrics['int8_perplexity']:.4g}) but the fp32 model was deployed."
            )
        else:
            notes.append("export.quantization = none: there is no int8 model to report.")
    return deployed, fp32_path, int8_path


def onnx_row(
    key: str, name: str, precision: str, path: Path, pytorch_row: dict[str, Any], export_dir: Path
) -> dict[str, Any]:
    """An ONNX model's row: sizes of its files, the PyTorch row's parameters; no speed yet."""
    head = onnx_model_row(key, name, precision, path, export_dir, like=pytorch_row)
    return {
        **head,
        "perplexity": None,
        "validation_perplexity": None,
        "test_tokens": None,
        "speed": None,
    }


def student_onnx_rows(
    student_row: dict[str, Any],
    bundle: Path,
    export_dir: Path,
    export_metrics: dict[str, Any],
    *,
    fp32_path: Path,
    int8_path: Path | None,
) -> list[dict[str, Any]]:
    """The student's fp32 and (when built) int8 ONNX rows, the deployed one marked."""
    models = [("student_onnx_fp32", "Student ONNX fp32", "fp32", fp32_path, "fp32_perplexity")]
    if int8_path is not None:
        models.append(
            ("student_onnx_int8", "Student ONNX int8", "int8", int8_path, "int8_perplexity")
        )
    rows = []
    for key, name, precision, path, metric in models:
        row = onnx_row(key, name, precision, path, student_row, export_dir)
        row["deployed"] = path == bundle / "model.onnx"
        row["perplexity"] = number(export_metrics.get(metric))
        rows.append(row)
    return rows


def teacher_onnx_rows(
    teacher_row: dict[str, Any],
    teacher_onnx: dict[str, tuple[str, Path]],
    export_dir: Path,
    export_metrics: dict[str, Any],
) -> list[dict[str, Any]]:
    """The teacher's own ONNX rows (export.teacher_baseline), never deployed."""
    baseline = export_metrics.get("teacher_baseline") or {}
    rows = []
    for key, (precision, path) in teacher_onnx.items():
        row = onnx_row(key, f"Teacher ONNX {precision}", precision, path, teacher_row, export_dir)
        row["perplexity"] = number(baseline.get(f"{precision}_perplexity"))
        row["test_tokens"] = baseline.get("test_tokens")
        rows.append(row)
    return rows


def torch_row(
    key: str, name: str, model_dir: Path, model: Any, metrics: dict[str, Any]
) -> dict[str, Any]:
    """A PyTorch row: perplexities from the stage's metrics, size from its weight files,
    parameters counted on ``model`` (else the metrics' count), architecture from config.json."""
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model folder is missing")
    if model is not None:
        parameters: int | None = int(sum(p.numel() for p in model.parameters()))
    else:
        parameters = (metrics.get("parameters") or {}).get("total")
    head = model_row(
        key,
        name,
        runtime="pytorch",
        precision="fp32",
        parameters=parameters,
        architecture=_architecture(model_dir),
        files=weight_files(model_dir),
        base=model_dir.parent,
    )
    return {
        **head,
        "perplexity": number((metrics.get("test") or {}).get("perplexity")),
        "validation_perplexity": number((metrics.get("validation") or {}).get("perplexity")),
        "test_tokens": (metrics.get("test") or {}).get("tokens"),
        "speed": None,
    }


def _architecture(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read the model config: {exc}") from None
    return {
        "model_type": config.get("model_type"),
        "layers": config.get("num_hidden_layers"),
        "hidden_size": config.get("hidden_size"),
        "vocab_size": config.get("vocab_size"),
    }


def teacher_onnx(
    export_dir: Path, export_metrics: dict[str, Any], notes: list[str]
) -> dict[str, tuple[str, Path]]:
    """The teacher's ONNX files the export stage made (``export.teacher_baseline``):
    row key -> (precision, path); a note says why there are none."""
    baseline = export_metrics.get("teacher_baseline")
    if not baseline:
        notes.append("No teacher ONNX rows: the export stage made none (an older run).")
        return {}
    if "skipped" in baseline:
        notes.append(f"No teacher ONNX rows: {baseline['skipped']}.")
        return {}
    found = {}
    for precision in ("fp32", "int8"):
        relative = baseline.get(f"{precision}_model")
        if relative is None:
            continue
        path = export_dir / relative
        if not path.is_file():
            raise ArtifactError(f"{path}: the teacher's ONNX {precision} model is missing")
        found[f"teacher_onnx_{precision}"] = (precision, path)
    return found


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
