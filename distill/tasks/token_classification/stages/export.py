"""Stage `export` for tagging: the student to ONNX (optimum, ``token-classification``), parity
with PyTorch, dynamic int8, and the one gate on the entity micro-F1 drop (``export.max_f1_drop``).
The CLS-pruning and optimized candidates are not offered: every token's output is read.
With ``export.teacher_baseline`` the teacher goes the same way, scored on the test split.

Writes ``bundle/`` (published to ``export/<run>/``): ``model.onnx`` (deployed), the fp32
reference under ``fp32/`` when int8 is deployed, config.json (real tag names), the fast
tokenizer, and manifest.json (last): task, tags, max_length, aggregation, metrics.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from distill.artifacts import RunContext
from distill.config import DataConfig, ExportConfig
from distill.errors import AccuracyDropError
from distill.export import onnx as onnx_utils
from distill.export.bundle import assemble_bundle, write_bundle_manifest
from distill.export.gate import Gate
from distill.models import load_tokenizer
from distill.tasks.token_classification.files import TaggedSplit, read_tag_names, read_tagged_split
from distill.tasks.token_classification.metrics import tagging_metrics, word_tags
from distill.tasks.token_classification.models import load_saved_tagger
from distill.tasks.token_classification.onnx_tags import onnx_sentence_logits
from distill.tasks.token_classification.task import TokenClassification

log = logging.getLogger("distill")
PARITY_SENTENCES = 32


def score(
    model_path: Path,
    tokenizer: Any,
    test: TaggedSplit,
    tag_names: list[str],
    max_length: int,
    desc: str,
) -> dict[str, Any]:
    """Entity metrics of an ONNX graph on the test split (words cut by truncation excluded)."""
    logits, starts = onnx_sentence_logits(model_path, tokenizer, test.tokens, max_length, desc=desc)
    gold = [
        [tag_names[t] for t in tags[: len(s)]] for tags, s in zip(test.tags, starts, strict=True)
    ]
    return tagging_metrics(gold, word_tags(logits, starts, tag_names))


def export_model(
    model_dir: Path,
    work: Path,
    export: ExportConfig,
    test: TaggedSplit,
    tag_names: list[str],
    max_length: int,
    who: str,
) -> dict[str, Any]:
    """fp32 ONNX (parity-checked) and, unless quantization = 'none', dynamic int8; both scored."""
    tokenizer = load_tokenizer(str(model_dir), f"{who} model")
    fp32 = onnx_utils.export_onnx(
        model_dir, work / "fp32", task=TokenClassification.export_task, opset=export.opset
    )
    texts = [" ".join(words) for words in test.tokens[:PARITY_SENTENCES]]
    parity = onnx_utils.check_parity(
        fp32,
        load_saved_tagger(model_dir),
        tokenizer,
        texts,
        max_length=max_length,
        tolerance=export.parity_tolerance,
    )
    result: dict[str, Any] = {"fp32_path": fp32, "tokenizer": tokenizer, "parity": parity}
    result["fp32"] = score(fp32, tokenizer, test, tag_names, max_length, f"export: {who} fp32")
    result["fp32"]["bytes"] = fp32.stat().st_size
    if export.quantization == "dynamic":
        config = onnx_utils.quantization_config(
            "dynamic", per_channel=export.per_channel, reduce_range=export.reduce_range
        )
        int8 = onnx_utils.quantize_dynamic(fp32, work / "int8", config)
        result["int8_path"] = int8
        result["int8"] = score(int8, tokenizer, test, tag_names, max_length, f"export: {who} int8")
        result["int8"]["bytes"] = int8.stat().st_size
        result["int8"]["settings"] = onnx_utils.describe_quantization(config, "dynamic")
    return result


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, export: ExportConfig
) -> dict[str, Any]:
    tag_names = read_tag_names(inputs["data"])
    test = read_tagged_split(inputs["data"], "test")
    model_dir = inputs["student"] / "model"
    metrics: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="distill-export-") as scratch:
        work = Path(scratch)
        student = export_model(
            model_dir, work / "student", export, test, tag_names, data.max_length, "student"
        )
        deployed = _choose(student, export)
        int8 = student.get("int8_path") if deployed == "int8" else None
        bundle, roles = assemble_bundle(
            out / "bundle", model_dir, student["tokenizer"], student["fp32_path"], int8
        )
        metrics["student"] = _public(student)
        metrics["deployed"] = deployed
        metrics["deployed_bytes"] = (bundle / "model.onnx").stat().st_size
        if export.teacher_baseline:
            teacher = export_model(
                inputs["teacher"] / "model",
                work / "teacher",
                export,
                test,
                tag_names,
                data.max_length,
                "teacher",
            )
            metrics["teacher_baseline"] = _public(teacher)
            if "int8_path" in teacher:  # kept for the report's timing, beside the stage's files
                (out / "teacher_baseline").mkdir()
                shutil.copyfile(teacher["int8_path"], out / "teacher_baseline" / "model.onnx")
    write_bundle_manifest(
        bundle,
        roles,
        {
            "task": TokenClassification.bundle_task,
            "model": "model.onnx",
            "precision": deployed,
            "labels": tag_names,
            "max_length": data.max_length,
            "aggregation": "simple",
            "run": ctx.name,
            "metrics": {"test": metrics["student"][deployed]},
        },
    )
    return metrics


def _choose(exported: dict[str, Any], export: ExportConfig) -> str:
    """int8 when the gate passes its entity-F1 drop vs fp32, else fp32 (or an error)."""
    if "int8" not in exported:
        return "fp32"
    drop = exported["fp32"]["entity_f1"] - exported["int8"]["entity_f1"]
    exported["int8"]["entity_f1_drop"] = drop
    gate = Gate("export.max_f1_drop", export.max_f1_drop)
    if gate.passes(drop):
        return "int8"
    message = f"int8 entity F1 drops {drop:.4f} vs fp32, beyond {gate.describe()}"
    if export.require_int8:
        raise AccuracyDropError(message + " (export.require_int8 = true); not published")
    log.warning("%s: deploying fp32", message)
    return "fp32"


def _public(exported: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records: the scores and parity, not the paths and objects."""
    return {k: v for k, v in exported.items() if k in ("fp32", "int8", "parity")}
