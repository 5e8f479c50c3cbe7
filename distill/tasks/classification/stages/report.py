"""Stage `report`: compare teacher, student and the exported student on the test split.

Writes ``report.json`` first (the source of truth, ``schema_version`` 2) and then renders
``report.md`` and ``report.html`` from that JSON alone (:mod:`distill.tasks.classification.render`),
so a report can be re-rendered later without rerunning anything
(:func:`distill.report.reports.rerender`).

One row per model: the teacher and the student in PyTorch fp32, the student's fp32 and
int8 ONNX files, the student's twins when the student stage trained them (without
distillation; with the teacher's hard labels on the transfer text), the teacher's own
ONNX fp32 and int8 files (:mod:`distill.tasks.classification.report.teacher`), and a TF-IDF +
logistic-regression floor. Accuracy, macro-F1 and agreement with the teacher come
from the test logits the upstream stages cached (the exact predictions they shipped);
sizes are the weight files on disk; latency is measured here, on this machine, with a
pinned thread count and a fixed sequence length, every model in one interleaved run
(:mod:`distill.report.timing`). The conclusions (the paired significance of the KD gain
over each twin, the headline against the quantized teacher, the floor warnings) are
:mod:`distill.tasks.classification.report.verdict`'s.

Schema 2 added, per row: ``per_class_f1`` ({label: F1}), ``confusion_matrix`` (counts,
gold label by row, predicted label by column, in ``labels`` order) and ``calibration``
(expected calibration error over 15 equal-width confidence bins, with the bins for a
reliability diagram); on the PyTorch rows ``size_breakdown`` (embeddings / encoder layers /
head); and at the top level ``disagreements`` (test examples where the deployed student and
the teacher predict different labels, capped).
"""

from __future__ import annotations

import gc
import json
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifacts import (
    RunContext,
    library_versions,
    read_manifest,
    relative_path,
    upstream_manifests,
    weight_files,
    write_json_atomic,
)
from distill.config import ReportConfig, task_dump
from distill.dataset_files import SPLITS, Split, load_logits, read_label_names, read_split
from distill.errors import ArtifactError, ModelLoadError
from distill.export.bundle import FP32_REFERENCE
from distill.latency import hardware_info
from distill.models import load_saved_classifier
from distill.report.timing import TimingPlan
from distill.report.training import training_summary
from distill.tasks.classification.metrics import classification_metrics, softmax
from distill.tasks.classification.report.teacher import onnx_row, teacher_onnx_rows
from distill.tasks.classification.report.verdict import (
    gain_decomposition,
    headline,
    kd_significance,
    student_kd_significance,
)
from distill.tasks.classification.task import SequenceClassification

log = logging.getLogger("distill")

SCHEMA_VERSION = 2
UPSTREAM = ("data", "teacher", "student", "export")
PRIMARY_METRIC = "accuracy"
_TFIDF_C_GRID = (0.25, 1.0, 4.0, 16.0)
ECE_BINS = 15
MAX_DISAGREEMENTS = 20
MAX_TEXT_CHARS = 500


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, report: ReportConfig
) -> dict[str, Any]:
    """Build ``report.json`` from the upstream folders, then render Markdown and HTML from it."""
    from distill.tasks.classification import render

    document = build_report(ctx, inputs, report)
    write_json_atomic(out / "report.json", document)
    # Render from the file just written, not the in-memory dict: the JSON is the source of truth.
    render.write_reports(render.load_report(out / "report.json"), out)
    return summary_metrics(document)


def _training_examples(student_manifest: dict[str, Any]) -> dict[str, Any]:
    """How many labelled and transfer (teacher-labelled only) examples the student saw."""
    examples = (student_manifest.get("metrics") or {}).get("training_examples")
    if not examples:
        return {}
    return {
        "labelled training examples": examples.get("labelled"),
        "transfer examples (teacher soft targets only)": examples.get("transfer"),
    }


def summary_metrics(document: dict[str, Any]) -> dict[str, Any]:
    """The small part of the report kept in the stage manifest."""
    rows = {}
    for row in document["rows"]:
        latency = row.get("latency") or {}
        rows[row["key"]] = {
            "accuracy": row["accuracy"],
            "macro_f1": row["macro_f1"],
            "agreement": row.get("agreement"),
            "ece": (row.get("calibration") or {}).get("ece"),
            "bytes": row.get("bytes"),
            "p50_ms": latency.get("p50_ms"),
            "p95_ms": latency.get("p95_ms"),
        }
    baseline = document.get("baseline") or {}
    distillation = document.get("distillation") or {}
    return {
        "rows": rows,
        "baseline_accuracy": baseline.get("accuracy"),
        "below_baseline": baseline.get("below_baseline", []),
        "kd_significance": _significance_summary(distillation.get("significance")),
        "soft_target_significance": _significance_summary(
            distillation.get("soft_target_significance")
        ),
    }


