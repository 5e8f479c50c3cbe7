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
(:class:`distill.timing.latency.TimingPlan`). The conclusions (the paired significance of the KD gain
over each twin, the headline against the quantized teacher, the floor warnings) are
:mod:`distill.tasks.classification.report.verdict`'s. Each section is built by its own module
of :mod:`distill.tasks.classification.report`; this stage reads the upstream folders, times
every model in one run and puts the sections together.

Schema 2 added, per row: ``per_class_f1`` ({label: F1}), ``confusion_matrix`` (counts,
gold label by row, predicted label by column, in ``labels`` order) and ``calibration``
(expected calibration error over 15 equal-width confidence bins, with the bins for a
reliability diagram); on the PyTorch rows ``size_breakdown`` (embeddings / encoder layers /
head); and at the top level ``disagreements`` (test examples where the deployed student and
the teacher predict different labels, capped).

When the run adapted its teacher (the ``adapt`` and ``plain-teacher`` stage folders among
the inputs), the main table has the plain twin's row (``teacher_plain``: the same teacher
fine-tuned without adaptation; the ``teacher`` row, the adapted one, stays the reference
for the ratios) and the report an ``adaptation`` section
(:mod:`distill.tasks.classification.report.adaptation`); without them both are absent. When
the run also distilled a student from the plain twin (the ``plain-student`` folder, laid out
as the student stage's), the table has its row after the distilled student's
(``student_plain_teacher``, scored and timed like the student) and the section the two
students' paired comparison; without it, neither.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import ReportConfig, task_dump
from distill.pipeline.artifacts import RunContext, finished_manifest, library_versions
from distill.report.adaptation import ADAPT, PLAIN_STUDENT, PLAIN_TEACHER, adaptation_summary
from distill.report.document import created, recipe_tables, report_stage, threads_note, wall_times
from distill.report.ratios import add_ratios, difference, kept, times_faster, times_smaller
from distill.report.training import training_record
from distill.tasks.classification import render
from distill.tasks.classification.report.adaptation import (
    PlainTwin,
    classification_adaptation,
    plain_student,
    plain_teacher,
)
from distill.tasks.classification.report.disagreements import find_disagreements
from distill.tasks.classification.report.distillation import distillation_section
from distill.tasks.classification.report.floor import PRIMARY_METRIC, baseline_summary, tfidf_row
from distill.tasks.classification.report.inputs import (
    UPSTREAM,
    ReportInputs,
    read_inputs,
    split_summary,
)
from distill.tasks.classification.report.rows import pytorch_row, student_onnx_rows, twin_rows
from distill.tasks.classification.report.students import register_variants, student_frontier
from distill.tasks.classification.report.teacher import teacher_onnx_rows
from distill.tasks.classification.report.throughput import student_throughput
from distill.tasks.classification.report.verdict import headline
from distill.tasks.classification.task import SequenceClassification
from distill.timing.latency import TimingPlan, hardware_info

SCHEMA_VERSION = 2
# Against the PyTorch teacher: times smaller and faster (p50), accuracy kept (teacher = 1.0).
RATIOS = {
    "size_ratio": times_smaller,
    "speedup": times_faster,
    "accuracy_retained": kept("accuracy"),
    "accuracy_delta": difference("accuracy"),
}
# The Trainer's log-history curves the report plots.
CURVES = ("loss", "eval_loss", "eval_accuracy")


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
        "adaptation": adaptation_summary(document.get("adaptation")),
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
    upstream = read_inputs(inputs)
    test, manifests = upstream.test, upstream.manifests
    hardware = hardware_info()
    notes: list[str] = []
    if note := threads_note(config.latency_threads, hardware, "latencies are pessimistic."):
        notes.append(note)
    # Every timed row registers its model here; all are timed together, interleaved, below.
    plan = TimingPlan.for_texts(config, test.texts, upstream.max_length)
    # None unless the run adapted the teacher (and distilled a student from its plain twin)
    plain = plain_teacher(inputs, upstream, plan)
    plain_distilled = plain_student(inputs, upstream, plan)
    rows, twin_logits, deployed_logits = _model_rows(
        upstream, plan, config, ctx.seed, notes, (plain, plain_distilled)
    )
    variant_names = register_variants(upstream, plan)
    latencies = plan.run()
    for row in rows:
        row["latency"] = latencies.get(row["key"], row["latency"])
    add_ratios(rows, RATIOS)
    baseline = baseline_summary(rows)
    by_key = {r["key"]: r for r in rows}
    distillation = distillation_section(
        manifests["student"], by_key, upstream.student_logits, twin_logits, test.labels
    )
    students = student_frontier(
        upstream,
        by_key,
        {name: latencies[f"variant:{name}"] for name in variant_names},
        ctx.name,
    )
    throughput = student_throughput(upstream, variant_names, config.latency_threads)
    for entry in students or []:
        entry["throughput"] = throughput["bundles"].get(entry["name"])
    notes += [
        f"End-to-end throughput of student {name!r} not measured: {why}"
        for name, why in throughput["skipped"].items()
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "run": ctx.name,
        "created": created(),
        "task": getattr(ctx, "task", None)
        or next((m.get("task") for m in manifests.values() if m.get("task")), None),
        "primary_metric": PRIMARY_METRIC,
        "labels": upstream.label_names,
        "data": {
            "max_length": upstream.max_length,
            "splits": {
                name: split_summary(split, upstream.label_names)
                for name, split in upstream.splits.items()
            },
        },
        "rows": rows,
        "headline": headline(rows, students),
        "baseline": baseline,
        "disagreements": _disagreements(upstream, deployed_logits),
        "latency_setup": _latency_setup(config, upstream.max_length, plan.rounds),
        "distillation": distillation,
        "adaptation": classification_adaptation(inputs, upstream, plain, plain_distilled),
        "students": students,
        "throughput": throughput,
        "recipe": recipe_tables(
            manifests, UPSTREAM, task_dump(config, "report", SequenceClassification.name)
        ),
        "training": _training(upstream, inputs),
        "wall_time_s": wall_times(
            manifests,
            inputs,
            ("data", ADAPT, "teacher", PLAIN_TEACHER, "student", PLAIN_STUDENT, "export", "labels"),
            started,
        ),
        "versions": library_versions(),
        "hardware": hardware,
        "notes": notes,
    }


def _model_rows(
    upstream: ReportInputs,
    plan: TimingPlan,
    config: ReportConfig,
    seed: int,
    notes: list[str],
    plain: tuple[PlainTwin | None, PlainTwin | None] = (None, None),
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], tuple[str, np.ndarray] | None]:
    """The main table's rows in order (teacher, its plain twin when the run adapted it,
    student, the plain twin's student when the run trained it, the student's twins, its
    ONNX files, the teacher's, the TF-IDF floor), the twins' test logits by twin folder, and
    the deployed model's (key, test logits). ``plain``: the plain teacher and its student."""
    teacher_dir, student_dir = upstream.teacher_dir, upstream.student_dir
    teacher_row = pytorch_row(
        key="teacher",
        name="Teacher",
        model_dir=teacher_dir / "model",
        metrics=upstream.score(upstream.teacher_logits),
        plan=plan,
    )
    student_row = pytorch_row(
        key="student",
        name="Student (distilled)",
        model_dir=student_dir / "model",
        metrics=upstream.score(upstream.student_logits),
        plan=plan,
    )
    twin_logits, twins = twin_rows(upstream)
    onnx_rows, deployed_logits = student_onnx_rows(upstream, student_row, plan, notes)
    # The teacher through the same export path: "why not just quantize the teacher?"
    teacher_rows, teacher_note = teacher_onnx_rows(upstream, teacher_row, plan)
    plain_teacher_rows, plain_student_rows = ([p.row] if p is not None else [] for p in plain)
    rows = [
        teacher_row,
        *plain_teacher_rows,
        student_row,
        *plain_student_rows,
        *twins,
        *onnx_rows,
        *teacher_rows,
    ]
    if teacher_note:
        notes.append(teacher_note)
    if config.tfidf_baseline:
        floor = tfidf_row(upstream, seed)
        if floor is None:
            notes.append("TF-IDF baseline skipped: the training split has fewer than two classes.")
        else:
            rows.append(floor)
    return rows, twin_logits, deployed_logits


