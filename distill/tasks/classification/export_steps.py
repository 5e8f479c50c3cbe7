"""Classification's part of the one export sequence (:mod:`distill.export.sequence`), for the
student, its variants and the teacher baseline alike: the PyTorch model loaded for parity,
the parity texts, test-split logits and their scores against the labels and fp32's, the
training texts that calibrate a static candidate, CLS pruning of the optimized graph, and a
static-embedding student's own fp32 graph and int8 table."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer

from distill.config import DataConfig, ExportConfig
from distill.errors import ArtifactError, DataError, ModelLoadError
from distill.export import onnx as onnx_utils
from distill.export.candidates import ACCURACY, Candidate
from distill.export.fusion import GraphRewrite
from distill.export.gate import Gate
from distill.export.sequence import EncoderExport, Scored
from distill.tasks.classification.files import Split, read_split
from distill.tasks.classification.metrics import classification_metrics
from distill.tasks.classification.models import load_saved_classifier
from distill.tasks.classification.pruning import prune_to_first_token
from distill.tasks.classification.static.onnx_graph import export_static, int8_table_graph

log = logging.getLogger("distill")

PARITY_EXAMPLES = 32
EVAL_BATCH_SIZE = 32
MODEL_CLASS = "AutoModelForSequenceClassification"
# export.cls_pruning: after its attention, the last layer of the optimized graph computes only
# the first token, the one the classification head reads (tasks/classification/pruning.py).
CLS_PRUNING = GraphRewrite("cls_pruning", "CLS pruning", prune_to_first_token)
# A static student's one int8 candidate: its graph is a table lookup, a mean and a head, so
# only the table is worth quantizing (export.candidates lists transformer candidates).
TABLE_CANDIDATE = Candidate(
    "int8-table",
    "table",
    optimized=False,
    quantize_embeddings=True,
    summary="int8 token table (symmetric, one scale per row), fp32 head",
)


def export_spec(
    data_dir: Path,
    test: Split,
    label_names: list[str],
    data: DataConfig,
    export: ExportConfig,
    seed: int,
    *,
    static: bool = False,
) -> EncoderExport:
    """What the export sequence needs of classification for one model (``static``: a
    static-embedding student, its fp32 graph written from its weights, its int8 a table)."""
    num_labels = len(label_names)

    def infer(path: Path, label: str, tokenizer: Any) -> np.ndarray:
        return test_logits(path, tokenizer, test, data.max_length, label)

    def evaluate(logits: np.ndarray) -> dict[str, Any]:
        return classification_metrics(logits, test.labels, num_labels)

    def compare(logits: np.ndarray, fp32: Scored) -> dict[str, Any]:
        scores = classification_metrics(logits, test.labels, num_labels, fp32.output)
        return {
            "accuracy": scores["accuracy"],
            "macro_f1": scores["macro_f1"],
            "agreement_with_fp32": scores["agreement"],
            "max_abs_logit_diff_vs_fp32": float(np.max(np.abs(logits - fp32.output))),
            "accuracy_drop": fp32.scores["accuracy"] - scores["accuracy"],
        }

    spec = EncoderExport(
        model_class=MODEL_CLASS,
        load=lambda model_dir, role: load_model(model_dir, label_names, data.max_length, role),
        parity_inputs=texts_for_parity(data_dir, test),
        timing_inputs=test.texts,
        infer=infer,
        evaluate=evaluate,
        compare=compare,
        measure=ACCURACY,
        gate=Gate("export.max_accuracy_drop", export.max_accuracy_drop),
        examples=f"{len(test)} test examples",
        max_length=data.max_length,
        rewrites=(CLS_PRUNING,) if export.cls_pruning else (),
        calibration=lambda: calibration_texts(data_dir, export.calibration_samples, seed),
    )
    if static:
        return dataclasses.replace(
            spec, export_fp32=lambda model, path: export_static(model, path), quantize=table_int8
        )
    return spec


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


def table_int8(candidate: Candidate, source: Path, save_dir: Path) -> tuple[Path, dict[str, Any]]:
    """A static student's int8-table candidate and its settings."""
    path = int8_table_graph(source, save_dir / "model_quantized.onnx")
    return path, {
        "candidate": candidate.name,
        "mode": "int8-table",
        "format": "int8 rows, one float32 scale per row (symmetric), fp32 head",
        "quantizer": "distill.tasks.classification.static.onnx_graph.int8_table_graph",
        "graph": "plain",
        "quantize_embeddings": True,
    }


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
