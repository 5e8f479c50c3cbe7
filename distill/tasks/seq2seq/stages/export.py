"""Stage `export` for seq2seq: the student to two ONNX graphs (an encoder, run once per
source, that also gives every decoder layer's cross-attention keys and values; a decoder
with a growing self-attention KV cache), parity with PyTorch (logits, and the same greedy
tokens), dynamic int8 of both graphs, both precisions scored on the test pairs as the bundle
serves them (the torch-free decoder of :mod:`distill.tasks.seq2seq.decoding`), and the one
gate on the BLEU drop (``export.max_bleu_drop``).

Writes ``bundle/`` (published to ``export/<run>/``): ``encoder.onnx`` and ``decoder.onnx``
(deployed precision), ``fp32/`` with the fp32 graphs when int8 is deployed, config.json,
generation_config.json, the fast tokenizer, ``quantization.json`` and manifest.json (last:
the task, the files, what the runner needs to serve: source_prefix, max_length,
max_target_length, num_beams, and the test metrics). With ``export.teacher_baseline`` the
teacher goes the same way into ``teacher/`` (``fp32/`` and ``int8/``), for the report.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from distill.config import DataConfig, ExportConfig, ReportConfig
from distill.errors import AccuracyDropError, DataError
from distill.export.bundle import write_bundle_manifest
from distill.export.gate import Gate
from distill.export.sequence import baseline_skipped
from distill.pipeline.artifacts import RunContext
from distill.tasks.seq2seq.files import read_split
from distill.tasks.seq2seq.runner import encode_sources
from distill.tasks.seq2seq.served import GRAPHS, ServedSettings, score_served
from distill.tasks.seq2seq.task import Seq2Seq

log = logging.getLogger("distill")

# Test sources whose logits and greedy tokens are compared with PyTorch's.
PARITY_SOURCES = 16
TEACHER_FOLDER = "teacher"


def run(
    ctx: RunContext,
    inputs: dict[str, Path],
    out: Path,
    *,
    data: DataConfig,
    export: ExportConfig,
    report: ReportConfig,
) -> dict[str, Any]:
    """Export, check, quantize, score and gate the student into ``bundle/``, then
    (``export.teacher_baseline``) the teacher the same way into ``teacher/``."""
    started = time.perf_counter()
    test = read_split(inputs["data"], "test")
    if len(test) == 0:
        raise DataError(f"{inputs['data'] / 'test.jsonl'}: the test split is empty")
    settings = ServedSettings.of(data, report)
    with tempfile.TemporaryDirectory(prefix=".export-work-", dir=out) as tmp:
        student = export_graphs(inputs["student"] / "model", Path(tmp), test, settings, export)
        deployed = _gate(student, export)
        roles = _bundle_files(out / "bundle", student, deployed)
        metrics = {**student, "deployed": deployed, "max_bleu_drop": export.max_bleu_drop}
        metrics["deployed_bytes"] = sum((out / "bundle" / g).stat().st_size for g in GRAPHS)
        info = {
            "task": Seq2Seq.bundle_task,
            "run": ctx.name,
            "model": "decoder.onnx",
            "encoder": "encoder.onnx",
            "precision": deployed,
            "fp32_reference": "fp32/" if deployed == "int8" else None,
            **settings.manifest(),
            "metrics": {"test": student[deployed]},
        }
        write_bundle_manifest(out / "bundle", roles, info)
    metrics["teacher_baseline"] = _teacher_baseline(inputs, out, test, settings, export)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def export_graphs(
    model_dir: Path, work: Path, test: Any, settings: ServedSettings, export: ExportConfig
) -> dict[str, Any]:
    """One model's graphs: fp32 exported and checked against PyTorch, int8 (unless
    ``export.quantization = "none"``), each scored on the test pairs as served."""
    from distill.tasks.seq2seq.models import load_seq2seq
    from distill.tasks.seq2seq.onnx_export import (
        check_seq2seq_parity,
        export_seq2seq,
        quantize_seq2seq,
    )

    fp32_dir = work / "fp32"
    export_seq2seq(model_dir, fp32_dir, opset=export.opset)
    fp32 = settings.load(fp32_dir)  # once: its tokenizer and graphs for parity and scoring
    parity = check_seq2seq_parity(
        fp32_dir,
        load_seq2seq(model_dir, "model").eval(),
        encode_sources(fp32, test.sources[:PARITY_SOURCES]),
        tolerance=export.parity_tolerance,
        max_new_tokens=settings.max_target_length,
        graphs=fp32.model,
    )
    log.info("parity with PyTorch: %s", parity)
    record: dict[str, Any] = {"parity": parity, "folders": {"fp32": fp32_dir}}
    record["fp32"] = score_served(fp32, test)
    if export.quantization != "none":
        int8_dir = work / "int8"
        quantize_seq2seq(fp32_dir, int8_dir)  # with the tokenizer and configs beside
        record["folders"]["int8"] = int8_dir
        record["int8"] = score_served(settings.load(int8_dir), test, reference=record["fp32"])
        record["int8"]["bleu_drop"] = record["fp32"]["bleu"] - record["int8"]["bleu"]
    for precision in ("fp32", "int8"):  # the outputs were for agreement; the report decodes
        record.get(precision, {}).pop("outputs", None)
    return record


def _gate(record: dict[str, Any], export: ExportConfig) -> str:
    """int8 when its BLEU drop is within ``export.max_bleu_drop``, else fp32 (or
    AccuracyDropError with ``export.require_int8``)."""
    if "int8" not in record:
        return "fp32"
    gate = Gate("export.max_bleu_drop", export.max_bleu_drop)
    drop = record["int8"]["bleu_drop"]
    if gate.passes(drop):
        return "int8"
    message = (
        f"int8 test BLEU {record['int8']['bleu']:.2f} is {drop:.2f} points below fp32's "
        f"{record['fp32']['bleu']:.2f}, beyond {gate.describe()}"
    )
    if export.require_int8:
        raise AccuracyDropError(message + " (export.require_int8 = true); not published")
    log.warning("%s: deploying fp32", message)
    return "fp32"


def _bundle_files(bundle: Path, record: dict[str, Any], deployed: str) -> dict[str, str]:
    """Copy the deployed graphs, the fp32 reference beside int8, the quantizer's settings,
    the tokenizer and configs into ``bundle``; returns each file's role."""
    folders = record.pop("folders")
    bundle.mkdir()
    roles: dict[str, str] = {}
    for item in sorted(folders[deployed].iterdir()):
        if item.is_file():
            shutil.copy2(item, bundle / item.name)
            roles[item.name] = "model" if item.suffix == ".onnx" else _support_role(item.name)
    if deployed == "int8":
        (bundle / "fp32").mkdir()
        for graph in GRAPHS:
            shutil.copy2(folders["fp32"] / graph, bundle / "fp32" / graph)
            roles[f"fp32/{graph}"] = "fp32-reference"
    return roles


def _support_role(name: str) -> str:
    return "quantization-config" if name == "quantization.json" else "tokenizer-or-config"


def _teacher_baseline(
    inputs: dict[str, Path], out: Path, test: Any, settings: ServedSettings, export: ExportConfig
) -> dict[str, Any]:
    """The teacher through the student's export path (fp32 and int8 kept in ``teacher/``
    for the report's timing), or why there is none."""
    skipped = baseline_skipped(export, inputs)
    if skipped is not None:
        return skipped
    log.info("exporting the teacher as a baseline (encoder and KV-cache decoder, fp32 and int8)")
    folder = out / TEACHER_FOLDER
    record = export_graphs(inputs["teacher"] / "model", folder, test, settings, export)
    record.pop("folders")
    for precision in ("fp32", "int8"):
        if precision in record:
            record[precision]["folder"] = f"{TEACHER_FOLDER}/{precision}"
            record[precision]["bytes"] = sum(
                (folder / precision / g).stat().st_size for g in GRAPHS
            )
    return record
