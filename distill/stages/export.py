"""Export stage: student -> ONNX fp32 -> parity with PyTorch -> int8 -> accuracy gate -> bundle.

Writes into the stage folder:

``bundle/``
    the deployable folder (published to ``export/<run>/``): ``model.onnx`` (the deployed
    model: int8, or fp32 when ``export.quantization = "none"``), ``fp32/model_fp32.onnx`` (the
    fp32 reference, only when quantized), ``config.json``, ``ort_config.json`` (the
    quantizer's settings, when quantized), the tokenizer files, and ``manifest.json``
    (written last: every file with its role, sha256 and size, the label names, the
    tokenization, the graph's inputs, the quantization settings and the metrics).
``predictions/test_fp32.npz``, ``predictions/test_int8.npz``
    test-split logits keyed by example id (:func:`distill.dataset_files.save_logits`).

The student's PyTorch model is only used for the parity check; every metric is measured
with plain onnxruntime sessions, the way the bundle will be served.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from distill import onnx_utils
from distill.artifacts import RunContext
from distill.config import DataConfig, ExportConfig
from distill.dataset_files import Split, read_label_names, read_split, save_logits
from distill.errors import AccuracyDropError, ArtifactError, DataError, ModelLoadError
from distill.metrics import classification_metrics

log = logging.getLogger("distill")

PARITY_EXAMPLES = 32
EVAL_BATCH_SIZE = 32
LATENCY_RUNS = 30
# Float noise allowance when comparing an accuracy drop (a ratio of counts) with the gate.
_DROP_EPSILON = 1e-9


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, export: ExportConfig
) -> dict[str, Any]:
    model_dir = inputs["student"] / "model"
    data_dir = inputs["data"]
    label_names = read_label_names(data_dir)
    test = read_split(data_dir, "test")
    if len(test) == 0:
        raise DataError(f"{data_dir / 'test.jsonl'}: the test split is empty; nothing to evaluate")
    tokenizer, torch_model = _load_student(model_dir, label_names, data.max_length)

    with tempfile.TemporaryDirectory(prefix=".export-work-", dir=out) as tmp:
        work = Path(tmp)

        # 1. Export the fp32 ONNX graph.
        fp32_path = onnx_utils.export_onnx(model_dir, work / "fp32", opset=export.opset)
        graph = onnx_utils.graph_info(fp32_path)
        log.info(
            "exported %s (opset %s, inputs %s)",
            fp32_path.name,
            graph["opset"],
            graph["input_names"],
        )

        # 2. Parity: ONNX Runtime vs PyTorch on real texts, padded to max_length and dynamically.
        parity = onnx_utils.check_parity(
            fp32_path,
            torch_model,
            tokenizer,
            _parity_texts(data_dir, test),
            max_length=data.max_length,
            tolerance=export.parity_tolerance,
        )
        del torch_model
        log.info("parity with PyTorch: %s", parity)

        # 3. Quantize to int8 (or deploy fp32).
        int8_path, quantization = _quantize(
            export, fp32_path, work, tokenizer, data_dir, data, ctx.seed
        )

        # 4. Evaluate fp32 and int8 on the whole test split with onnxruntime.
        predictions = out / "predictions"
        predictions.mkdir()
        num_labels = len(label_names)
        fp32_logits = _evaluate(
            fp32_path, tokenizer, test, data.max_length, predictions / "test_fp32.npz"
        )
        fp32_scores = classification_metrics(fp32_logits, test.labels, num_labels)
        int8_scores: dict[str, Any] | None = None
        int8_vs_fp32: dict[str, float] = {}
        if int8_path is not None:
            int8_logits = _evaluate(
                int8_path, tokenizer, test, data.max_length, predictions / "test_int8.npz"
            )
            int8_scores = classification_metrics(int8_logits, test.labels, num_labels, fp32_logits)
            int8_vs_fp32 = {
                "int8_fp32_agreement": int8_scores["agreement"],
                "int8_fp32_max_abs_logit_diff": float(np.max(np.abs(int8_logits - fp32_logits))),
            }

        # 5. The accuracy gate.
        drop = 0.0 if int8_scores is None else fp32_scores["accuracy"] - int8_scores["accuracy"]
        if drop > export.max_accuracy_drop + _DROP_EPSILON:
            raise AccuracyDropError(
                f"int8 model accuracy {int8_scores['accuracy']:.4f} vs fp32 {fp32_scores['accuracy']:.4f} "
                f"on {len(test)} test examples: a drop of {drop:.4f}, more than "
                f"export.max_accuracy_drop = {export.max_accuracy_drop:g}; the model was not published "
                f"(raise export.max_accuracy_drop, or set export.quantization = 'static' or 'none')"
            )

        latency = _quick_latency(fp32_path, int8_path, tokenizer, test, data.max_length)
        metrics: dict[str, Any] = {
            "parity_max_abs_diff": max(parity.values()),
            "parity_differences": parity,
            "parity_tolerance": export.parity_tolerance,
            "fp32_accuracy": fp32_scores["accuracy"],
            "fp32_macro_f1": fp32_scores["macro_f1"],
            "int8_accuracy": None if int8_scores is None else int8_scores["accuracy"],
            "int8_macro_f1": None if int8_scores is None else int8_scores["macro_f1"],
            "accuracy_drop": None if int8_scores is None else drop,
            **int8_vs_fp32,
            "deployed": "fp32" if int8_path is None else "int8",
            "test_examples": len(test),
            "fp32_bytes": fp32_path.stat().st_size,
            "int8_bytes": None if int8_path is None else int8_path.stat().st_size,
            **latency,
            "quantization": quantization,
            "opset": graph["opset"],
            "input_names": graph["input_names"],
            "output_names": graph["output_names"],
            "max_length": data.max_length,
        }

        # 6. The bundle, its manifest last.
        bundle, roles = _assemble_bundle(out / "bundle", model_dir, tokenizer, fp32_path, int8_path)
        metrics["deployed_bytes"] = (bundle / "model.onnx").stat().st_size
        onnx_utils.write_bundle_manifest(
            bundle,
            roles,
            {
                "run": ctx.name,
                "task": "text-classification",
                "model": "model.onnx",
                "precision": metrics["deployed"],
                "fp32_reference": "fp32/model_fp32.onnx" if int8_path is not None else None,
                "labels": label_names,
                "max_length": data.max_length,
                "tokenization": {"truncation": True, "max_length": data.max_length},
                "input_names": graph["input_names"],
                "output_names": graph["output_names"],
                "opset": graph["opset"],
                "quantization": quantization,
                "metrics": {k: metrics[k] for k in _BUNDLE_METRICS},
            },
        )
    return metrics


_BUNDLE_METRICS = (
    "fp32_accuracy",
    "fp32_macro_f1",
    "int8_accuracy",
    "int8_macro_f1",
    "accuracy_drop",
    "parity_max_abs_diff",
    "parity_tolerance",
    "test_examples",
)


def _load_student(model_dir: Path, label_names: list[str], max_length: int) -> tuple[Any, Any]:
    """The student's tokenizer and PyTorch model (for parity), checked against the data stage."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (model_dir / "config.json").is_file():
        raise ArtifactError(f"{model_dir}: no config.json; is the student stage complete?")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{model_dir}: cannot load the student model or tokenizer: {exc}"
        ) from exc
    if model.config.num_labels != len(label_names):
        raise ArtifactError(
            f"{model_dir}: the student has {model.config.num_labels} labels but the data stage "
            f"has {len(label_names)} ({label_names})"
        )
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise ModelLoadError(
            f"data.max_length = {max_length} exceeds the student's {positions} position embeddings"
        )
    return tokenizer, model.eval()