def _training(upstream: ReportInputs, inputs: dict[str, Path]) -> dict[str, Any]:
    """Each trained model's budget, stop and curves: the teacher, its plain twin when the
    run adapted the teacher (same seed and budget: its line shows they were), the student,
    and the plain twin's student when the run trained it."""
    manifests = upstream.manifests
    training = {"teacher": training_record(manifests["teacher"], upstream.teacher_dir, CURVES)}
    if PLAIN_TEACHER in inputs:
        folder = inputs[PLAIN_TEACHER]
        manifest = finished_manifest(folder, PLAIN_TEACHER)
        training[PLAIN_TEACHER] = training_record(manifest, folder, CURVES)
    training["student"] = training_record(manifests["student"], upstream.student_dir, CURVES)
    if PLAIN_STUDENT in inputs:
        folder = inputs[PLAIN_STUDENT]
        manifest = finished_manifest(folder, PLAIN_STUDENT)
        training[PLAIN_STUDENT] = training_record(manifest, folder, CURVES)
    return training


def _disagreements(
    upstream: ReportInputs, deployed: tuple[str, np.ndarray] | None
) -> dict[str, Any] | None:
    """The test examples where the deployed student (``deployed``: its key and test logits)
    and the teacher disagree; None without a deployed ONNX row."""
    if deployed is None:
        return None
    key, logits = deployed
    return find_disagreements(
        upstream.test, upstream.label_names, upstream.teacher_logits, logits, key
    )


def _latency_setup(config: ReportConfig, max_length: int, rounds: int) -> dict[str, Any]:
    """How the latency columns were measured, for the report to state beside them."""
    return {
        "threads": config.latency_threads,
        "batch_size": config.latency_batch_size,
        "sequence_length": max_length,
        "runs": config.latency_runs,
        "warmup": config.latency_warmup,
        "rounds": rounds,
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
    }


# The stage's body, as the pipeline calls it: run(ctx, inputs, out, report=...).
run = report_stage(build_report, render, summary_metrics)
