"""Stage `report` for question answering: teacher, distilled student, its no-KD twin, the
deployed bundle and the teacher's int8 graph (when exported), side by side (the ONNX rows
scored on what they serve: :func:`~distill.tasks.question_answering.onnx_answers.onnx_answers`,
the bundle's own windows and span reading): SQuAD exact match and F1 (with HasAns / NoAns
for data with unanswerable questions), agreement with the teacher, size, parameters and
batch-1 latency on the windows of real test questions, timed in one interleaved run; the
int8 candidates the export weighed; whether distillation's F1 gain over the no-KD twin is
significant (paired, per test question); the test questions where the deployed student and
the teacher answer differently.

When the run adapted its teacher (``adapt`` / ``plain-teacher`` / ``plain-student`` among
the inputs), the table has the plain twins' rows and the report an ``adaptation`` section
(:mod:`distill.tasks.question_answering.report.adaptation`); without them, neither.

Writes ``report.json`` (the source of truth) and renders ``report.md`` / ``report.html``
from it (:mod:`distill.tasks.question_answering.render`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.config import ReportConfig
from distill.errors import ArtifactError
from distill.pipeline.artifacts import (
    RunContext,
    library_versions,
    relative_path,
    upstream_manifests,
)
from distill.report.adaptation import PLAIN_STUDENT, PLAIN_TEACHER, adaptation_summary
from distill.report.document import created, report_stage
from distill.report.ratios import add_ratios, kept, times_faster
from distill.report.training import training_summary
from distill.tasks.question_answering import render
from distill.tasks.question_answering.examples import Answer, QAExample, read_examples
from distill.tasks.question_answering.render import SCHEMA_VERSION
from distill.tasks.question_answering.report.adaptation import plain_twin, qa_adaptation
from distill.tasks.question_answering.report.disagreements import disagreements
from distill.tasks.question_answering.report.export import export_section
from distill.tasks.question_answering.report.rows import model_rows, saved_answers, time_rows
from distill.tasks.question_answering.report.verdict import (
    headline,
    kd_significance,
    no_answer_floor,
)
from distill.tasks.question_answering.task import QuestionAnswering
from distill.tasks.question_answering.windows import Windowing
from distill.timing.latency import hardware_info

UPSTREAM = ("data", "teacher", "student", "export")
# Against the PyTorch teacher: the share of its bytes, times faster at batch 1, the share
# of its F1 and exact match kept.
RATIOS = {
    "size_ratio": kept("bytes"),
    "speedup": times_faster,
    "f1_kept": kept("f1"),
    "exact_match_kept": kept("exact_match"),
}
BUNDLE_KEYS = ("max_length", "doc_stride", "max_question_length", "max_answer_length", "no_answer")


def summary_metrics(document: dict[str, Any]) -> dict[str, Any]:
    """The small part of the report kept in the stage manifest: each row's EM, F1 and size,
    and what adaptation bought (None when the run did not adapt)."""
    keys = ("exact_match", "f1", "bytes")
    return {
        "rows": {r["key"]: {k: r.get(k) for k in keys} for r in document["rows"]},
        "adaptation": adaptation_summary(document.get("adaptation")),
    }


def bundle_settings(bundle: Path) -> dict[str, Any]:
    """The windowing and span settings the bundle's manifest records (how it serves)."""
    path = bundle / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read the bundle manifest ({exc})") from None
    missing = [key for key in BUNDLE_KEYS if key not in manifest]
    if missing:
        raise ArtifactError(f"{path}: no {', '.join(missing)} (the export stage writes them)")
    return {key: manifest[key] for key in BUNDLE_KEYS}


def served(
    graph: Path, folder: Path, test: Sequence[QAExample], settings: dict[str, Any], desc: str
) -> list[Answer]:
    """A graph's answers to the test questions, served as its bundle would serve them."""
    from distill.tasks.question_answering.onnx_answers import onnx_answers

    return onnx_answers(graph, folder, list(test), settings, desc).answers


def build_report(ctx: RunContext, inputs: dict[str, Path], config: ReportConfig) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    started = time.perf_counter()
    manifests = upstream_manifests(inputs, UPSTREAM)
    test = read_examples(inputs["data"], "test")
    teacher_dir, student_dir = inputs["teacher"] / "model", inputs["student"] / "model"
    bundle = inputs["export"] / "bundle"
    settings = bundle_settings(bundle)
    teacher = saved_answers(inputs["teacher"], test)
    student = saved_answers(inputs["student"], test)
    deployed = served(bundle / "model.onnx", bundle, test, settings, "report: bundle")
    int8_graph = inputs["export"] / "teacher_baseline" / "model.onnx"
    teacher_int8 = (
        served(int8_graph, teacher_dir, test, settings, "report: teacher int8")
        if int8_graph.is_file()
        else None
    )
    rows = model_rows(manifests, inputs, test, teacher, deployed, teacher_int8)
    plain = plain_twin(inputs, PLAIN_TEACHER, test, teacher, teacher)
    plain_distilled = plain_twin(inputs, PLAIN_STUDENT, test, teacher, student)
    if plain_distilled is not None:
        rows.insert(2, plain_distilled.row)  # after the distilled student
    if plain is not None:
        rows.insert(1, plain.row)  # after the teacher
    torch_dirs = {"teacher": teacher_dir, "student": student_dir}
    for stage, twin in ((PLAIN_TEACHER, plain), (PLAIN_STUDENT, plain_distilled)):
        if twin is not None:
            torch_dirs[twin.row["key"]] = inputs[stage] / "model"
    onnx_graphs = {"deployed": (bundle / "model.onnx", bundle)}
    if teacher_int8 is not None:
        onnx_graphs["teacher_onnx_int8"] = (int8_graph, teacher_dir)
    windowing = Windowing(
        settings["max_length"], settings["doc_stride"], settings["max_question_length"]
    )
    time_rows(rows, config, test, windowing, torch_dirs, onnx_graphs)
    add_ratios(rows, RATIOS, skip_missing=True)
    twin_dir = inputs["student"] / "baseline"
    twin = saved_answers(twin_dir, test) if (twin_dir / "predictions").is_dir() else None
    significance = kd_significance(test, student, twin)
    return {
        "schema_version": SCHEMA_VERSION,
        "task": QuestionAnswering.name,
        "run": ctx.name,
        "created": created(),
        "rows": rows,
        "headline": headline(rows, significance, no_answer_floor(test)),
        "distillation": {"kd_significance": significance},
        "adaptation": qa_adaptation(inputs, plain, plain_distilled),
        "export": export_section(manifests["export"]["metrics"]),
        "disagreements": disagreements(test, teacher, deployed),
        "training": {name: training_summary(manifests[name]) for name in ("teacher", "student")},
        "data": (manifests["data"].get("metrics") or {}),
        "settings": settings,
        "hardware": hardware_info(),
        "libraries": library_versions(),
        "bundle": relative_path(bundle, ctx.workdir),
        "seconds": round(time.perf_counter() - started, 1),
    }


# The stage's body, as the pipeline calls it: run(ctx, inputs, out, report=...).
run = report_stage(build_report, render, summary_metrics)
