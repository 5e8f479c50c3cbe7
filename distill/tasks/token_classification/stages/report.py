"""Stage `report` for tagging: teacher, distilled student, its no-KD twin, the deployed
bundle, the teacher quantized (when exported) and the memorization floor, side by side (the
ONNX rows scored on what they serve: the bundle runner's entities placed back on the words):
entity micro/macro F1 (seqeval, strict IOB2), token accuracy, agreement with the teacher
(entity level), size, parameters and batch-1 latency timed in one interleaved run; the int8
candidates the export weighed (entity F1, drop vs fp32, size, the export's batch-1 p50,
whether the gate passed it) and why it deployed the one it did; whether distillation's gain
over the no-KD twin is significant (paired, per test sentence); per-type scores; the test
sentences where the deployed student and the teacher disagree.

When the run adapted its teacher (the ``adapt`` and ``plain-teacher`` stage folders among
the inputs), the table has the plain twin's row (``teacher_plain``: the same teacher
fine-tuned without adaptation; ``teacher``, the adapted one, stays the reference for the
ratios) and the report an ``adaptation`` section
(:mod:`distill.tasks.token_classification.report.adaptation`); without them both are absent.
When the run also distilled a student from the plain twin (the ``plain-student`` folder,
laid out as the student stage's), the table has its row after the distilled student's
(``student_plain_teacher``, timed with the others) and the section the two students' paired
comparison; without it, neither.

Writes ``report.json`` (the source of truth) and renders ``report.md`` / ``report.html``
from it (:mod:`distill.tasks.token_classification.render`). Each section is built by its own
module of :mod:`distill.tasks.token_classification.report`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distill.config import ReportConfig
from distill.data.ragged import load_ragged
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
from distill.tasks.token_classification import render
from distill.tasks.token_classification.files import read_tag_names, read_tagged_split
from distill.tasks.token_classification.metrics import aligned, word_tags
from distill.tasks.token_classification.onnx_tags import served_tags
from distill.tasks.token_classification.render import SCHEMA_VERSION
from distill.tasks.token_classification.report.adaptation import (
    plain_student,
    plain_teacher,
    tagging_adaptation,
)
from distill.tasks.token_classification.report.disagreements import disagreements
from distill.tasks.token_classification.report.export import export_section
from distill.tasks.token_classification.report.rows import model_rows, time_rows
from distill.tasks.token_classification.report.significance import kd_significance
from distill.tasks.token_classification.report.verdict import headline, per_type
from distill.tasks.token_classification.runner import load_bundle
from distill.tasks.token_classification.task import TokenClassification
from distill.tasks.token_classification.training import encode_words, word_starts
from distill.timing.latency import hardware_info
from distill.train.models import load_tokenizer

UPSTREAM = ("data", "teacher", "student", "export")
# Against the PyTorch teacher, where both numbers exist: the share of its bytes (not "times
# smaller", as in the other tasks), times faster at batch 1, the share of its F1 kept.
RATIOS = {"size_ratio": kept("bytes"), "speedup": times_faster, "f1_kept": kept("entity_f1")}


def summary_metrics(document: dict[str, Any]) -> dict[str, Any]:
    """The small part of the report kept in the stage manifest: each row's F1 and size, and
    what adaptation bought (None when the run did not adapt)."""
    return {
        "rows": {r["key"]: {k: r.get(k) for k in ("entity_f1", "bytes")} for r in document["rows"]},
        "adaptation": adaptation_summary(document.get("adaptation")),
    }


def build_report(ctx: RunContext, inputs: dict[str, Path], config: ReportConfig) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    started = time.perf_counter()
    manifests = upstream_manifests(inputs, UPSTREAM)
    tag_names = read_tag_names(inputs["data"])
    train, test = (read_tagged_split(inputs["data"], name) for name in ("train", "test"))
    teacher_dir, student_dir = inputs["teacher"] / "model", inputs["student"] / "model"
    bundle = inputs["export"] / "bundle"
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    encoding = encode_words(tokenizer, test.tokens, _max_length(manifests))
    starts = word_starts(encoding, len(test))
    gold = [
        [tag_names[t] for t in tags[: len(s)]] for tags, s in zip(test.tags, starts, strict=True)
    ]
    teacher_tags = word_tags(
        load_ragged(inputs["teacher"] / "logits" / "test.npz", test.ids), starts, tag_names
    )
    max_length = _max_length(manifests)
    # The teacher's plain twin (when the run adapted it), scored on the teacher's words, and
    # the student distilled from it (when the run trained one).
    plain = plain_teacher(inputs, test, tag_names, max_length, gold, teacher_tags)
    plain_distilled = plain_student(inputs, test, tag_names, max_length, gold, teacher_tags)
    # The deployed row is what the bundle serves: its runner (the code `distill predict`
    # runs, with the bundle's aggregation) over the test sentences, entities read back onto
    # the words.
    served = load_bundle(bundle)
    deployed_tags = served_tags(served, test.tokens, "report: bundle").tags
    gold, teacher_tags, deployed_tags = aligned(gold, teacher_tags, deployed_tags)
    rows = model_rows(manifests, inputs, gold, teacher_tags, deployed_tags, train, test, tag_names)
    if plain_distilled is not None:
        rows.insert(2, plain_distilled.row)  # after the distilled student
    if plain is not None:
        rows.insert(1, plain.row)  # after the teacher
    time_rows(
        rows,
        config,
        test,
        teacher_dir,
        student_dir,
        bundle,
        inputs["export"],
        max_length,
        plain_dirs={
            twin.row["key"]: inputs[stage] / "model"
            for stage, twin in ((PLAIN_TEACHER, plain), (PLAIN_STUDENT, plain_distilled))
            if twin is not None
        },
    )
    add_ratios(rows, RATIOS, skip_missing=True)
    significance = kd_significance(inputs["student"], test, tag_names, max_length)
    return {
        "schema_version": SCHEMA_VERSION,
        "task": TokenClassification.name,
        "run": ctx.name,
        "created": created(),
        "rows": rows,
        "per_type": per_type(rows),
        "headline": headline(rows, significance),
        "distillation": {"kd_significance": significance},
        "adaptation": tagging_adaptation(inputs, plain, plain_distilled),
        "export": export_section(manifests["export"]["metrics"]),
        "disagreements": disagreements(test, gold, teacher_tags, deployed_tags),
        "training": {name: training_summary(manifests[name]) for name in ("teacher", "student")},
        "data": (manifests["data"].get("metrics") or {}),
        "hardware": hardware_info(),
        "libraries": library_versions(),
        "bundle": relative_path(bundle, ctx.workdir),
        "aggregation": served.aggregation,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _max_length(manifests: dict[str, dict[str, Any]]) -> int:
    """The sequence length the models were exported with."""
    return int(manifests["export"]["config"]["data"]["max_length"])


# The stage's body, as the pipeline calls it: run(ctx, inputs, out, report=...).
run = report_stage(build_report, render, summary_metrics)
