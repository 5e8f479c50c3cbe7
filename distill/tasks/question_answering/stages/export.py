"""Stage `export` for question answering: the student to ONNX (torch dynamo,
``AutoModelForQuestionAnswering``: outputs ``start_logits`` and ``end_logits``), parity with
PyTorch on both outputs, the int8 candidates, the one gate on the SQuAD F1 drop
(``export.max_answer_f1_drop``), and the fastest candidate that passes it deployed.

The shared export sequence (:mod:`distill.export.sequence`) does the work; this module gives
it QA's part: parity and timing on real test questions with their contexts (tokenized as
pairs), and every graph scored as its bundle serves it (the runner's windows and best span,
:func:`~distill.tasks.question_answering.onnx_answers.onnx_answers`): EM, F1, the F1 drop
the gate reads and the share of questions answered with the same span as fp32. The fused
graph is never CLS-pruned: every token may start or end the answer. With
``export.teacher_baseline`` the teacher goes the same way with the student's candidate.

Writes ``bundle/`` (published to ``export/<run>/``): ``model.onnx``, the fp32 reference
under ``fp32/`` when int8 is deployed, config.json, the fast tokenizer, and manifest.json
(last): task, the windowing (max_length, doc_stride, max_question_length),
max_answer_length, no_answer, every candidate with its measurements, the chosen one and
why, and the test metrics. ``teacher_baseline/model.onnx``: the teacher's int8 graph.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import DataConfig, ExportConfig
from distill.export.bundle import FP32_REFERENCE, write_bundle_manifest
from distill.export.candidates import CANDIDATES, Measure
from distill.export.gate import Gate
from distill.export.sequence import (
    EncoderExport,
    Scored,
    deploy,
    export_model,
    student_record,
    teacher_baseline,
    time_and_choose,
)
from distill.pipeline.artifacts import RunContext
from distill.tasks.question_answering.examples import QAExample, read_examples
from distill.tasks.question_answering.metrics import qa_metrics
from distill.tasks.question_answering.models import MODEL_CLASS, load_saved_qa_model
from distill.tasks.question_answering.onnx_answers import Served, onnx_answers
from distill.tasks.question_answering.task import QuestionAnswering
from distill.train.models import load_tokenizer

PARITY_QUESTIONS = 32
F1 = Measure(score="f1", drop="f1_drop", label="F1")
# The scores of a candidate the bundle manifest's ``metrics.test`` carries.
TEST_METRICS = ("exact_match", "f1", "answered", "has_answer", "no_answer", "examples")


def served_settings(data: DataConfig, no_answer: bool) -> dict[str, Any]:
    """What the runner reads of a bundle's manifest to serve it (windows and spans)."""
    return {
        "max_length": data.max_length,
        "doc_stride": data.doc_stride,
        "max_question_length": data.max_question_length,
        "max_answer_length": data.max_answer_length,
        "no_answer": no_answer,
    }


def _max_logit_difference(served: Served, reference: Served) -> float:
    differences = [
        float(np.max(np.abs(a - b)))
        for ours, theirs in (
            (served.start_logits, reference.start_logits),
            (served.end_logits, reference.end_logits),
        )
        for question_a, question_b in zip(ours, theirs, strict=True)
        for a, b in zip(question_a, question_b, strict=True)
        if a.size
    ]
    return max(differences, default=0.0)


def compare(served: Served, fp32: Scored, test: list[QAExample]) -> dict[str, Any]:
    """A candidate's record measures: EM and F1 against the gold answers, the F1 drop the
    gate reads, its agreement with fp32's spans and the largest logit difference."""
    reference: Served = fp32.output
    scores = qa_metrics(test, served.answers, reference.answers)
    return {
        **{k: v for k, v in scores.items() if k not in ("agreement", "f1_vs_reference")},
        "f1_drop": fp32.scores["f1"] - scores["f1"],
        "agreement_with_fp32": scores["agreement"],
        "max_abs_logit_diff_vs_fp32": _max_logit_difference(served, reference),
    }


def export_spec(
    model_dir: Path, test: list[QAExample], settings: dict[str, Any], export: ExportConfig
) -> EncoderExport:
    """What the export sequence needs of QA for one model: its graphs are served over the
    test questions with the tokenizer saved in ``model_dir``, as its bundle would be."""
    pairs = [(e.question, e.context) for e in test]

    def load(folder: Path, role: str) -> tuple[Any, Any]:
        return load_tokenizer(str(folder), f"{role} model"), load_saved_qa_model(folder).eval()

    def infer(path: Path, label: str, tokenizer: Any) -> Served:
        return onnx_answers(path, model_dir, test, settings, f"export: {label}")

    return EncoderExport(
        model_class=MODEL_CLASS,
        load=load,
        parity_inputs=pairs[:PARITY_QUESTIONS],
        timing_inputs=pairs,
        infer=infer,
        evaluate=lambda served: qa_metrics(test, served.answers),
        compare=lambda served, fp32: compare(served, fp32, test),
        measure=F1,
        gate=Gate("export.max_answer_f1_drop", export.max_answer_f1_drop),
        examples=f"{len(test)} test questions",
        max_length=settings["max_length"],
    )


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, export: ExportConfig
) -> dict[str, Any]:
    """Export, check, weigh and time the student's candidates, deploy the chosen one into
    ``bundle/``, then (``export.teacher_baseline``) the teacher with the same candidate."""
    test = read_examples(inputs["data"], "test")
    no_answer = any(not e.answerable for e in read_examples(inputs["data"], "train"))
    settings = served_settings(data, no_answer)
    model_dir = inputs["student"] / "model"
    spec = export_spec(model_dir, test, settings, export)
    with tempfile.TemporaryDirectory(prefix="distill-export-") as scratch:
        work = Path(scratch)
        wanted = [CANDIDATES[name] for name in export.candidate_names()]
        student = export_model(spec, model_dir, work / "student", export, wanted, "student")
        choice = time_and_choose(spec, student, export)
        bundle, roles = deploy(out / "bundle", model_dir, student, choice)
        metrics = student_record(student, choice, export, spec.gate, TEST_METRICS, data.max_length)
        metrics["deployed_bytes"] = (bundle / "model.onnx").stat().st_size
        if export.teacher_baseline:
            teacher_dir = inputs["teacher"] / "model"
            metrics["teacher_baseline"] = teacher_baseline(
                export_spec(teacher_dir, test, settings, export),
                teacher_dir,
                work / "teacher",
                out,
                export,
                choice.chosen,
            )
    info = {
        "task": QuestionAnswering.bundle_task,
        "model": "model.onnx",
        "precision": metrics["deployed"],
        "fp32_reference": FP32_REFERENCE if metrics["deployed"] == "int8" else None,
        **settings,
        "run": ctx.name,
        "optimization": metrics["student"]["optimization"],
        "quantization": metrics["quantization"],
        "chosen": metrics["chosen"],
        "chosen_reason": metrics["chosen_reason"],
        "candidates": metrics["candidates"],
        "metrics": {"test": metrics["test"]},
    }
    write_bundle_manifest(bundle, roles, info)
    return metrics