def _significance_summary(significance: dict[str, Any] | None) -> dict[str, Any] | None:
    """The numbers of one paired comparison that the stage manifest keeps."""
    if not significance:
        return None
    keys = ("accuracy_difference", "p_value", "ci_low", "ci_high", "significant")
    return {key: significance.get(key) for key in keys}


# --------------------------------------------------------------------------- building the JSON


def build_report(ctx: RunContext, inputs: dict[str, Path], config: ReportConfig) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    started = time.perf_counter()
    manifests = upstream_manifests(inputs, UPSTREAM)
    data_dir, teacher_dir, student_dir, export_dir = (inputs[name] for name in UPSTREAM)

    label_names = read_label_names(data_dir)
    num_labels = len(label_names)
    splits = {name: read_split(data_dir, name) for name in SPLITS}
    test = splits["test"]
    if len(test) == 0:
        raise ArtifactError(
            f"{data_dir / 'test.jsonl'}: the test split is empty; nothing to report"
        )
    max_length = _max_length(export_dir, manifests)

    teacher_logits = _logits(teacher_dir / "logits" / "test.npz", test.ids)
    student_logits = _logits(student_dir / "logits" / "test.npz", test.ids)

    def score(logits: np.ndarray) -> dict[str, Any]:
        return evaluate(logits, test.labels, label_names, reference_logits=teacher_logits)

    latency_texts = test.texts
    notes: list[str] = []
    hardware = hardware_info()
    if hardware.get("available_cores") and config.latency_threads > hardware["available_cores"]:
        notes.append(
            f"latency_threads = {config.latency_threads} exceeds the {hardware['available_cores']} "
            "cores available to this process: latencies are pessimistic."
        )

    rows: list[dict[str, Any]] = []
    # Every timed row registers its model here; all are timed together, interleaved, below.
    plan = TimingPlan(config, latency_texts, max_length)

    # PyTorch rows -------------------------------------------------------------------------
    rows.append(
        _pytorch_row(
            key="teacher",
            name="Teacher",
            model_dir=teacher_dir / "model",
            metrics=score(teacher_logits),
            plan=plan,
        )
    )
    student_row = _pytorch_row(
        key="student",
        name="Student (distilled)",
        model_dir=student_dir / "model",
        metrics=score(student_logits),
        plan=plan,
    )
    rows.append(student_row)

    twin_logits: dict[str, np.ndarray] = {}  # by twin folder, for the paired verdicts
    for twin, key, name in TWIN_ROWS:
        found = _twin_row(student_dir, twin, key, name, score, test.ids)
        if found is not None:
            twin_logits[twin], row = found
            rows.append(row)

    # ONNX rows ----------------------------------------------------------------------------
    onnx_rows, deployed_logits = _student_onnx_rows(
        export_dir,
        manifests["export"],
        student_dir,
        test,
        student_logits,
        student_row,
        score,
        plan,
        notes,
    )
    rows.extend(onnx_rows)

    # The teacher through the same export path: "why not just quantize the teacher?" ---------
    teacher_rows, teacher_note = teacher_onnx_rows(
        export_dir,
        manifests["export"].get("metrics") or {},
        rows[0],
        lambda: _tokenizer(teacher_dir / "model"),
        lambda path: _logits(path, test.ids),
        score,
        plan,
    )
    rows.extend(teacher_rows)
    if teacher_note:
        notes.append(teacher_note)

    # TF-IDF floor -------------------------------------------------------------------------
    if config.tfidf_baseline:
        tfidf_row = _tfidf_row(splits, num_labels, ctx.seed, score)
        if tfidf_row is None:
            notes.append("TF-IDF baseline skipped: the training split has fewer than two classes.")
        else:
            rows.append(tfidf_row)
    variant_names = _register_variants(manifests, student_dir, export_dir, plan)
    latencies = plan.run()
    for row in rows:
        row["latency"] = latencies.get(row["key"], row["latency"])
    _add_ratios(rows)
    baseline = _baseline_summary(rows)
    disagreements = (
        find_disagreements(
            test, label_names, teacher_logits, deployed_logits[1], deployed_logits[0]
        )
        if deployed_logits is not None
        else None
    )

    by_key = {r["key"]: r for r in rows}
    distillation = _distillation(
        manifests["student"], by_key, student_logits, twin_logits, test.labels
    )

    students = student_frontier(
        manifests,
        student_dir,
        export_dir,
        test,
        score,
        by_key,
        {name: latencies[f"variant:{name}"] for name in variant_names},
        ctx.name,
    )

    throughput = _throughput(export_dir, variant_names, test, splits["validation"], config)
    for entry in students or []:
        entry["throughput"] = throughput["bundles"].get(entry["name"])
    notes += [
        f"End-to-end throughput of student {name!r} not measured: {why}"
        for name, why in throughput["skipped"].items()
    ]

    wall_times = {name: manifests[name].get("wall_time_s") for name in UPSTREAM}
    if "labels" in inputs:  # the labelling pass, between teacher and student
        wall_times["labels"] = (read_manifest(inputs["labels"]) or {}).get("wall_time_s")
    wall_times["report"] = round(time.perf_counter() - started, 3)

    return {
        "schema_version": SCHEMA_VERSION,
        "run": ctx.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "task": getattr(ctx, "task", None)
        or next((m.get("task") for m in manifests.values() if m.get("task")), None),
        "primary_metric": PRIMARY_METRIC,
        "labels": label_names,
        "data": {
            "max_length": max_length,
            "splits": {name: _split_summary(split, label_names) for name, split in splits.items()},
        },
        "rows": rows,
        "headline": headline(rows, students),
        "baseline": baseline,
        "disagreements": disagreements,
        "latency_setup": {
            "threads": config.latency_threads,
            "batch_size": config.latency_batch_size,
            "sequence_length": max_length,
            "runs": config.latency_runs,
            "warmup": config.latency_warmup,
            "rounds": plan.rounds,
            "interleaved": (
                "every timed model in one run: each warmed up, then its timed runs spread over "
                "the rounds, the order rotating from round to round"
            ),
            "inputs": (
                f"the first {config.latency_batch_size} test text(s), padded/truncated to "
                f"{max_length} tokens; model call only (tokenization excluded)"
            ),
            "torch": "torch.set_num_threads(threads), inference_mode",
            "onnxruntime": "intra_op_num_threads = threads, inter_op_num_threads = 1, sequential",
        },
        "distillation": distillation,
        "students": students,
        "throughput": throughput,
        "recipe": _recipe(manifests, config),
        "training": {
            "teacher": _training(teacher_dir, manifests["teacher"]),
            "student": _training(student_dir, manifests["student"]),
        },
        "wall_time_s": wall_times,
        "versions": library_versions(),
        "hardware": hardware,
        "notes": notes,
    }


