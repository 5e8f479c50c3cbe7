"""The teacher through the student's export path: the "why not just quantize the teacher?" row.

The export stage calls :func:`export_teacher` after the students (``export.teacher_baseline``,
on by default). The teacher goes through the very sequence the student does
(:func:`distill.export.sequence.export_model`): the fp32 ONNX export with the parity check
against PyTorch, then one int8 build with the candidate the primary student deployed (or,
when the student fell back to fp32, the recipe's first candidate; an optimized one built on
the plain graph when the model type has no optimizer), scored on the whole test split.
Nothing here is gated or deployed: the files are a baseline for the report.

Writes ``teacher/`` under the export stage folder: ``model_fp32.onnx``, ``model_int8.onnx``
(absent with ``export.quantization = "none"`` or when the build fails) and
``predictions/test_{fp32,int8}.npz`` (test logits keyed by example id).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import DataConfig, ExportConfig
from distill.data.files import load_logits, read_label_names, save_logits
from distill.errors import ArtifactError
from distill.export.sequence import Exported, export_model, teacher_wanted
from distill.tasks.classification.export_steps import export_spec
from distill.tasks.classification.files import Split
from distill.tasks.classification.metrics import classification_metrics

log = logging.getLogger("distill")

FOLDER = "teacher"


def export_teacher(
    teacher_dir: Path,
    data_dir: Path,
    test: Split,
    out: Path,
    data: DataConfig,
    export: ExportConfig,
    *,
    student_chosen: str | None,
    seed: int,
) -> dict[str, Any]:
    """Export, check, quantize (with the candidate the student deployed, else the recipe's
    first) and score the teacher into ``out``; returns its metrics."""
    label_names = read_label_names(data_dir)
    pytorch_logits = _pytorch_logits(teacher_dir, test)
    spec = export_spec(data_dir, test, label_names, data, export, seed)
    out.mkdir(parents=True)
    (out / "predictions").mkdir()
    with tempfile.TemporaryDirectory(prefix=".teacher-work-", dir=out) as tmp:
        exported = export_model(
            spec,
            teacher_dir / "model",
            Path(tmp),
            export,
            teacher_wanted(export, student_chosen),
            "teacher",
            plain_fallback=True,
        )
        save_logits(out / "predictions" / "test_fp32.npz", test.ids, exported.fp32.output)
        shutil.copyfile(exported.fp32_path, out / "model_fp32.onnx")
        metrics: dict[str, Any] = {
            "parity_max_abs_diff": max(exported.parity.values()),
            "fp32": _scores(
                exported.fp32.output, test, label_names, pytorch_logits, out / "model_fp32.onnx"
            ),
            "int8": None,
        }
        if exported.records:
            metrics["int8"] = _int8(exported, test, label_names, pytorch_logits, out)
    log.info(
        "teacher baseline: fp32 ONNX accuracy %.4f, int8 %s",
        metrics["fp32"]["accuracy"],
        "none" if not metrics["int8"] else metrics["int8"].get("accuracy"),
    )
    return metrics


def _int8(
    exported: Exported,
    test: Split,
    label_names: list[str],
    pytorch_logits: np.ndarray,
    out: Path,
) -> dict[str, Any]:
    """The teacher's one int8 candidate, its file and test logits written to ``out``."""
    record = exported.records[0]
    if record["name"] not in exported.built:
        return {"candidate": record["name"], "error": record.get("error")}
    path, logits = exported.built[record["name"]]
    save_logits(out / "predictions" / "test_int8.npz", test.ids, logits)
    shutil.copyfile(path, out / "model_int8.onnx")
    return {
        "candidate": record["name"],
        "description": record["description"],
        "settings": record["settings"],
        "accuracy_drop_vs_fp32": record["accuracy_drop"],
        "agreement_with_fp32": record["agreement_with_fp32"],
        **_scores(logits, test, label_names, pytorch_logits, out / "model_int8.onnx"),
    }


def _scores(
    logits: np.ndarray,
    test: Split,
    label_names: list[str],
    pytorch_logits: np.ndarray,
    path: Path,
) -> dict[str, Any]:
    scores = classification_metrics(
        logits, test.labels, len(label_names), reference_logits=pytorch_logits
    )
    return {
        "file": f"{FOLDER}/{path.name}",
        "bytes": path.stat().st_size,
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "agreement_with_pytorch": scores["agreement"],
    }


def _pytorch_logits(teacher_dir: Path, test: Split) -> np.ndarray:
    """The PyTorch teacher's cached test logits (what its ONNX builds should agree with)."""
    path = teacher_dir / "logits" / "test.npz"
    if not path.is_file():
        raise ArtifactError(f"{path}: the teacher's test logits are missing")
    try:
        return np.asarray(load_logits(path, test.ids)[1], dtype=np.float64)
    except KeyError as exc:
        raise ArtifactError(str(exc.args[0] if exc.args else exc)) from None
