"""Stage `report` for tagging: teacher, distilled student, its no-KD twin, the deployed
bundle, the teacher quantized (when exported) and the memorization floor, side by side (the
ONNX rows scored on what they serve: the bundle runner's entities placed back on the words):
entity micro/macro F1 (seqeval, strict IOB2), token accuracy, agreement with the teacher
(entity level), size, parameters and batch-1 latency timed in one interleaved run; the int8
candidates the export weighed (entity F1, drop vs fp32, size, the export's batch-1 p50,
whether the gate passed it) and why it deployed the one it did; whether distillation's gain
over the no-KD twin is significant (paired, per test sentence); per-type scores; the test
sentences where the deployed student and the teacher disagree.

Writes ``report.json`` (the source of truth) and renders ``report.md`` / ``report.html``
from it (:mod:`distill.tasks.token_classification.render`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distill.artifacts import RunContext, library_versions, relative_path, upstream_manifests
from distill.config import ReportConfig
from distill.latency import hardware_info
from distill.models import load_tokenizer
from distill.report.document import created, run_report
from distill.report.ratios import add_ratios, kept, times_faster
from distill.report.rows import weights_bytes
from distill.report.timing import TimingPlan
from distill.report.training import training_summary
from distill.tasks.token_classification import render
from distill.tasks.token_classification.files import read_tag_names, read_tagged_split
from distill.tasks.token_classification.logits import load_ragged
from distill.tasks.token_classification.metrics import (
    aligned,
    memorization_tags,
    tagging_metrics,
    word_tags,
)
from distill.tasks.token_classification.models import load_saved_tagger
from distill.tasks.token_classification.onnx_tags import served_tags
from distill.tasks.token_classification.render import SCHEMA_VERSION
from distill.tasks.token_classification.report.significance import kd_significance
from distill.tasks.token_classification.runner import load_bundle
from distill.tasks.token_classification.task import TokenClassification
from distill.tasks.token_classification.training import encode_words, word_starts

UPSTREAM = ("data", "teacher", "student", "export")
MAX_DISAGREEMENTS = 10
SCORES = ("entity_f1", "entity_macro_f1", "entity_precision", "entity_recall", "token_accuracy")
# Against the PyTorch teacher, where both numbers exist: the share of its bytes (not "times
# smaller", as in the other tasks), times faster at batch 1, the share of its F1 kept.
RATIOS = {"size_ratio": kept("bytes"), "speedup": times_faster, "f1_kept": kept("entity_f1")}


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, report: ReportConfig
) -> dict[str, Any]:
    """Build ``report.json`` from the upstream folders, then render Markdown and HTML from it."""
    return run_report(lambda: build_report(ctx, inputs, report), out, render, summary_metrics)


def summary_metrics(document: dict[str, Any]) -> dict[str, Any]:
    """The small part of the report kept in the stage manifest: each row's F1 and size."""
    return {
        "rows": {r["key"]: {k: r.get(k) for k in ("entity_f1", "bytes")} for r in document["rows"]}
    }