def _student_onnx_rows(
    export_dir: Path,
    export_manifest: dict[str, Any],
    student_dir: Path,
    test: Split,
    student_logits: np.ndarray,
    student_row: dict[str, Any],
    score: Any,
    plan: TimingPlan,
    notes: list[str],
) -> tuple[list[dict[str, Any]], tuple[str, np.ndarray] | None]:
    """The student's ONNX rows (fp32, int8), registered with the timing plan, and the
    deployed one's test logits (key, logits)."""
    rows: list[dict[str, Any]] = []
    quantization = _quantization(export_dir, export_manifest)
    bundle = export_dir / "bundle"
    fp32_path = bundle / FP32_REFERENCE if quantization != "none" else bundle / "model.onnx"
    if not fp32_path.is_file():  # export.fp32_reference = false: kept beside the bundle
        fp32_path = export_dir / FP32_REFERENCE
    int8_path = bundle / "model.onnx" if quantization != "none" else None
    tokenizer = _tokenizer(student_dir / "model")
    onnx_models: list[tuple[str, str, str, Path | None, Path]] = [
        (
            "student_onnx_fp32",
            "Student ONNX fp32",
            "fp32",
            fp32_path,
            export_dir / "predictions" / "test_fp32.npz",
        )
    ]
    if int8_path is not None:
        onnx_models.append(
            (
                "student_onnx_int8",
                "Student ONNX int8",
                f"int8 ({quantization})",
                int8_path,
                export_dir / "predictions" / "test_int8.npz",
            )
        )
    else:
        notes.append("export.quantization = none: there is no int8 model to report.")
    deployed_logits: tuple[str, np.ndarray] | None = None
    for key, name, precision, model_path, predictions in onnx_models:
        if model_path is None or not model_path.is_file():
            raise ArtifactError(f"{model_path}: the export stage's ONNX model is missing")
        logits = _logits(predictions, test.ids)
        if model_path == bundle / "model.onnx":
            deployed_logits = (key, logits)
        row_metrics = score(logits)
        row_metrics["max_abs_logit_diff_vs_student"] = float(
            np.max(np.abs(logits - student_logits))
        )
        plan.add_onnx(key, model_path, tokenizer)
        rows.append(
            onnx_row(
                key,
                name,
                precision,
                model_path,
                export_dir,
                like=student_row,
                metrics=row_metrics,
                deployed=model_path == bundle / "model.onnx",
            )
        )
    return rows, deployed_logits


