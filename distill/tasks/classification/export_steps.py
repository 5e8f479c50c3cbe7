"""The steps of classification's export that the student's export and the teacher's
baseline export share: loading the PyTorch model for parity, the parity texts, graph
optimization, building and scoring one int8 candidate, and test-split inference."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer

from distill.config import DataConfig, ExportConfig
from distill.errors import ArtifactError, DataError, ModelLoadError
from distill.export import onnx as onnx_utils
from distill.export.candidates import Candidate, candidate_settings, dynamic_int8, optimize_for
from distill.tasks.classification.files import Split, read_split
from distill.tasks.classification.metrics import classification_metrics
from distill.tasks.classification.models import load_saved_classifier
from distill.tasks.classification.static.onnx_graph import int8_table_graph

log = logging.getLogger("distill")

PARITY_EXAMPLES = 32
EVAL_BATCH_SIZE = 32


# --------------------------------------------------------------------------- the student


def load_model(
    model_dir: Path, label_names: list[str], max_length: int, role: str = "student"
) -> tuple[Any, Any]:
    """The tokenizer and PyTorch model (for parity) of the student (or of the teacher, for
    its baseline export), checked against the data stage."""
    if not (model_dir / "config.json").is_file():
        raise ArtifactError(f"{model_dir}: no config.json; is the {role} stage complete?")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = load_saved_classifier(model_dir)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{model_dir}: cannot load the {role} model or tokenizer: {exc}"
        ) from exc
    if model.config.num_labels != len(label_names):
        raise ArtifactError(
            f"{model_dir}: the {role} has {model.config.num_labels} labels but the data stage "
            f"has {len(label_names)} ({label_names})"
        )
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise ModelLoadError(
            f"data.max_length = {max_length} exceeds the {role}'s {positions} position embeddings"
        )
    return tokenizer, model.eval()


def texts_for_parity(data_dir: Path, test: Split) -> list[str]:
    """Up to PARITY_EXAMPLES real texts: the validation split's, else the test split's."""
    validation = (
        read_split(data_dir, "validation") if (data_dir / "validation.jsonl").is_file() else None
    )
    texts = validation.texts if validation is not None and len(validation) else test.texts
    return texts[:PARITY_EXAMPLES]


# --------------------------------------------------------------------------- optimization


def optimized_graph(
    export: ExportConfig,
    wanted: list[Candidate],
    fp32_path: Path,
    work: Path,
    torch_model: Any,
    tokenizer: Any,
    parity_texts: list[str],
    data: DataConfig,
) -> tuple[Path | None, dict[str, Any]]:
    """The ORT-optimized graph when a ``wanted`` candidate is built on it (None otherwise, or
    when the model type has no transformer optimizer) and its settings, including its parity
    with PyTorch (ParityError beyond the tolerance)."""
    return optimize_for(
        wanted,
        fp32_path,
        work,
        level=export.optimization_level,
        cls_pruning=export.cls_pruning,
        torch_model=torch_model,
        tokenizer=tokenizer,
        texts=parity_texts,
        max_length=data.max_length,
        tolerance=export.parity_tolerance,
    )


# --------------------------------------------------------------------------- candidates


def build_candidate(
    candidate: Candidate,
    export: ExportConfig,
    *,
    fp32_path: Path,
    optimized_path: Path | None,
    optimization: dict[str, Any],
    work: Path,
    tokenizer: Any,
    test: Split,
    data_dir: Path,
    data: DataConfig,
    seed: int,
    fp32_logits: np.ndarray,
    fp32_accuracy: float,
    num_labels: int,
) -> tuple[dict[str, Any], Path | None, np.ndarray | None]:
    """Quantize one candidate and score it on the test split; a candidate whose quantizer
    fails is recorded with its error (and cannot be chosen) rather than failing the stage."""
    started = time.perf_counter()
    source = optimized_path if candidate.optimized else fp32_path
    assert source is not None
    record: dict[str, Any] = {"name": candidate.name, "description": candidate.describe()}
    try:
        path, settings = quantize_candidate(
            candidate, export, source, optimization, work, tokenizer, data_dir, data, seed
        )
    except Exception as exc:  # the quantizers raise anything from ValueError to RuntimeError
        log.warning("int8 candidate %s failed to build: %s", candidate.name, exc)
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record, None, None
    logits = test_logits(path, tokenizer, test, data.max_length, candidate.name)
    scores = classification_metrics(logits, test.labels, num_labels, fp32_logits)
    drop = fp32_accuracy - scores["accuracy"]
    record.update(
        {
            "settings": settings,
            "bytes": path.stat().st_size,
            "accuracy": scores["accuracy"],
            "macro_f1": scores["macro_f1"],
            "agreement_with_fp32": scores["agreement"],
            "max_abs_logit_diff_vs_fp32": float(np.max(np.abs(logits - fp32_logits))),
            "accuracy_drop": drop,
            "build_seconds": round(time.perf_counter() - started, 2),
        }
    )
    return record, path, logits


def quantize_candidate(
    candidate: Candidate,
    export: ExportConfig,
    source: Path,
    optimization: dict[str, Any],
    work: Path,
    tokenizer: Any,
    data_dir: Path,
    data: DataConfig,
    seed: int,
) -> tuple[Path, dict[str, Any]]:
    """The candidate's int8 file (with ``quantization.json`` beside it) and its settings."""
    save_dir = work / "candidates" / candidate.name
    if candidate.mode == "table":
        path = int8_table_graph(source, save_dir / "model_quantized.onnx")
        return path, {
            "candidate": candidate.name,
            "mode": "int8-table",
            "format": "int8 rows, one float32 scale per row (symmetric), fp32 head",
            "quantizer": "distill.tasks.classification.static.onnx_graph.int8_table_graph",
            "graph": "plain",
            "quantize_embeddings": True,
        }
    level = optimization.get("level", 0)
    if candidate.mode == "dynamic":
        return dynamic_int8(
            candidate,
            source,
            save_dir,
            per_channel=export.per_channel,
            reduce_range=export.reduce_range,
            level=level,
        )
    config = onnx_utils.quantization_config(
        "static", per_channel=export.per_channel, reduce_range=export.reduce_range
    )
    settings = candidate_settings(candidate, config, level)
    texts = calibration_texts(data_dir, export.calibration_samples, seed)
    features = onnx_utils.encode(
        tokenizer,
        texts,
        max_length=data.max_length,
        input_names=onnx_utils.graph_info(source)["input_names"],
        padding="max_length",
    )
    settings["quantizer"] = "onnxruntime.quantization.quantize_static"
    path = onnx_utils.quantize_static(
        source, save_dir, config, features, work_dir=work / "calibration" / candidate.name
    )
    settings["calibration"] = {"method": "minmax", "split": "train", "samples": len(texts)}
    return path, settings


def calibration_texts(data_dir: Path, count: int, seed: int) -> list[str]:
    """``count`` training texts drawn with the run's seed (all of them when fewer)."""
    train = read_split(data_dir, "train")
    if len(train) == 0:
        raise DataError(
            f"{data_dir / 'train.jsonl'}: no training texts to calibrate static quantization"
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train), size=min(count, len(train)), replace=False))
    return [train.texts[i] for i in chosen]


def test_logits(
    model_path: Path, tokenizer: Any, test: Split, max_length: int, name: str = "fp32"
) -> np.ndarray:
    """Test-split logits from an onnxruntime session (``name``: the model, for progress)."""
    return onnx_utils.predict_logits(
        model_path,
        tokenizer,
        test.texts,
        max_length=max_length,
        batch_size=EVAL_BATCH_SIZE,
        desc=f"export: {name} on the test split",
    )
