"""Export stage: student -> ONNX fp32 -> parity -> graph optimization -> parity -> int8
candidates -> accuracy gate -> the fastest faithful one -> bundle.

1. ``torch.onnx.export(dynamo=True)`` writes the student's fp32 graph (the plain graph), checked against
   PyTorch on real texts (:class:`~distill.errors.ParityError` beyond
   ``export.parity_tolerance``);
2. when a candidate needs it, onnxscript's onnxruntime fusions (:mod:`distill.export.fusion`,
   ``export.optimization_level``) fuse the graph (Attention fed the padding mask,
   SkipLayerNormalization, BiasGelu; the counts recorded) and, with
   ``export.cls_pruning``, its last layer computes only the first token past its attention
   (:func:`distill.export.pruning.prune_to_first_token`); that graph is checked against PyTorch
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
    test-split logits keyed by example id (:func:`distill.dataset_files.save_logits`);
    int8 = the chosen candidate (absent when fp32 is deployed).
``teacher/``
    with ``export.teacher_baseline`` (default): the teacher through the same export, fp32
    and int8 with the student's candidate, and its test predictions; a baseline for the
    report, never deployed (:mod:`distill.tasks.classification.stages.export_teacher`).

The student's PyTorch model is only used for the parity checks; every metric is measured
with plain onnxruntime sessions, the way the bundle will be served.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifacts import RunContext
from distill.config import DataConfig, ExportConfig
from distill.dataset_files import Split, read_label_names, read_split, save_logits
from distill.errors import AccuracyDropError, DataError
from distill.export import onnx as onnx_utils
from distill.export.bundle import FP32_REFERENCE, assemble_bundle, write_bundle_manifest
from distill.export.candidates import (
    CANDIDATES,
    LATENCY_TIE,
    Candidate,
    candidates_line,
    choose_candidate,
    latency_check,
    teacher_candidate,
    time_models,
)
from distill.export.gate import Gate
from distill.fast_tokens import WORDS_FILE, frequent_chunks, write_words
from distill.onnx_session import onnx_session
from distill.progress import track
from distill.tasks.classification.export_steps import (
    build_candidate,
    load_model,
    optimized_graph,
    test_logits,
    texts_for_parity,
)
from distill.tasks.classification.metrics import classification_metrics
from distill.tasks.classification.model_card import bundle_card
from distill.tasks.classification.static import is_static
from distill.tasks.classification.static.onnx_graph import export_static
from distill.tasks.classification.task import SequenceClassification

log = logging.getLogger("distill")


# A static student's one int8 candidate: its graph is a table lookup, a mean and a head, so
# only the table is worth quantizing (export.candidates lists transformer candidates).
TABLE_CANDIDATE = Candidate("int8-table", "table", optimized=False, quantize_embeddings=True)


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
    """The teacher through the same export path (:mod:`distill.tasks.classification.stages.export_teacher`), a
    baseline row for the report; or why there is none."""
    from distill.tasks.classification.stages import export_teacher

    if not export.teacher_baseline:
        return {"skipped": "export.teacher_baseline = false"}
    if "teacher" not in inputs:  # a stage called without its teacher (tests of the student path)
        return {"skipped": "no teacher stage among the inputs"}
    log.info("exporting the teacher as a baseline")
    return export_teacher.export_teacher(
        inputs["teacher"],
        inputs["data"],
        test,
        out / export_teacher.FOLDER,
        data,
        export,
        candidate_name=teacher_candidate(export.candidate_names(), student_metrics.get("chosen")),
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
    """One student: ONNX, parity, int8 candidates, the gate; writes ``out/bundle`` and
    ``out/predictions``; returns its metrics."""
    started = time.perf_counter()
    label_names = read_label_names(data_dir)
    tokenizer, torch_model = load_model(model_dir, label_names, data.max_length)
    static = is_static(model_dir)
    wanted = [CANDIDATES[name] for name in export.candidate_names()]
    if static:
        wanted = [TABLE_CANDIDATE] if wanted else []

    with tempfile.TemporaryDirectory(prefix=".export-work-", dir=out) as tmp:
        work = Path(tmp)

        # 1. Export the fp32 ONNX graph (torch.onnx dynamo; a static student's is written
        # from its weights) and check it against PyTorch.
        fp32_path = (
            export_static(torch_model, work / "fp32" / "model.onnx")
            if static
            else onnx_utils.export_onnx(
                model_dir,
                work / "fp32",
                task=SequenceClassification.export_task,
                opset=export.opset,
            )
        )
        graph = onnx_utils.graph_info(fp32_path)
        log.info(
            "exported %s (opset %s, inputs %s)",
            fp32_path.name,
            graph["opset"],
            graph["input_names"],
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
        log.info("parity with PyTorch: %s", parity)

        # 2. Graph optimization, checked against PyTorch with the same tolerance.
        optimized_path, optimization = optimized_graph(
            export, wanted, fp32_path, work, torch_model, tokenizer, parity_texts, data
        )
        if optimized_path is None:
            wanted = [c for c in wanted if not c.optimized]
        del torch_model

        # 3. fp32 on the whole test split.
        predictions = out / "predictions"
        predictions.mkdir()
        num_labels = len(label_names)
        fp32_logits = test_logits(fp32_path, tokenizer, test, data.max_length)
        save_logits(predictions / "test_fp32.npz", test.ids, fp32_logits)
        fp32_scores = classification_metrics(fp32_logits, test.labels, num_labels)

        # 4. Every int8 candidate: build, score, weigh; then time them all together.
        built: dict[str, tuple[Path, np.ndarray]] = {}
        records: list[dict[str, Any]] = []
        for candidate in track(wanted, desc="export: int8 candidates", unit="candidate"):
            record, path, logits = build_candidate(
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
                seed=ctx.seed,
                fp32_logits=fp32_logits,
                fp32_accuracy=fp32_scores["accuracy"],
                num_labels=num_labels,
            )
            records.append(record)
            if path is not None and logits is not None:
                built[candidate.name] = (path, logits)
        latency = time_models(
            {"fp32": fp32_path, **{name: path for name, (path, _) in built.items()}},
            tokenizer,
            test.texts,
            data.max_length,
            **export.timing(),
        )
        for record in records:
            if record["name"] in latency:
                record["latency_b1"] = latency[record["name"]]
                record["speedup_vs_fp32"] = (
                    latency["fp32"]["p50_ms"] / record["latency_b1"]["p50_ms"]
                )

        # 5. The gate and the choice.
        chosen, reason = choose_candidate(
            records, Gate("export.max_accuracy_drop", export.max_accuracy_drop)
        )
        log.info("int8 candidates: %s", candidates_line(records))
        log.info("deployed: %s (%s)", chosen or "fp32", reason)
        if chosen is None and records and export.require_int8:
            raise AccuracyDropError(
                f"no int8 candidate was built with an accuracy within export.max_accuracy_drop = "
                f"{export.max_accuracy_drop:g} of fp32 ({fp32_scores['accuracy']:.4f} on "
                f"{len(test)} test examples): {candidates_line(records)}; the model was not "
                "published (export.require_int8 = true; raise export.max_accuracy_drop, try "
                "other export.candidates, or allow an fp32 fallback)"
            )
        int8_path, int8_logits, chosen_record = None, None, None
        if chosen is not None:
            int8_path, int8_logits = built[chosen]
            chosen_record = next(r for r in records if r["name"] == chosen)
            save_logits(predictions / "test_int8.npz", test.ids, int8_logits)
            if latency[chosen]["p50_ms"] > latency["fp32"]["p50_ms"]:
                log.warning(
                    "the chosen int8 model is slower than fp32 at batch 1 (%.2f vs %.2f ms p50)",
                    latency[chosen]["p50_ms"],
                    latency["fp32"]["p50_ms"],
                )

        quantization = chosen_record["settings"] if chosen_record is not None else {"mode": "none"}
        metrics: dict[str, Any] = {
            "parity_max_abs_diff": max(parity.values()),
            "parity_differences": parity,
            "parity_tolerance": export.parity_tolerance,
            "optimization": optimization,
            "fp32_accuracy": fp32_scores["accuracy"],
            "fp32_macro_f1": fp32_scores["macro_f1"],
            "int8_accuracy": None if chosen_record is None else chosen_record["accuracy"],
            "int8_macro_f1": None if chosen_record is None else chosen_record["macro_f1"],
            "accuracy_drop": None if chosen_record is None else chosen_record["accuracy_drop"],
            "int8_fp32_agreement": None
            if chosen_record is None
            else chosen_record["agreement_with_fp32"],
            "int8_fp32_max_abs_logit_diff": None
            if chosen_record is None
            else chosen_record["max_abs_logit_diff_vs_fp32"],
            "deployed": "fp32" if chosen is None else "int8",
            "chosen": chosen,
            "chosen_reason": reason,
            "candidates": records,
            "test_examples": len(test),
            "fp32_bytes": fp32_path.stat().st_size,
            "int8_bytes": None if chosen_record is None else chosen_record["bytes"],
            "latency_check": latency_check(data.max_length, export.timing()),
            "fp32_latency": latency["fp32"],
            "fp32_latency_ms": latency["fp32"]["p50_ms"],
            "int8_latency_ms": None if chosen is None else latency[chosen]["p50_ms"],
            "quantization": quantization,
            "opset": graph["opset"],
            "input_names": graph["input_names"],
            "output_names": graph["output_names"],
            "max_length": data.max_length,
        }

        metrics["serving"] = serving_threads(
            int8_path or fp32_path, tokenizer, test, data.max_length, export.timing()
        )
        # 6. The bundle, its manifest last.
        _write_bundle(
            ctx,
            out,
            model_dir,
            tokenizer,
            fp32_path,
            int8_path,
            export,
            data,
            metrics,
            label_names,
            variant,
            read_split(data_dir, "train").texts,
        )
        metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def _write_bundle(
    ctx: RunContext,
    out: Path,
    model_dir: Path,
    tokenizer: Any,
    fp32_path: Path,
    int8_path: Path | None,
    export: ExportConfig,
    data: DataConfig,
    metrics: dict[str, Any],
    label_names: list[str],
    variant: str | None,
    train_texts: list[str],
) -> None:
    """``out/bundle``: the deployed files, the model card, and the manifest last."""
    bundle, roles = assemble_bundle(
        out / "bundle", model_dir, tokenizer, fp32_path, int8_path, export.fp32_reference
    )
    # The domain's words, so the runner's word cache starts warm (distill.fast_tokens).
    write_words(bundle / WORDS_FILE, frequent_chunks(train_texts, min_count=1))
    roles[WORDS_FILE] = "tokenizer-cache"
    if int8_path is not None and not export.fp32_reference:  # kept for the report
        (out / FP32_REFERENCE).parent.mkdir()
        shutil.copyfile(fp32_path, out / FP32_REFERENCE)
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
    from distill.latency import interleaved_latency, onnx_call

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


# --------------------------------------------------------------------------- the bundle
