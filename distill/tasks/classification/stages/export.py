"""Export stage: student -> ONNX fp32 -> parity -> graph optimization -> parity -> int8
candidates -> accuracy gate -> the fastest faithful one -> bundle.

1. ``torch.onnx.export(dynamo=True)`` writes the student's fp32 graph (the plain graph), checked against
   PyTorch on real texts (:class:`~distill.errors.ParityError` beyond
   ``export.parity_tolerance``);
2. when a candidate needs it, onnxscript's onnxruntime fusions (:mod:`distill.export.fusion`,
   ``export.optimization_level``) fuse the graph (Attention fed the padding mask,
   SkipLayerNormalization, BiasGelu; the counts recorded) and, with
   ``export.cls_pruning``, its last layer computes only the first token past its attention
   (:data:`~distill.tasks.classification.export_steps.CLS_PRUNING`); that graph is checked against PyTorch
   again, with the same tolerance;
3. every int8 candidate (:data:`distill.export.candidates.CANDIDATES`, chosen by
   ``export.candidates`` or by ``export.quantization``) is built, scored on the whole test
   split (accuracy, macro-F1, agreement with fp32), weighed and timed at batch 1 and
   ``max_length`` (all candidates and the fp32 graph interleaved, so noise hits them alike);
4. the fastest candidate whose accuracy drop vs fp32 is within ``export.max_accuracy_drop``
   is deployed (:func:`distill.export.candidates.choose_candidate`: p50s within
   ``LATENCY_TIE`` of the fastest count as a tie, settled by the smaller file, sizes within
   the same margin by agreement with fp32, then accuracy).
   When none qualifies the fp32 model is deployed and the metrics say why, or, with
   ``export.require_int8 = true``, :class:`~distill.errors.AccuracyDropError` is raised.

Writes into the stage folder:

``bundle/``
    the deployable folder (published to ``export/<run>/``): ``model.onnx`` (the deployed
    model: the chosen int8 candidate, or fp32), ``fp32/model_fp32.onnx`` (the fp32 reference
    as exported, only when int8 is deployed), ``config.json``, ``quantization.json``
    (the chosen candidate's quantization settings and graph optimization, plus the
    quantizer call), the tokenizer files, and ``manifest.json`` (written last:
    every file with its role, sha256 and size, the label names, the tokenization, the
    graph's inputs, the quantization settings, every candidate with its measurements,
    the chosen one and why, and the metrics).
``predictions/test_fp32.npz``, ``predictions/test_int8.npz``
    test-split logits keyed by example id (:func:`distill.data.files.save_logits`);
    int8 = the chosen candidate (absent when fp32 is deployed).
``teacher/``
    with ``export.teacher_baseline`` (default): the teacher through the same export, fp32
    and int8 with the student's candidate, and its test predictions; a baseline for the
    report, never deployed (:mod:`distill.tasks.classification.stages.export_teacher`).

Steps 1-5 are the one export sequence of :mod:`distill.export.sequence`, given
classification's part by :func:`distill.tasks.classification.export_steps.export_spec`; this
stage keeps its own files: the test predictions, the serving thread hint, the bundle's word
cache, model card and manifest fields. The student's PyTorch model is only used for the
parity checks; every metric is measured with plain onnxruntime sessions, the way the bundle
will be served.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from distill.config import DataConfig, ExportConfig
from distill.data.files import read_label_names, save_logits
from distill.errors import DataError
from distill.export import onnx as onnx_utils
from distill.export.bundle import FP32_REFERENCE, write_bundle_manifest
from distill.export.candidates import CANDIDATES, LATENCY_TIE, latency_check
from distill.export.sequence import (
    Choice,
    Exported,
    baseline_skipped,
    deploy,
    export_model,
    time_and_choose,
)
from distill.pipeline.artifacts import RunContext
from distill.serving.session import onnx_session
from distill.tasks.classification.export_steps import TABLE_CANDIDATE, export_spec
from distill.tasks.classification.fast_tokens import WORDS_FILE, frequent_chunks, write_words
from distill.tasks.classification.files import Split, read_split
from distill.tasks.classification.model_card import bundle_card
from distill.tasks.classification.static import is_static

log = logging.getLogger("distill")


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, export: ExportConfig
) -> dict[str, Any]:
    """Export the primary student into ``bundle/`` and each variant into ``variants/NAME/``."""
    data_dir = inputs["data"]
    test = read_split(data_dir, "test")
    if len(test) == 0:
        raise DataError(f"{data_dir / 'test.jsonl'}: the test split is empty; nothing to evaluate")
    metrics = export_student(ctx, inputs["student"] / "model", data_dir, test, out, data, export)
    variants = sorted(p.name for p in (inputs["student"] / "variants").glob("*") if p.is_dir())
    if variants:
        metrics["variants"] = {}
    for name in variants:
        log.info("exporting student variant %s", name)
        folder = out / "variants" / name
        folder.mkdir(parents=True)
        metrics["variants"][name] = export_student(
            ctx,
            inputs["student"] / "variants" / name / "model",
            data_dir,
            test,
            folder,
            data,
            export,
            variant=name,
        )
    metrics["teacher_baseline"] = _teacher_baseline(ctx, inputs, test, out, data, export, metrics)
    return metrics


def _teacher_baseline(
    ctx: RunContext,
    inputs: dict[str, Path],
    test: Split,
    out: Path,
    data: DataConfig,
    export: ExportConfig,
    student_metrics: dict[str, Any],
) -> dict[str, Any]:
    """The teacher through the same export sequence
    (:mod:`distill.tasks.classification.stages.export_teacher`), a baseline row for the
    report; or why there is none."""
    from distill.tasks.classification.stages import export_teacher

    skipped = baseline_skipped(export, inputs)
    if skipped is not None:
        return skipped
    log.info("exporting the teacher as a baseline")
    return export_teacher.export_teacher(
        inputs["teacher"],
        inputs["data"],
        test,
        out / export_teacher.FOLDER,
        data,
        export,
        student_chosen=student_metrics.get("chosen"),
        seed=ctx.seed,
    )


def export_student(
    ctx: RunContext,
    model_dir: Path,
    data_dir: Path,
    test: Split,
    out: Path,
    data: DataConfig,
    export: ExportConfig,
    variant: str | None = None,
) -> dict[str, Any]:
    """One student through the export sequence (:mod:`distill.export.sequence`): ONNX,
    parity, int8 candidates, the gate; writes ``out/bundle`` and ``out/predictions``;
    returns its metrics."""
    started = time.perf_counter()
    label_names = read_label_names(data_dir)
    static = is_static(model_dir)
    spec = export_spec(data_dir, test, label_names, data, export, ctx.seed, static=static)
    wanted = [CANDIDATES[name] for name in export.candidate_names()]
    if static:
        wanted = [TABLE_CANDIDATE] if wanted else []
    with tempfile.TemporaryDirectory(prefix=".export-work-", dir=out) as tmp:
        exported = export_model(spec, model_dir, Path(tmp), export, wanted, "student")
        choice = time_and_choose(spec, exported, export, time_fp32=True)
        predictions = out / "predictions"
        predictions.mkdir()
        save_logits(predictions / "test_fp32.npz", test.ids, exported.fp32.output)
        int8 = choice.int8(exported)
        if int8 is not None:
            save_logits(predictions / "test_int8.npz", test.ids, int8[1])
        metrics = _metrics(exported, choice, export, data, len(test))
        metrics["serving"] = serving_threads(
            exported.fp32_path if int8 is None else int8[0],
            exported.tokenizer,
            test,
            data.max_length,
            export.timing(),
        )
        # The bundle, its manifest last.
        _write_bundle(
            ctx,
            out,
            model_dir,
            exported,
            choice,
            export,
            data,
            metrics,
            label_names,
            variant,
            read_split(data_dir, "train").texts,
        )
        metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def _metrics(
    exported: Exported, choice: Choice, export: ExportConfig, data: DataConfig, examples: int
) -> dict[str, Any]:
    """What the stage manifest records of one student: parity, the optimized graph, fp32's
    and the deployed int8's scores, every candidate, the choice, sizes and timing."""
    record = choice.record(exported) or {}
    fp32, latency = exported.fp32.scores, choice.latency
    return {
        "parity_max_abs_diff": max(exported.parity.values()),
        "parity_differences": exported.parity,
        "parity_tolerance": export.parity_tolerance,
        "optimization": exported.optimization,
        "fp32_accuracy": fp32["accuracy"],
        "fp32_macro_f1": fp32["macro_f1"],
        "int8_accuracy": record.get("accuracy"),
        "int8_macro_f1": record.get("macro_f1"),
        "accuracy_drop": record.get("accuracy_drop"),
        "int8_fp32_agreement": record.get("agreement_with_fp32"),
        "int8_fp32_max_abs_logit_diff": record.get("max_abs_logit_diff_vs_fp32"),
        "deployed": "fp32" if choice.chosen is None else "int8",
        "chosen": choice.chosen,
        "chosen_reason": choice.reason,
        "candidates": exported.records,
        "test_examples": examples,
        "fp32_bytes": exported.fp32_path.stat().st_size,
        "int8_bytes": record.get("bytes"),
        "latency_check": latency_check(data.max_length, export.timing()),
        "fp32_latency": latency["fp32"],
        "fp32_latency_ms": latency["fp32"]["p50_ms"],
        "int8_latency_ms": None if choice.chosen is None else latency[choice.chosen]["p50_ms"],
        "quantization": record.get("settings", {"mode": "none"}),
        "opset": exported.graph["opset"],
        "input_names": exported.graph["input_names"],
        "output_names": exported.graph["output_names"],
        "max_length": data.max_length,
    }