def _parity_texts(data_dir: Path, test: Split) -> list[str]:
    """Up to PARITY_EXAMPLES real texts: the validation split's, else the test split's."""
    validation = (
        read_split(data_dir, "validation") if (data_dir / "validation.jsonl").is_file() else None
    )
    texts = validation.texts if validation is not None and len(validation) else test.texts
    return texts[:PARITY_EXAMPLES]


def _quantize(
    export: ExportConfig,
    fp32_path: Path,
    work: Path,
    tokenizer: Any,
    data_dir: Path,
    data: DataConfig,
    seed: int,
) -> tuple[Path | None, dict[str, Any]]:
    """The int8 model (None for "none") and its recorded settings."""
    if export.quantization == "none":
        return None, {"mode": "none"}
    config = onnx_utils.quantization_config(export.quantization)
    settings = onnx_utils.describe_quantization(config, export.quantization)
    if export.quantization == "dynamic":
        path = onnx_utils.quantize_dynamic(fp32_path, work / "int8", config)
    else:
        texts = _calibration_texts(data_dir, export.calibration_samples, seed)
        features = onnx_utils.encode(
            tokenizer,
            texts,
            max_length=data.max_length,
            input_names=onnx_utils.graph_info(fp32_path)["input_names"],
            padding="max_length",
        )
        path = onnx_utils.quantize_static(
            fp32_path, work / "int8", config, features, work_dir=work / "calib"
        )
        settings["calibration"] = {"method": "minmax", "split": "train", "samples": len(texts)}
    log.info("quantized (%s): %s", export.quantization, settings)
    return path, settings


