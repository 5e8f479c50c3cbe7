"""The teacher through the student's export path: the "why not just quantize the teacher?" row.

The export stage calls :func:`export_teacher` after the students (``export.teacher_baseline``,
on by default). The teacher goes through the very steps the student does: the fp32
ONNX export with the parity check against PyTorch, then one int8 build with the candidate
the primary student deployed (or, when the student fell back to fp32, the recipe's first
candidate), scored on the whole test split. Nothing here is gated or deployed: the files
are a baseline for the report.

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
from distill.dataset_files import load_logits, read_label_names, save_logits
from distill.errors import ArtifactError
from distill.export import onnx as onnx_utils
from distill.export.candidates import CANDIDATES, Candidate
from distill.tasks.classification.export_steps import (
    build_candidate,
    load_model,
    optimized_graph,
    test_logits,
    texts_for_parity,
)
from distill.tasks.classification.files import Split
from distill.tasks.classification.metrics import classification_metrics
from distill.tasks.classification.task import SequenceClassification

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
    candidate_name: str | None,
    seed: int,
) -> dict[str, Any]:
    """Export, check, quantize and score the teacher into ``out``; returns its metrics."""
    label_names = read_label_names(data_dir)
    model_dir = teacher_dir / "model"
    pytorch_logits = _pytorch_logits(teacher_dir, test)
    tokenizer, torch_model = load_model(model_dir, label_names, data.max_length, role="teacher")
    out.mkdir(parents=True)
    (out / "predictions").mkdir()
    with tempfile.TemporaryDirectory(prefix=".teacher-work-", dir=out) as tmp:
        work = Path(tmp)
        fp32_path = onnx_utils.export_onnx(
            model_dir, work / "fp32", task=SequenceClassification.export_task, opset=export.opset
        )
        parity_texts = texts_for_parity(data_dir, test)
        parity = onnx_utils.check_parity(
            fp32_path,
            torch_model,
            tokenizer,
            parity_texts,
            max_length=data.max_length,
            tolerance=export.parity_tolerance,
        )
        candidate = CANDIDATES[candidate_name] if candidate_name else None
        optimized_path, optimization = None, {"level": 0}
        if candidate is not None and candidate.optimized:
            optimized_path, optimization = optimized_graph(
                export,
                [candidate],
                fp32_path,
                work,
                torch_model,
                tokenizer,
                parity_texts,
                data,
            )
            if optimized_path is None:  # no transformer optimizer for this model type
                candidate = CANDIDATES["dynamic"]
        del torch_model

        fp32_logits = test_logits(fp32_path, tokenizer, test, data.max_length, "teacher fp32")
        save_logits(out / "predictions" / "test_fp32.npz", test.ids, fp32_logits)
        shutil.copyfile(fp32_path, out / "model_fp32.onnx")
        metrics: dict[str, Any] = {
            "parity_max_abs_diff": max(parity.values()),
            "fp32": _scores(
                fp32_logits, test, label_names, pytorch_logits, out / "model_fp32.onnx"
            ),
            "int8": None,
        }
        if candidate is not None:
            metrics["int8"] = _int8(
                candidate,
                export,
                fp32_path=fp32_path,
                optimized_path=optimized_path,
                optimization=optimization,
                work=work,
                tokenizer=tokenizer,
                test=test,
                data_dir=data_dir,
                data=data,
                seed=seed,
                fp32_logits=fp32_logits,
                label_names=label_names,
                pytorch_logits=pytorch_logits,
                out=out,
            )
    log.info(
        "teacher baseline: fp32 ONNX accuracy %.4f, int8 %s",
        metrics["fp32"]["accuracy"],
        "none" if not metrics["int8"] else metrics["int8"].get("accuracy"),
    )
    return metrics


def _int8(
    candidate: Candidate,
    export: ExportConfig,
    *,
    label_names: list[str],
    pytorch_logits: np.ndarray,
    out: Path,
    fp32_logits: np.ndarray,
    test: Split,
    **build: Any,
) -> dict[str, Any]:
    """The teacher's int8 build with the student's candidate helper; written to ``out``."""
    record, path, logits = build_candidate(
        candidate,
        export,
        test=test,
        fp32_logits=fp32_logits,
        fp32_accuracy=classification_metrics(fp32_logits, test.labels, len(label_names))[
            "accuracy"
        ],
        num_labels=len(label_names),
        **build,
    )
    if path is None or logits is None:
        return {"candidate": candidate.name, "error": record.get("error")}
    save_logits(out / "predictions" / "test_int8.npz", test.ids, logits)
    shutil.copyfile(path, out / "model_int8.onnx")
    return {
        "candidate": candidate.name,
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