def _tfidf_row(
    splits: dict[str, Split], num_labels: int, seed: int, score: Any
) -> dict[str, Any] | None:
    """The TF-IDF + logistic-regression floor's row; None when it cannot be fitted."""
    tfidf = tfidf_baseline(
        splits["train"], splits["validation"], splits["test"], num_labels, seed=seed
    )
    if tfidf is None:
        return None
    tfidf_logits, tfidf_info = tfidf
    return {
        "key": "tfidf",
        "name": "TF-IDF + logistic regression",
        "kind": "baseline",
        "runtime": "scikit-learn",
        "precision": "fp64",
        "deployed": False,
        "parameters": tfidf_info.pop("parameters"),
        "bytes": tfidf_info.pop("bytes"),
        "bytes_note": "pickled pipeline size (not written to disk)",
        "weight_files": [],
        **score(tfidf_logits),
        "latency": None,
        "details": tfidf_info,
    }


# The student stage's twins the report has a row for: (folder, row key, row name).
TWIN_ROWS = (
    ("baseline", "student_no_kd", "Student without KD"),
    ("pseudo", "student_pseudo", "Student, teacher's hard labels on the transfer text"),
)


def _twin_row(
    student_dir: Path, twin: str, key: str, name: str, score: Any, ids: list[str]
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """One twin's test logits and row (None when the student stage trained no such twin).
    Same architecture as the student: its latency would repeat the student's, so it is not
    re-measured; the row is there to show what distillation itself gained."""
    logits_path, model_dir = (
        student_dir / twin / "logits" / "test.npz",
        student_dir / twin / "model",
    )
    if not (logits_path.is_file() and model_dir.is_dir()):
        return None
    logits = _logits(logits_path, ids)
    return logits, _pytorch_row(
        key=key, name=name, model_dir=model_dir, metrics=score(logits), plan=None
    )


def _distillation(
    student_manifest: dict[str, Any],
    by_key: dict[str, dict[str, Any]],
    student_logits: np.ndarray,
    twin_logits: dict[str, np.ndarray],
    labels: np.ndarray,
) -> dict[str, Any]:
    """The Distillation section: the settings, and the distilled student against each twin
    it has (accuracy gain, and the paired test of whether it beats this test split's luck)."""
    student_cfg = (student_manifest.get("config") or {}).get("student") or {}

    def gain(key: str) -> float | None:
        return by_key["student"]["accuracy"] - by_key[key]["accuracy"] if key in by_key else None

    def significance(twin: str) -> dict[str, Any] | None:
        if twin not in twin_logits:
            return None
        return kd_significance(student_logits, twin_logits[twin], labels, twin)

    both = {"student_no_kd", "student_pseudo"} <= by_key.keys()
    return {
        "settings": {
            key: student_cfg.get(key)
            for key in ("init", "num_layers", "layers", "temperature", "alpha")
            if key in student_cfg
        }
        | _training_examples(student_manifest),
        # What the teacher bought (soft targets and transfer text): minus the no-KD twin.
        "accuracy_gain_over_no_kd": gain("student_no_kd"),
        "significance": significance("baseline"),
        # What the soft targets bought beyond the extra text: minus the pseudo-label twin.
        "accuracy_gain_over_pseudo_labels": gain("student_pseudo"),
        "soft_target_significance": significance("pseudo"),
        "gain_decomposition": gain_decomposition(
            *(by_key[k]["accuracy"] for k in ("student", "student_no_kd", "student_pseudo"))
        )
        if both
        else None,
    }


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (accuracy, bytes) points: True where no other point is at least as accurate and
    at most as large while strictly better on one of the two."""
    return [
        not any(
            (a2 >= a and b2 <= b) and (a2 > a or b2 < b)
            for j, (a2, b2) in enumerate(points)
            if j != i
        )
        for i, (a, b) in enumerate(points)
    ]


def _student_settings(student_manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """The recipe keys that tell one student from another, as the student stage resolved
    them (the variant's table over [student], with the same inheritance rules)."""
    from pydantic import ValidationError

    from distill.config import StudentTable

    table = dict((student_manifest.get("config") or {}).get("student") or {})
    # Older manifests dumped every variant key, None for those a variant left unset.
    table["variants"] = {
        variant: {k: v for k, v in (keys or {}).items() if v is not None}
        for variant, keys in (table.get("variants") or {}).items()
    }
    try:
        resolved = StudentTable.model_validate(table).variant(name).model_dump(mode="json")
    except (ValidationError, KeyError):  # a manifest from another version: show what it says
        resolved = {k: v for k, v in table.items() if k != "variants"}
    keys = ("init", "model", "num_layers", "layers", "temperature", "alpha")
    keys += ("learning_rate", "epochs", "hidden_weight", "attention_weight", "trim_vocabulary")
    if resolved.get("init") == "static":
        keys += ("static_dim", "static_pooling", "static_hidden")
    return {k: resolved.get(k) for k in keys if resolved.get(k) not in (None, False, 0, 0.0)}


def student_frontier(
    manifests: dict[str, dict[str, Any]],
    student_dir: Path,
    export_dir: Path,
    test: Split,
    score: Any,
    rows_by_key: dict[str, dict[str, Any]],
    variant_latencies: dict[str, dict[str, Any]],
    run: str,
) -> list[dict[str, Any]] | None:
    """One entry per student of the recipe (the primary and each variant), measured as
    deployed: accuracy of its deployed ONNX model, its file size, its latency (from the
    report's interleaved run: ``variant_latencies`` by variant name); the paired
    significance of its gain over its no-KD twin; marked ``pareto`` when no other student
    beats it on both accuracy and size. None when the recipe has a single student (the
    main table already says everything)."""
    student_metrics = manifests["student"].get("metrics") or {}
    export_metrics = manifests["export"].get("metrics") or {}
    names = ["main", *sorted(student_metrics.get("variants") or {})]
    if len(names) == 1:
        return None
    teacher = rows_by_key["teacher"]
    entries = []
    for name in names:
        trained = student_metrics if name == "main" else student_metrics["variants"][name]
        exported = export_metrics if name == "main" else export_metrics["variants"][name]
        student_folder = student_dir if name == "main" else student_dir / "variants" / name
        stage_dir = export_dir if name == "main" else export_dir / "variants" / name
        predictions = stage_dir / "predictions"
        int8 = predictions / "test_int8.npz"
        metrics = score(
            _logits(int8 if int8.is_file() else predictions / "test_fp32.npz", test.ids)
        )
        deployed_model = stage_dir / "bundle" / "model.onnx"
        deployed_row = next((r for r in rows_by_key.values() if r.get("deployed")), None)
        if name == "main" and deployed_row is not None:
            latency = deployed_row["latency"]  # the main table timed this very file
        else:
            latency = variant_latencies[name]
        no_kd = ((trained.get("baseline") or {}).get("test") or {}).get("accuracy")
        pseudo = ((trained.get("pseudo") or {}).get("test") or {}).get("accuracy")
        pytorch_accuracy = (trained.get("test") or {}).get("accuracy")
        entries.append(
            {
                "name": name,
                "settings": _student_settings(manifests["student"], name),
                "built": trained.get("built"),
                "parameters": (trained.get("parameters") or {}).get("total"),
                "deployed_precision": exported.get("deployed"),
                "bytes": deployed_model.stat().st_size,
                "accuracy": metrics["accuracy"],
                "macro_f1": metrics["macro_f1"],
                "agreement": metrics.get("agreement"),
                "pytorch_accuracy": pytorch_accuracy,
                "no_kd_accuracy": no_kd,
                "gain_over_no_kd": None
                if no_kd is None or pytorch_accuracy is None
                else pytorch_accuracy - no_kd,
                "kd_significance": student_kd_significance(
                    student_folder, test.labels, lambda path: _logits(path, test.ids)
                ),
                "pseudo_accuracy": pseudo,
                "soft_target_significance": student_kd_significance(
                    student_folder, test.labels, lambda path: _logits(path, test.ids), "pseudo"
                ),
                "latency": latency,
                "accuracy_retained": metrics["accuracy"] / teacher["accuracy"]
                if teacher["accuracy"]
                else None,
                "size_ratio": teacher["bytes"] / deployed_model.stat().st_size,
                "speedup": (teacher.get("latency") or {}).get("p50_ms", 0) / latency["p50_ms"]
                if latency.get("p50_ms")
                else None,
                "bundle": f"export/{run}/" if name == "main" else f"export/{run}.{name}/",
            }
        )
    for entry, best in zip(
        entries, pareto_front([(e["accuracy"], e["bytes"]) for e in entries]), strict=True
    ):
        entry["pareto"] = best
    return entries


def _throughput(
    export_dir: Path, variants: list[str], test: Split, validation: Split, config: ReportConfig
) -> dict[str, Any]:
    """End-to-end texts/s of every student's bundle, tokenization included
    (:mod:`distill.tasks.classification.report.throughput`)."""
    from distill.tasks.classification.report.throughput import measure_throughput

    bundles = {"main": export_dir / "bundle"}
    bundles.update({name: export_dir / "variants" / name / "bundle" for name in variants})
    return measure_throughput(
        bundles,
        test.texts,
        (validation.texts or test.texts)[:512],
        threads=config.latency_threads,
    )


def _register_variants(
    manifests: dict[str, dict[str, Any]], student_dir: Path, export_dir: Path, plan: TimingPlan
) -> list[str]:
    """Add each variant's deployed model to the timing plan (as ``variant:NAME``), so the
    Students table is timed in the same run as the main table; returns the names."""
    names = sorted((manifests["student"].get("metrics") or {}).get("variants") or {})
    for name in names:
        model_dir = student_dir / "variants" / name / "model"
        deployed = export_dir / "variants" / name / "bundle" / "model.onnx"
        plan.add_onnx(f"variant:{name}", deployed, _tokenizer(model_dir))
    return names


def _pytorch_row(
    *,
    key: str,
    name: str,
    model_dir: Path,
    metrics: dict[str, Any],
    plan: TimingPlan | None,
) -> dict[str, Any]:
    """A PyTorch model's row; with ``plan``, the model is registered there to be timed (the
    row's latency is filled in after the interleaved run)."""
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model folder is missing")
    try:
        model = load_saved_classifier(model_dir)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{model_dir}: cannot load the model: {exc}") from None
    model.eval()
    parameters = int(sum(p.numel() for p in model.parameters()))
    model_config = model.config
    architecture = {
        "model_type": getattr(model_config, "model_type", None),
        "layers": getattr(model_config, "num_hidden_layers", None),
        "hidden_size": getattr(model_config, "hidden_size", None),
    }
    if plan is not None:
        plan.add_torch(key, model, _tokenizer(model_dir))
    breakdown = size_breakdown(model)
    del model  # the plan keeps a timed model alive until it has run
    gc.collect()
    files = weight_files(model_dir)
    return {
        "key": key,
        "name": name,
        "kind": "transformer",
        "runtime": "pytorch",
        "precision": "fp32",
        "deployed": False,
        "parameters": parameters,
        "architecture": architecture,
        "bytes": sum(f.stat().st_size for f in files),
        "weight_files": [relative_path(f, model_dir.parent) for f in files],
        **metrics,
        "latency": None,
        "size_breakdown": breakdown,
    }


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Compression and speed-up against the teacher, and accuracy kept (teacher = 1.0)."""
    teacher = next(r for r in rows if r["key"] == "teacher")
    teacher_p50 = (teacher.get("latency") or {}).get("p50_ms")
    for row in rows:
        row["size_ratio"] = teacher["bytes"] / row["bytes"] if row.get("bytes") else None
        p50 = (row.get("latency") or {}).get("p50_ms")
        row["speedup"] = teacher_p50 / p50 if teacher_p50 and p50 else None
        row["accuracy_retained"] = (
            row["accuracy"] / teacher["accuracy"] if teacher["accuracy"] else None
        )
        row["accuracy_delta"] = row["accuracy"] - teacher["accuracy"]


def _baseline_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mark each transformer row that does not beat the TF-IDF floor (strictly) on accuracy."""
    floor = next((r for r in rows if r["key"] == "tfidf"), None)
    if floor is None:
        for row in rows:
            row["beats_baseline"] = None
        return None
    below = []
    for row in rows:
        if row["kind"] != "transformer":
            row["beats_baseline"] = None
            continue
        row["beats_baseline"] = bool(row[PRIMARY_METRIC] > floor[PRIMARY_METRIC])
        if not row["beats_baseline"]:
            below.append(row["key"])
    return {
        "key": "tfidf",
        "metric": PRIMARY_METRIC,
        "accuracy": floor["accuracy"],
        "macro_f1": floor["macro_f1"],
        "below_baseline": below,
    }


# --------------------------------------------------------------------------- per-model evaluation


def evaluate(
    logits: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    reference_logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """Everything the report shows about one model's test predictions.

    Accuracy, macro-F1 and agreement (:func:`distill.tasks.classification.metrics.classification_metrics`), F1
    per class, the confusion matrix (gold by row, predicted by column) and calibration.
    """
    from sklearn.metrics import confusion_matrix, f1_score

    num_labels = len(label_names)
    result = classification_metrics(logits, labels, num_labels, reference_logits=reference_logits)
    predictions = np.asarray(logits).argmax(axis=-1)
    indices = list(range(num_labels))
    per_class = f1_score(labels, predictions, average=None, labels=indices, zero_division=0)
    result["per_class_f1"] = {name: float(per_class[i]) for i, name in enumerate(label_names)}
    result["confusion_matrix"] = confusion_matrix(labels, predictions, labels=indices).tolist()
    result["calibration"] = calibration(softmax(np.asarray(logits, dtype=np.float64)), labels)
    return result


def calibration(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> dict[str, Any]:
    """Expected calibration error over ``bins`` equal-width confidence bins, and the bins.

    Confidence is the top class probability; bin ``b`` holds confidences in
    ``(b / bins, (b + 1) / bins]``. ECE = sum over bins of (share of examples in the bin)
    x |accuracy in the bin - mean confidence in the bin| (Guo et al., 2017). Empty bins
    contribute nothing and have ``accuracy = confidence = None``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == labels
    # Edges b / bins (each correctly rounded, so 0.8 falls in (11/15, 12/15] as on paper).
    edges = np.arange(bins + 1) / bins
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = len(labels)
    ece = 0.0
    table = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        accuracy = float(correct[mask].mean()) if count else None
        mean_confidence = float(confidence[mask].mean()) if count else None
        if count:
            ece += count / total * abs(accuracy - mean_confidence)  # type: ignore[operator]
        table.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "accuracy": accuracy,
                "confidence": mean_confidence,
            }
        )
    return {
        "ece": float(ece) if total else None,
        "bins": bins,
        "mean_confidence": float(confidence.mean()) if total else None,
        "reliability": table,
    }


def find_disagreements(
    test: Split,
    label_names: list[str],
    teacher_logits: np.ndarray,
    student_logits: np.ndarray,
    student_key: str,
    limit: int = MAX_DISAGREEMENTS,
) -> dict[str, Any]:
    """Test examples where the (deployed) student and the teacher predict different labels.

    The student's mistakes that the teacher got right come first, then examples both got
    wrong, then the student's corrections of the teacher; within each group the student's
    most confident predictions first. At most ``limit`` are kept (``total`` counts all);
    texts longer than ``MAX_TEXT_CHARS`` are cut.
    """
    teacher_probs = softmax(np.asarray(teacher_logits, dtype=np.float64))
    student_probs = softmax(np.asarray(student_logits, dtype=np.float64))
    teacher_pred = teacher_probs.argmax(axis=-1)
    student_pred = student_probs.argmax(axis=-1)
    rows = np.flatnonzero(teacher_pred != student_pred)
    gold = test.labels

    def category(i: int) -> str:
        if teacher_pred[i] == gold[i]:
            return "student wrong"
        if student_pred[i] == gold[i]:
            return "teacher wrong"
        return "both wrong"

    rank = {"student wrong": 0, "both wrong": 1, "teacher wrong": 2}
    ordered = sorted(
        (int(i) for i in rows),
        key=lambda i: (rank[category(i)], -student_probs[i, student_pred[i]], i),
    )
    counts = {name: 0 for name in rank}
    for i in rows:
        counts[category(int(i))] += 1

    def prediction(probs: np.ndarray, i: int, label: int) -> dict[str, Any]:
        return {
            "label": label_names[label],
            "probability": float(probs[i, label]),
            "probability_of_gold": float(probs[i, gold[i]]),
        }

    examples = []
    for i in ordered[:limit]:
        text = test.texts[i]
        examples.append(
            {
                "id": test.ids[i],
                "text": text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…",
                "text_truncated": len(text) > MAX_TEXT_CHARS,
                "gold": label_names[int(gold[i])],
                "category": category(i),
                "teacher": prediction(teacher_probs, i, int(teacher_pred[i])),
                "student": prediction(student_probs, i, int(student_pred[i])),
            }
        )
    return {
        "student": student_key,
        "reference": "teacher",
        "total": int(rows.size),
        "examples_in_test": len(test),
        "by_category": counts,
        "limit": limit,
        "examples": examples,
    }


def size_breakdown(model: Any) -> dict[str, Any]:
    """Parameters of the embeddings, the transformer layers and the rest (pooler + classifier).

    Parameters are attributed by name (any dotted component containing ``embed``, or
    GPT-style ``wte``/``wpe``) and by membership in the layer stack
    (:func:`distill.models.transformer_layers`); whatever is left is the head.
    """
    from distill.models import transformer_layers

    try:
        stack = transformer_layers(model)
    except ModelLoadError:
        stack = None
    in_stack = {id(p) for p in stack.parameters()} if stack is not None else set()
    totals = {"embeddings": 0, "encoder layers": 0, "head": 0}
    modules: dict[str, set[str]] = {name: set() for name in totals}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        if id(parameter) in in_stack:
            part = "encoder layers"
        elif any("embed" in p or p in ("wte", "wpe") for p in parts[:-1]):
            part = "embeddings"
        else:
            part = "head"
        totals[part] += int(parameter.numel())
        # The module path up to the first level that tells parts apart (bert.pooler, classifier).
        prefix = parts[:2] if len(parts) > 2 else parts[:1]
        modules[part].add(".".join(prefix))
    total = sum(totals.values())
    layers = len(stack) if stack is not None else 0
    return {
        "total_parameters": total,
        "parts": [
            {
                "part": part,
                "parameters": count,
                "share": count / total if total else None,
                "fp32_bytes": 4 * count,
                "modules": sorted(modules[part]),
                **(
                    {"layers": layers, "per_layer": count // layers if layers else None}
                    if part == "encoder layers"
                    else {}
                ),
            }
            for part, count in totals.items()
        ],
    }


# --------------------------------------------------------------------------- TF-IDF floor


def tfidf_baseline(
    train: Split, validation: Split, test: Split, num_labels: int, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Fit TF-IDF (word 1-2 grams) + logistic regression on train; C picked on validation.

    Returns test "logits" (log-probabilities, one column per label) and details, or None
    when the training split has fewer than two classes.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if len(np.unique(train.labels)) < 2:
        return None

    def fit(c: float) -> Pipeline:
        pipeline = Pipeline(
            [
                ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
                ("logreg", LogisticRegression(C=c, max_iter=2000, random_state=seed)),
            ]
        )
        return pipeline.fit(train.texts, train.labels)

    scores: dict[float, float] = {}
    best: Any = None
    if len(validation) and len(_TFIDF_C_GRID) > 1:
        for c in _TFIDF_C_GRID:
            candidate = fit(c)
            scores[c] = float((candidate.predict(validation.texts) == validation.labels).mean())
            if best is None or scores[c] > scores[best[0]]:
                best = (c, candidate)
        chosen_c, pipeline = best
    else:
        chosen_c, pipeline = 1.0, fit(1.0)

    probabilities = pipeline.predict_proba(test.texts)
    logits = np.full((len(test), num_labels), -1e9, dtype=np.float64)  # classes unseen in train
    classes = pipeline.named_steps["logreg"].classes_
    logits[:, classes] = np.log(np.clip(probabilities, 1e-12, None))
    logreg = pipeline.named_steps["logreg"]
    return logits, {
        "parameters": int(logreg.coef_.size + logreg.intercept_.size),
        "bytes": len(pickle.dumps(pipeline)),
        "vocabulary_size": len(pipeline.named_steps["tfidf"].vocabulary_),
        "ngram_range": [1, 2],
        "C": chosen_c,
        "validation_accuracy_by_C": {str(c): s for c, s in scores.items()},
    }


# --------------------------------------------------------------------------- reading upstream


def _logits(path: Path, ids: list[str]) -> np.ndarray:
    if not path.is_file():
        raise ArtifactError(f"{path}: cached logits are missing")
    try:
        return np.asarray(load_logits(path, ids)[1], dtype=np.float64)
    except KeyError as exc:
        raise ArtifactError(str(exc.args[0] if exc.args else exc)) from None


def _tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{model_dir}: cannot load the tokenizer: {exc}") from None


def _max_length(export_dir: Path, manifests: dict[str, dict[str, Any]]) -> int:
    """The sequence length the models were trained and exported with."""
    bundle_manifest = export_dir / "bundle" / "manifest.json"
    if bundle_manifest.is_file():
        try:
            value = json.loads(bundle_manifest.read_text(encoding="utf-8")).get("max_length")
        except (OSError, ValueError):
            value = None
        if isinstance(value, int):
            return value
    for name in ("export", "student", "teacher", "data"):
        value = ((manifests[name].get("config") or {}).get("data") or {}).get("max_length")
        if isinstance(value, int):
            return value
    raise ArtifactError(f"{export_dir}: cannot tell the max_length the models were exported with")


def _quantization(export_dir: Path, manifest: dict[str, Any]) -> str:
    # No int8 candidate passed the accuracy gate: fp32 was deployed whatever the recipe asked.
    if (manifest.get("metrics") or {}).get("deployed") == "fp32":
        return "none"
    value = ((manifest.get("config") or {}).get("export") or {}).get("quantization")
    if isinstance(value, str):
        return value
    return "dynamic" if (export_dir / "bundle" / FP32_REFERENCE).is_file() else "none"


def _split_summary(split: Split, label_names: list[str]) -> dict[str, Any]:
    counts = (
        np.bincount(split.labels, minlength=len(label_names))
        if len(split)
        else np.zeros(len(label_names))
    )
    return {
        "examples": len(split),
        "label_counts": {name: int(counts[i]) for i, name in enumerate(label_names)},
    }


def _recipe(manifests: dict[str, dict[str, Any]], config: ReportConfig) -> dict[str, Any]:
    """Each recipe table as the stage that used it recorded it (first recorder wins)."""
    recipe: dict[str, Any] = {}
    for name in UPSTREAM:
        for section, values in (manifests[name].get("config") or {}).items():
            recipe.setdefault(section, values)
    recipe["report"] = task_dump(config, "report", SequenceClassification.name)
    return recipe


def _training(stage_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Headline training numbers and the loss / eval curves from the Trainer's log history."""
    summary = training_summary(manifest)
    curves: dict[str, list[list[float]]] = {}
    path = stage_dir / "log_history.json"
    if path.is_file():
        try:
            history = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            history = []
        for entry in history if isinstance(history, list) else []:
            if not isinstance(entry, dict) or "step" not in entry:
                continue
            for key in ("loss", "eval_loss", "eval_accuracy"):
                value = entry.get(key)
                if isinstance(value, int | float):
                    curves.setdefault(key, []).append([float(entry["step"]), float(value)])
    return {"summary": summary, "curves": curves, "wall_time_s": manifest.get("wall_time_s")}