def build_report(ctx: RunContext, inputs: dict[str, Path], config: ReportConfig) -> dict[str, Any]:
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
    # The deployed row is what the bundle serves: its runner (the code `distill predict`
    # runs, with the bundle's aggregation) over the test sentences, entities read back onto
    # the words.
    served = load_bundle(bundle)
    deployed_tags = served_tags(served, test.tokens, "report: bundle").tags
    gold, teacher_tags, deployed_tags = aligned(gold, teacher_tags, deployed_tags)
    rows = _rows(manifests, inputs, gold, teacher_tags, deployed_tags, train, test, tag_names)
    _time_rows(
        rows,
        config,
        test,
        teacher_dir,
        student_dir,
        bundle,
        inputs["export"],
        _max_length(manifests),
    )
    add_ratios(rows, RATIOS, skip_missing=True)
    significance = kd_significance(inputs["student"], test, tag_names, _max_length(manifests))
    return {
        "schema_version": SCHEMA_VERSION,
        "task": TokenClassification.name,
        "run": ctx.name,
        "created": created(),
        "rows": rows,
        "per_type": _per_type(rows),
        "headline": _headline(rows, significance),
        "distillation": {"kd_significance": significance},
        "export": export_section(manifests["export"]["metrics"]),
        "disagreements": _disagreements(test, gold, teacher_tags, deployed_tags),
        "training": {name: training_summary(manifests[name]) for name in ("teacher", "student")},
        "data": (manifests["data"].get("metrics") or {}),
        "hardware": hardware_info(),
        "libraries": library_versions(),
        "bundle": relative_path(bundle, ctx.workdir),
        "aggregation": served.aggregation,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _max_length(manifests: dict[str, dict[str, Any]]) -> int:
    return int(manifests["export"]["config"]["data"]["max_length"])


def _row(key: str, name: str, scores: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A model row: every column present (None when not measured), so templates need no guards."""
    row = {"key": key, "name": name, **{k: scores.get(k) for k in SCORES}}
    row.update(agreement=scores.get("agreement"), per_type=scores.get("per_type"))
    row.update(bytes=None, parameters=None, latency=None)
    return {**row, **extra}


def _rows(
    manifests: dict[str, dict[str, Any]],
    inputs: dict[str, Path],
    gold: list[list[str]],
    teacher_tags: list[list[str]],
    deployed_tags: list[list[str]],
    train: Any,
    test: Any,
    tag_names: list[str],
) -> list[dict[str, Any]]:
    teacher = manifests["teacher"]["metrics"]
    student = manifests["student"]["metrics"]
    export = manifests["export"]["metrics"]
    rows = [
        _row(
            "teacher",
            "Teacher",
            teacher["test"],
            bytes=weights_bytes(inputs["teacher"] / "model"),
            parameters=teacher["parameters"]["total"],
            agreement=1.0,
        ),
        _row(
            "student",
            "Student (distilled)",
            student["test"],
            bytes=weights_bytes(inputs["student"] / "model"),
            parameters=student["parameters"]["total"],
        ),
    ]
    if "baseline" in student:
        base = student["baseline"]
        rows.append(
            _row(
                "student_no_kd",
                "Student without KD",
                base["test"],
                bytes=weights_bytes(inputs["student"] / "baseline" / "model"),
                parameters=base["parameters"]["total"],
            )
        )
    deployed = tagging_metrics(gold, deployed_tags, teacher_tags)
    chosen = f"{export['chosen']}, " if export.get("chosen") else ""
    rows.append(
        _row(
            "deployed",
            f"Student ONNX {export['deployed']} ({chosen}deployed)",
            deployed,
            bytes=export["deployed_bytes"],
            parameters=student["parameters"]["total"],
            deployed=True,
        )
    )
    teacher_int8 = _teacher_int8_row(export, teacher)
    if teacher_int8 is not None:
        rows.append(teacher_int8)
    rows.append(_memorization_row(gold, teacher_tags, train, test, tag_names))
    return rows


def _teacher_int8_row(export: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any] | None:
    """The teacher quantized through the student's export (``export.teacher_baseline``),
    scored by the export stage; None when it made none."""
    baseline = export.get("teacher_baseline") or {}
    if "int8" not in baseline:
        return None
    return _row(
        "teacher_onnx_int8",
        f"Teacher ONNX int8 ({baseline['int8']['candidate']})"
        if baseline["int8"].get("candidate")
        else "Teacher ONNX int8",
        baseline["int8"],
        bytes=baseline["int8"]["bytes"],
        parameters=teacher["parameters"]["total"],
    )


def _memorization_row(
    gold: list[list[str]],
    teacher_tags: list[list[str]],
    train: Any,
    test: Any,
    tag_names: list[str],
) -> dict[str, Any]:
    """The floor: each test word tagged with its most frequent training tag."""
    gold_train = [[tag_names[t] for t in tags] for tags in train.tags]
    floor_tags = memorization_tags(
        train.tokens, gold_train, [s[: len(g)] for s, g in zip(test.tokens, gold, strict=True)]
    )
    return _row(
        "memorization",
        "Memorization floor (most frequent training tag)",
        tagging_metrics(gold, floor_tags, teacher_tags),
        floor=True,
    )


def export_section(export: dict[str, Any]) -> dict[str, Any] | None:
    """The int8 candidates the export stage weighed (fp32 first, as their reference), the gate
    and why it deployed what it did; None for an export that recorded no candidates."""
    if "candidates" not in export:
        return None
    fp32 = export["student"]["fp32"]
    optimization = export["student"].get("optimization") or {}
    return {
        "gate": export.get("gate"),
        "deployed": export["deployed"],
        "chosen": export["chosen"],
        "reason": export["chosen_reason"],
        "optimization": {
            k: optimization.get(k)
            for k in ("level", "skipped", "fused_operators", "parity_max_abs_diff")
        },
        "fp32": {
            "entity_f1": fp32["entity_f1"],
            "bytes": fp32["bytes"],
            "p50_ms": (fp32.get("latency_b1") or {}).get("p50_ms"),
        },
        "candidates": [_candidate_row(r, export["chosen"]) for r in export["candidates"]],
    }


def _candidate_row(record: dict[str, Any], chosen: str | None) -> dict[str, Any]:
    """One candidate as the report shows it (every column present, None when not measured)."""
    keys = ("name", "description", "entity_f1", "entity_f1_drop", "agreement_with_fp32")
    return {
        **{k: record.get(k) for k in keys},
        "bytes": record.get("bytes"),
        "p50_ms": (record.get("latency_b1") or {}).get("p50_ms"),
        "speedup_vs_fp32": record.get("speedup_vs_fp32"),
        "qualifies": record.get("qualifies", False),
        "error": record.get("error"),
        "deployed": record["name"] == chosen,
    }


def _time_rows(
    rows: list[dict[str, Any]],
    config: ReportConfig,
    test: Any,
    teacher_dir: Path,
    student_dir: Path,
    bundle: Path,
    export_dir: Path,
    max_length: int,
) -> None:
    """Batch-1 latency of every model row, in one interleaved run (a fixed sequence length)."""
    texts = [" ".join(words) for words in test.tokens[: max(8, config.latency_runs)]]
    plan = TimingPlan(config, texts, max_length)
    teacher_tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    plan.add_torch("teacher", load_saved_tagger(teacher_dir).eval(), teacher_tokenizer)
    plan.add_torch(
        "student",
        load_saved_tagger(student_dir).eval(),
        load_tokenizer(str(student_dir), "student"),
    )
    plan.add_onnx("deployed", bundle / "model.onnx", load_tokenizer(str(bundle), "the bundle"))
    teacher_int8 = export_dir / "teacher_baseline" / "model.onnx"
    if teacher_int8.is_file():
        plan.add_onnx("teacher_onnx_int8", teacher_int8, teacher_tokenizer)
    timings = plan.run()
    for row in rows:
        if row["key"] in timings:
            row["latency"] = timings[row["key"]]


def _per_type(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each entity type: teacher vs deployed student precision / recall / F1, with support."""
    by_key = {row["key"]: row.get("per_type") or {} for row in rows}
    teacher, deployed = by_key.get("teacher", {}), by_key.get("deployed", {})
    return [
        {
            "type": name,
            "support": teacher[name]["support"],
            "teacher": teacher[name],
            "deployed": deployed.get(name),
        }
        for name in sorted(teacher)
    ]


def _headline(
    rows: list[dict[str, Any]], significance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The verdict in numbers and words (the paired test's sentence when there is a twin)."""
    by_key = {row["key"]: row for row in rows}
    teacher, deployed, floor = by_key["teacher"], by_key["deployed"], by_key["memorization"]
    student, twin = by_key["student"], by_key.get("student_no_kd")
    headline: dict[str, Any] = {
        "f1_kept": deployed.get("f1_kept"),
        "size_ratio": deployed.get("size_ratio"),
        "speedup": deployed.get("speedup"),
        "kd_gain": None if twin is None else student["entity_f1"] - twin["entity_f1"],
        "warnings": [
            f"{row['name']} ({row['entity_f1']:.1%} entity F1) is below the memorization floor ({floor['entity_f1']:.1%})"
            for row in (teacher, deployed)
            if row["entity_f1"] < floor["entity_f1"]
        ],
    }
    if significance is not None:
        headline["verdict"] = significance["verdict"]
    return headline


def _disagreements(
    test: Any, gold: list[list[str]], teacher: list[list[str]], deployed: list[list[str]]
) -> list[dict[str, Any]]:
    """Test sentences where the deployed student's entities differ from the teacher's."""
    from seqeval.metrics.sequence_labeling import get_entities

    def spans(words: list[str], tags: list[str]) -> list[str]:
        return [
            f"{kind}: {' '.join(words[start : end + 1])}" for kind, start, end in get_entities(tags)
        ]

    found = []
    for words, g, t, d in zip(test.tokens, gold, teacher, deployed, strict=True):
        words = words[: len(g)]
        if spans(words, t) != spans(words, d):
            found.append(
                {
                    "text": " ".join(words),
                    "gold": spans(words, g),
                    "teacher": spans(words, t),
                    "student": spans(words, d),
                }
            )
        if len(found) == MAX_DISAGREEMENTS:
            break
    return found
