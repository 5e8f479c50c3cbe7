"""The rows of the question-answering report: the teacher, the distilled student and its no-KD
twin (their saved test answers, scored here with the SQuAD evaluation), the deployed bundle and
the teacher's int8 graph (scored on what they serve: :func:`onnx_answers`, the bundle runner's
windows and spans), then every model's batch-1 latency on the windows of real test questions,
timed in one interleaved run.

Every row is scored against the same gold answers and the teacher's answers (agreement: the
same span, or both "no answer"), so the columns compare like with like.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import ReportConfig
from distill.report.rows import weights_bytes
from distill.tasks.question_answering.examples import Answer, QAExample, read_answers
from distill.tasks.question_answering.metrics import qa_metrics
from distill.tasks.question_answering.windows import (
    Windowing,
    make_windows,
    padded,
    windowing_tokenizer,
)
from distill.timing.latency import TimingPlan

SCORES = ("exact_match", "f1", "answered", "has_answer", "no_answer")
PREDICTIONS = Path("predictions") / "test.jsonl"


def scored_row(key: str, name: str, scores: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A model row: every column present (None when not measured), so templates need no guards."""
    row = {"key": key, "name": name, **{k: scores.get(k) for k in SCORES}}
    row.update(agreement=scores.get("agreement"), f1_vs_teacher=scores.get("f1_vs_reference"))
    row.update(bytes=None, parameters=None, latency=None)
    return {**row, **extra}


def saved_answers(folder: Path, test: Sequence[QAExample]) -> list[Answer]:
    """A stage folder's answers to the test questions (``predictions/test.jsonl``), in order."""
    return read_answers(folder / PREDICTIONS, [e.id for e in test])


def parameters_of(metrics: dict[str, Any]) -> int | None:
    """The total parameters a stage's metrics record (None when it does not)."""
    return (metrics.get("parameters") or {}).get("total")


def pytorch_row(
    key: str,
    name: str,
    folder: Path,
    metrics: dict[str, Any],
    test: Sequence[QAExample],
    teacher: Sequence[Answer],
) -> dict[str, Any]:
    """The row of a PyTorch model a stage saved in ``folder`` (``model/``, ``predictions/``)."""
    answers = saved_answers(folder, test)
    return scored_row(
        key,
        name,
        qa_metrics(test, answers, reference=teacher),
        bytes=weights_bytes(folder / "model"),
        parameters=parameters_of(metrics),
    )


def model_rows(
    manifests: dict[str, dict[str, Any]],
    inputs: dict[str, Path],
    test: Sequence[QAExample],
    teacher: Sequence[Answer],
    deployed: Sequence[Answer],
    teacher_int8: Sequence[Answer] | None,
) -> list[dict[str, Any]]:
    """The rows in order: teacher, student, its no-KD twin (when trained), the deployed
    bundle, the teacher's int8 graph (when exported)."""
    teacher_metrics = manifests["teacher"]["metrics"]
    student_metrics = manifests["student"]["metrics"]
    export = manifests["export"]["metrics"]
    rows = [
        pytorch_row("teacher", "Teacher", inputs["teacher"], teacher_metrics, test, teacher),
        pytorch_row(
            "student", "Student (distilled)", inputs["student"], student_metrics, test, teacher
        ),
    ]
    baseline = inputs["student"] / "baseline"
    if (baseline / PREDICTIONS).is_file():
        twin_metrics = student_metrics.get("baseline") or {}
        rows.append(
            pytorch_row(
                "student_no_kd", "Student without KD", baseline, twin_metrics, test, teacher
            )
        )
    chosen = f"{export['chosen']}, " if export.get("chosen") else ""
    rows.append(
        scored_row(
            "deployed",
            f"Student ONNX {export.get('deployed', '?')} ({chosen}deployed)",
            qa_metrics(test, deployed, reference=teacher),
            bytes=export.get("deployed_bytes"),
            parameters=parameters_of(student_metrics),
            deployed=True,
        )
    )
    if teacher_int8 is not None:
        int8 = (export.get("teacher_baseline") or {}).get("int8") or {}
        rows.append(
            scored_row(
                "teacher_onnx_int8",
                "Teacher ONNX int8",
                qa_metrics(test, teacher_int8, reference=teacher),
                bytes=int8.get("bytes"),
                parameters=parameters_of(teacher_metrics),
            )
        )
    return rows


def window_batch(questions: Sequence[QAExample], windowing: Windowing, batch_size: int) -> Any:
    """The :data:`~distill.timing.latency.BatchBuilder` of QA: the first ``batch_size``
    windows of the test questions (their real windows, cut by each model's own tokenizer),
    padded to ``windowing.max_length`` so every model sees the same shape."""

    def build(tokenizer: Any) -> dict[str, np.ndarray]:
        cutter = windowing_tokenizer(tokenizer, windowing)
        windows, _ = make_windows(
            cutter, [q.question for q in questions], [q.context for q in questions], windowing
        )
        chosen = [windows[i % len(windows)] for i in range(batch_size)]
        return padded(chosen, tokenizer.pad_token_id or 0, windowing.max_length)

    return build


def time_rows(
    rows: list[dict[str, Any]],
    config: ReportConfig,
    test: Sequence[QAExample],
    windowing: Windowing,
    torch_dirs: dict[str, Path],
    onnx_graphs: dict[str, tuple[Path, Path]],
) -> None:
    """Batch-1 latency of every model row, in one interleaved run on the windows of the
    first test questions; ``torch_dirs``: saved PyTorch models by row key; ``onnx_graphs``:
    (graph, folder with its tokenizer) by row key."""
    from transformers import AutoModelForQuestionAnswering

    from distill.train.models import load_saved, load_tokenizer

    questions = list(test[: max(8, config.latency_runs)])
    batch = window_batch(questions, windowing, config.latency_batch_size)
    plan = TimingPlan(config, batch, windowing.max_length)
    for key, folder in torch_dirs.items():
        model = load_saved(AutoModelForQuestionAnswering, folder).eval()
        plan.add_torch(key, model, load_tokenizer(str(folder), f"{key} model {folder}"))
    for key, (graph, folder) in onnx_graphs.items():
        plan.add_onnx(key, graph, load_tokenizer(str(folder), f"{key} tokenizer {folder}"))
    timings = plan.run()
    for row in rows:
        if row["key"] in timings:
            row["latency"] = timings[row["key"]]
