"""Stage `export` for causal LMs: ONNX with a KV cache, parity, int8, perplexity with ORT.

1. the student is exported with a KV cache (``torch.onnx.export(dynamo=True)``, one
   graph: the prompt with an empty past, then one token at a time); its logits are checked
   against PyTorch on a test text, on the first step and on a step fed from the cache
   (:class:`~distill.errors.ParityError` beyond ``export.parity_tolerance``);
2. int8 weight matmuls by ``export.quantization``: ``dynamic`` (ONNX Runtime's dynamic
   quantization) or ``weight-only`` (int8 blocks of 32, MatMulNBits: what LMs with outlier
   activations need), the embedding table in int8 either way;
3. test perplexity of both graphs, measured with onnxruntime;
4. int8 is deployed when its perplexity is within ``export.max_perplexity_increase`` of fp32
   (else fp32, or :class:`~distill.errors.AccuracyDropError` with ``export.require_int8``).

With ``export.teacher_baseline`` (default) the teacher goes the same way (KV-cache export,
parity, the same int8 quantization) and its test perplexity is measured with onnxruntime on
the same tokens: a baseline for the report (never gated or deployed), in ``teacher/``
(``model.onnx`` fp32 with the tokenizer and configs, ``int8/model_quantized.onnx``), so that "smaller"
and "faster" can be stated against the teacher's own int8 ONNX too.

Writes ``bundle/`` (published to ``export/<run>/``): ``model.onnx`` (deployed),
``fp32/model.onnx`` (only when int8 is deployed), the tokenizer, ``config.json``,
``generation_config.json``, ``quantization.json`` (the int8 settings, dynamic or
weight-only) and ``manifest.json``
(written last: every file with its role and sha256, the task, EOS ids, metrics). The bundle
runs with onnxruntime, tokenizers and numpy alone (`distill generate`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from distill.config import DataConfig, ExportConfig
from distill.errors import AccuracyDropError, DataError, ParityError
from distill.export.bundle import write_bundle_manifest
from distill.export.gate import Gate
from distill.export.sequence import baseline_skipped
from distill.pipeline.artifacts import RunContext, onnx_files
from distill.tasks.causal_lm.files import read_split
from distill.tasks.causal_lm.int8 import quantize_int8
from distill.tasks.causal_lm.onnx_export import (
    check_causal_parity,
    export_causal_lm,
    onnx_perplexity,
)
from distill.tasks.causal_lm.training import encode_texts, load_causal_lm, prepare_tokenizer
from distill.train.models import load_tokenizer

log = logging.getLogger("distill")

TEACHER_FOLDER = "teacher"


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, export: ExportConfig
) -> dict[str, Any]:
    """Export, check, quantize, score and gate the student into ``bundle/``, then
    (``export.teacher_baseline``) the teacher the same way into ``teacher/``."""
    started = time.perf_counter()
    model_dir = inputs["student"] / "model"
    test = read_split(inputs["data"], "test")
    if len(test) == 0:
        raise DataError(f"{inputs['data'] / 'test.jsonl'}: the test split is empty")
    tokenizer = prepare_tokenizer(load_tokenizer(str(model_dir), "student model"))
    sequences = encode_texts(tokenizer, test, data.max_length)
    with tempfile.TemporaryDirectory(prefix=".export-work-", dir=out) as tmp:
        work = Path(tmp)
        fp32_path = export_causal_lm(model_dir, work / "fp32", opset=export.opset)
        parity = _parity(fp32_path, model_dir, sequences, export, "student model")
        log.info("parity with PyTorch: %s", parity)
        fp32_scores = onnx_perplexity(fp32_path, sequences)
        int8_path, int8_scores = None, None
        if export.quantization != "none":
            int8_path = quantize_int8(fp32_path, work / "int8", export.quantization)
            int8_scores = onnx_perplexity(int8_path, sequences)
        increase, deployed = _gate(fp32_scores, int8_scores, export)
        bundle = out / "bundle"
        roles = _bundle_files(bundle, fp32_path, int8_path if deployed == "int8" else None)
        metrics: dict[str, Any] = {
            "parity_differences": parity,
            "parity_max_abs_diff": max(parity.values()),
            "parity_tolerance": export.parity_tolerance,
            "fp32_perplexity": fp32_scores["perplexity"],
            "int8_perplexity": None if int8_scores is None else int8_scores["perplexity"],
            "int8_perplexity_increase": increase,
            "test_tokens": fp32_scores["tokens"],
            "fp32_bytes": fp32_path.stat().st_size,
            "int8_bytes": None if int8_path is None else int8_path.stat().st_size,
            "deployed": deployed,
            "quantization": export.quantization,
            "deployed_bytes": (bundle / "model.onnx").stat().st_size,
            "max_length": data.max_length,
        }
        write_bundle_manifest(bundle, roles, _bundle_info(ctx.name, bundle, tokenizer, metrics))
    metrics["teacher_baseline"] = _teacher_baseline(inputs, sequences, out, export)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def _parity(
    fp32_path: Path, model_dir: Path, sequences: list[list[int]], export: ExportConfig, key: str
) -> dict[str, float]:
    """The graph's logits against PyTorch's on the longest test sequence (ParityError beyond
    ``export.parity_tolerance``)."""
    torch_model = load_causal_lm(model_dir, key).eval()
    return check_causal_parity(
        fp32_path, torch_model, max(sequences, key=len), tolerance=export.parity_tolerance
    )


def _gate(
    fp32_scores: dict[str, Any], int8_scores: dict[str, Any] | None, export: ExportConfig
) -> tuple[float | None, str]:
    """int8's relative perplexity increase and the precision to deploy: int8 when within
    ``export.max_perplexity_increase``, else fp32 (or AccuracyDropError with
    ``export.require_int8``)."""
    increase = (
        None if int8_scores is None else int8_scores["perplexity"] / fp32_scores["perplexity"] - 1
    )
    gate = Gate("export.max_perplexity_increase", export.max_perplexity_increase)
    passes = gate.passes(increase)
    if int8_scores is not None and not passes:
        assert increase is not None
        message = (
            f"int8 test perplexity {int8_scores['perplexity']:.3f} is "
            f"{100 * increase:.1f}% above fp32's {fp32_scores['perplexity']:.3f}, beyond "
            f"{gate.describe()}"
        )
        if export.require_int8:
            raise AccuracyDropError(message + " (export.require_int8 = true); not published")
        log.warning("%s: deploying fp32", message)
    return increase, "int8" if passes else "fp32"


def _bundle_files(bundle: Path, fp32_path: Path, int8_path: Path | None) -> dict[str, str]:
    """Copy the deployed graph (``int8_path``, else fp32), the fp32 reference beside int8, the
    quantizer's settings, the tokenizer and configs into ``bundle``; returns each file's role."""
    bundle.mkdir()
    roles: dict[str, str] = {}
    for item in sorted(fp32_path.parent.iterdir()):  # tokenizer, configs (not the graph)
        if item.is_file() and item.suffix != ".onnx" and not item.name.endswith("_data"):
            shutil.copy2(item, bundle / item.name)
            roles[item.name] = "tokenizer-or-config"
    if int8_path is None:
        shutil.copy2(fp32_path, bundle / "model.onnx")
        roles["model.onnx"] = "model"
        return roles
    shutil.copy2(int8_path, bundle / "model.onnx")
    (bundle / "fp32").mkdir()
    shutil.copy2(fp32_path, bundle / "fp32" / "model.onnx")
    roles.update({"model.onnx": "model", "fp32/model.onnx": "fp32-reference"})
    for name in ("ort_config.json", "quantization.json"):  # dynamic / weight-only
        if (int8_path.parent / name).is_file():
            shutil.copy2(int8_path.parent / name, bundle / name)
            roles[name] = "quantization-config"
    return roles


def _bundle_info(
    run_name: str, bundle: Path, tokenizer: Any, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The manifest's own keys (the generate runner reads the EOS ids and max_length)."""
    generation_config = bundle / "generation_config.json"
    eos = (
        json.loads(generation_config.read_text(encoding="utf-8")).get("eos_token_id")
        if generation_config.is_file()
        else tokenizer.eos_token_id
    )
    deployed = metrics["deployed"]
    return {
        "run": run_name,
        "student": "main",
        "task": "text-generation",
        "model": "model.onnx",
        "precision": deployed,
        "fp32_reference": "fp32/model.onnx" if deployed == "int8" else None,
        "eos_token_ids": eos if isinstance(eos, list) else [eos],
        "max_length": metrics["max_length"],
        "inputs": "input_ids, attention_mask, position_ids (when declared), "
        "past_key_values.N.key/value; outputs logits, present.N.key/value",
        "metrics": {
            k: metrics[k] for k in ("fp32_perplexity", "int8_perplexity", "parity_max_abs_diff")
        },
    }


