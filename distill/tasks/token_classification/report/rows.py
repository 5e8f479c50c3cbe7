"""The rows of the token-classification report: the teacher, the distilled student and its
no-KD twin (scored by their stages), the deployed bundle (scored here on what it serves),
the teacher quantized through the student's export, and the memorization floor; then every
model's batch-1 latency, timed in one interleaved run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import ReportConfig
from distill.report.rows import weights_bytes
from distill.tasks.token_classification.metrics import memorization_tags, tagging_metrics
from distill.tasks.token_classification.models import load_saved_tagger
from distill.timing.latency import TimingPlan
from distill.train.models import load_tokenizer

SCORES = ("entity_f1", "entity_macro_f1", "entity_precision", "entity_recall", "token_accuracy")


def scored_row(key: str, name: str, scores: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A model row: every column present (None when not measured), so templates need no guards."""
    row = {"key": key, "name": name, **{k: scores.get(k) for k in SCORES}}
    row.update(agreement=scores.get("agreement"), per_type=scores.get("per_type"))
    row.update(bytes=None, parameters=None, latency=None)
    return {**row, **extra}


def model_rows(
    manifests: dict[str, dict[str, Any]],
    inputs: dict[str, Path],
    gold: list[list[str]],
    teacher_tags: list[list[str]],
    deployed_tags: list[list[str]],
    train: Any,
    test: Any,
    tag_names: list[str],
) -> list[dict[str, Any]]:
    """The rows in order: teacher, student, its no-KD twin, the deployed bundle, the
    quantized teacher, the memorization floor."""
    teacher = manifests["teacher"]["metrics"]
    student = manifests["student"]["metrics"]
    export = manifests["export"]["metrics"]
    rows = [
        scored_row(
            "teacher",
            "Teacher",
            teacher["test"],
            bytes=weights_bytes(inputs["teacher"] / "model"),
            parameters=teacher["parameters"]["total"],
            agreement=1.0,
        ),
        scored_row(
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
            scored_row(
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
        scored_row(
            "deployed",
            f"Student ONNX {export['deployed']} ({chosen}deployed)",
            deployed,
            bytes=export["deployed_bytes"],
            parameters=student["parameters"]["total"],
            deployed=True,
        )
    )
    teacher_int8 = teacher_int8_row(export, teacher)
    if teacher_int8 is not None:
        rows.append(teacher_int8)
    rows.append(memorization_row(gold, teacher_tags, train, test, tag_names))
    return rows


def teacher_int8_row(export: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any] | None:
    """The teacher quantized through the student's export (``export.teacher_baseline``),
    scored by the export stage; None when it made none."""
    baseline = export.get("teacher_baseline") or {}
    if "int8" not in baseline:
        return None
    return scored_row(
        "teacher_onnx_int8",
        f"Teacher ONNX int8 ({baseline['int8']['candidate']})"
        if baseline["int8"].get("candidate")
        else "Teacher ONNX int8",
        baseline["int8"],
        bytes=baseline["int8"]["bytes"],
        parameters=teacher["parameters"]["total"],
    )


def memorization_row(
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
    return scored_row(
        "memorization",
        "Memorization floor (most frequent training tag)",
        tagging_metrics(gold, floor_tags, teacher_tags),
        floor=True,
    )


def time_rows(
    rows: list[dict[str, Any]],
    config: ReportConfig,
    test: Any,
    teacher_dir: Path,
    student_dir: Path,
    bundle: Path,
    export_dir: Path,
    max_length: int,
    plain_dirs: dict[str, Path] | None = None,
) -> None:
    """Batch-1 latency of every model row, in one interleaved run (a fixed sequence length);
    ``plain_dirs``: the plain twins' model folders by row key (``teacher_plain``, the
    teacher's; ``student_plain_teacher``, the student distilled from it), those the run
    trained."""
    texts = [" ".join(words) for words in test.tokens[: max(8, config.latency_runs)]]
    plan = TimingPlan.for_texts(config, texts, max_length)
    teacher_tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    plan.add_torch("teacher", load_saved_tagger(teacher_dir).eval(), teacher_tokenizer)
    for key, model_dir in (plain_dirs or {}).items():
        plan.add_torch(
            key,
            load_saved_tagger(model_dir).eval(),
            load_tokenizer(str(model_dir), f"plain twin model {model_dir}"),
        )
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