def _write_bundle(
    ctx: RunContext,
    out: Path,
    model_dir: Path,
    exported: Exported,
    choice: Choice,
    export: ExportConfig,
    data: DataConfig,
    metrics: dict[str, Any],
    label_names: list[str],
    variant: str | None,
    train_texts: list[str],
) -> None:
    """``out/bundle``: the deployed files, the model card, and the manifest last."""
    bundle, roles = deploy(out / "bundle", model_dir, exported, choice, export.fp32_reference)
    int8_path = None if choice.chosen is None else exported.built[choice.chosen][0]
    # The domain's words, so the runner's word cache starts warm (classification/fast_tokens.py).
    write_words(bundle / WORDS_FILE, frequent_chunks(train_texts, min_count=1))
    roles[WORDS_FILE] = "tokenizer-cache"
    if int8_path is not None and not export.fp32_reference:  # kept for the report
        (out / FP32_REFERENCE).parent.mkdir()
        shutil.copyfile(exported.fp32_path, out / FP32_REFERENCE)
    metrics["deployed_bytes"] = (bundle / "model.onnx").stat().st_size
    info = {
        "run": ctx.name,
        "student": variant or "main",
        "task": "text-classification",
        "model": "model.onnx",
        "precision": metrics["deployed"],
        "fp32_reference": FP32_REFERENCE
        if int8_path is not None and export.fp32_reference
        else None,
        "labels": label_names,
        "max_length": data.max_length,
        "tokenization": {"truncation": True, "max_length": data.max_length},
        **{
            key: metrics[key]
            for key in ("input_names", "output_names", "opset", "quantization", "optimization")
        },
        "chosen": metrics["chosen"],
        "chosen_reason": metrics["chosen_reason"],
        "candidates": metrics["candidates"],
        "serving": metrics["serving"],
        "metrics": {k: metrics[k] for k in _BUNDLE_METRICS},
    }
    # The card an edge team reads first: what the model is, how faithful and fast it is.
    card = bundle_card(
        bundle,
        info,
        data_source=data.path,
        base_dir=ctx.recipe_dir,
        student_readme=model_dir / "README.md",
    )
    (bundle / "README.md").write_text(card, encoding="utf-8")
    roles["README.md"] = "model-card"
    write_bundle_manifest(bundle, roles, info)