def _teacher_baseline(
    inputs: dict[str, Path], sequences: list[list[int]], out: Path, export: ExportConfig
) -> dict[str, Any]:
    """The teacher through the student's export path, or why there is none."""
    skipped = baseline_skipped(export, inputs)
    if skipped is not None:
        return skipped
    log.info("exporting the teacher as a baseline (fp32 and int8 ONNX, KV cache)")
    try:
        return export_teacher(inputs["teacher"] / "model", sequences, out / TEACHER_FOLDER, export)
    except ParityError as exc:
        shutil.rmtree(out / TEACHER_FOLDER, ignore_errors=True)
        log.warning("teacher baseline dropped: %s", exc)
        return {"skipped": f"the teacher's ONNX export failed its parity check: {exc}"}


def export_teacher(
    teacher_dir: Path, sequences: list[list[int]], folder: Path, export: ExportConfig
) -> dict[str, Any]:
    """The teacher exported to ``folder/model.onnx`` (fp32, KV cache, parity checked as the
    student's) and ``folder/int8/model_quantized.onnx`` (the same int8 pass, unless
    ``export.quantization = "none"``), both scored on ``sequences`` (the student's test
    tokens: token-level KD means one tokenizer) with onnxruntime."""
    started = time.perf_counter()
    fp32_path = export_causal_lm(teacher_dir, folder, opset=export.opset)
    parity = _parity(fp32_path, teacher_dir, sequences, export, "teacher model")
    fp32_scores = onnx_perplexity(fp32_path, sequences)
    result: dict[str, Any] = {
        "parity_differences": parity,
        "fp32_model": fp32_path.relative_to(folder.parent).as_posix(),
        "fp32_perplexity": fp32_scores["perplexity"],
        "fp32_bytes": sum(f.stat().st_size for f in onnx_files(fp32_path)),
        "int8_model": None,
        "int8_perplexity": None,
        "int8_bytes": None,
        "test_tokens": fp32_scores["tokens"],
    }
    if export.quantization != "none":
        # Its own folder, under the quantizer's file name (external data, if any, refers to it).
        int8_path = quantize_int8(fp32_path, folder / "int8", export.quantization)
        int8_scores = onnx_perplexity(int8_path, sequences)
        result.update(
            int8_model=int8_path.relative_to(folder.parent).as_posix(),
            int8_perplexity=int8_scores["perplexity"],
            int8_bytes=sum(f.stat().st_size for f in onnx_files(int8_path)),
        )
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result