def _calibration_texts(data_dir: Path, count: int, seed: int) -> list[str]:
    """``count`` training texts drawn with the run's seed (all of them when fewer)."""
    train = read_split(data_dir, "train")
    if len(train) == 0:
        raise DataError(
            f"{data_dir / 'train.jsonl'}: no training texts to calibrate static quantization"
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train), size=min(count, len(train)), replace=False))
    return [train.texts[i] for i in chosen]


def _evaluate(
    model_path: Path, tokenizer: Any, test: Split, max_length: int, save_to: Path
) -> np.ndarray:
    """Test-split logits from an onnxruntime session, saved keyed by example id."""
    logits = onnx_utils.predict_logits(
        model_path, tokenizer, test.texts, max_length=max_length, batch_size=EVAL_BATCH_SIZE
    )
    save_logits(save_to, test.ids, logits)
    return logits


def _quick_latency(
    fp32_path: Path, int8_path: Path | None, tokenizer: Any, test: Split, max_length: int
) -> dict[str, Any]:
    """Batch-1 median latency at max_length (a sanity check; the report stage measures properly)."""
    session = onnx_utils.make_session(fp32_path)
    feeds = onnx_utils.session_feeds(
        session, tokenizer, test.texts[:1], max_length=max_length, padding="max_length"
    )
    result: dict[str, Any] = {
        "latency_check": {
            "batch_size": 1,
            "seq_len": max_length,
            "threads": onnx_utils.SESSION_THREADS,
        },
        "fp32_latency_ms": onnx_utils.latency_ms(fp32_path, feeds, runs=LATENCY_RUNS),
        "int8_latency_ms": None,
    }
    if int8_path is not None:
        result["int8_latency_ms"] = onnx_utils.latency_ms(int8_path, feeds, runs=LATENCY_RUNS)
        if result["int8_latency_ms"] > result["fp32_latency_ms"]:
            log.warning(
                "int8 model slower than fp32 at batch 1 (%.2f vs %.2f ms median)",
                result["int8_latency_ms"],
                result["fp32_latency_ms"],
            )
    return result


def _assemble_bundle(
    bundle: Path, model_dir: Path, tokenizer: Any, fp32_path: Path, int8_path: Path | None
) -> tuple[Path, dict[str, str]]:
    """Copy the deployable files into ``bundle``; returns it with each file's role."""
    bundle.mkdir()
    roles: dict[str, str] = {}

    def place(source: Path, rel: str, role: str) -> None:
        target = bundle / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        roles[rel] = role

    if int8_path is None:
        place(fp32_path, "model.onnx", "fp32")
    else:
        place(int8_path, "model.onnx", "int8")
        place(fp32_path, "fp32/model_fp32.onnx", "fp32")
        place(int8_path.parent / "ort_config.json", "ort_config.json", "config")
    place(model_dir / "config.json", "config.json", "config")
    for written in tokenizer.save_pretrained(bundle):
        path = Path(written)
        if path.is_file():
            roles[path.relative_to(bundle).as_posix()] = "tokenizer"
    if not (bundle / "tokenizer.json").is_file():
        raise ModelLoadError(
            f"{model_dir}: the student's tokenizer has no fast version (tokenizer.json); "
            "the bundle needs one to be served without Python tokenizer code"
        )
    return bundle, roles