_BUNDLE_METRICS = (
    "fp32_accuracy",
    "fp32_macro_f1",
    "int8_accuracy",
    "int8_macro_f1",
    "accuracy_drop",
    "parity_max_abs_diff",
    "parity_tolerance",
    "test_examples",
    "fp32_latency_ms",
    "int8_latency_ms",
)


def serving_threads(
    model_path: Path, tokenizer: Any, test: Split, max_length: int, timing: dict[str, int]
) -> dict[str, Any]:
    """The intra-op thread count (1 or SESSION_THREADS) at which the deployed model answered
    one text fastest here, interleaved at the test texts' own lengths (``timing``: runs,
    warmup and rounds, from export.latency_*): a hint the bundle
    runner follows unless told otherwise (on a tiny graph, such as a static student's, the
    thread pool costs more than it saves)."""
    from distill.timing.latency import interleaved_latency, onnx_call

    counts = sorted({1, onnx_utils.SESSION_THREADS})
    feeds = onnx_utils.encode(
        tokenizer,
        test.texts[:1],
        max_length=max_length,
        input_names=onnx_utils.graph_info(model_path)["input_names"],
    )
    stats = interleaved_latency(
        {str(n): onnx_call(onnx_session(model_path, n), feeds) for n in counts},
        **timing,
        desc="export: serving threads",
    )
    p50 = {n: stats[str(n)].to_dict()["p50_ms"] for n in counts}
    # Fewer threads unless more are clearly faster (beyond the tie margin).
    best = min(counts, key=lambda n: (p50[n] * (1 + LATENCY_TIE * (n > 1)), n))
    return {
        "threads": best,
        "p50_ms_by_threads": {str(n): p50[n] for n in counts},
        "measured": "batch 1, the first test text, interleaved",
    }
