"""Extractive question answering: what the registry knows of the task, and the recipe keys it
adds.

Imports nothing heavy: the registry (and so `distill validate`) reads this class without torch.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from distill.tasks.base import ENCODER_STUDENT_KEYS, PredictHelp, PredictOption, Task

# The int8 candidates (export.candidates) a QA export builds: the dynamic ones, on the plain
# or the ORT-optimized graph (never CLS-pruned: every context token may start or end the
# answer).
CANDIDATES = (
    "dynamic",
    "dynamic-fp32-embeddings",
    "dynamic-optimized",
    "dynamic-optimized-fp32-embeddings",
)
# Special tokens a question-context pair adds (BERT: 3, RoBERTa: 4): the context room of a
# window is max_length - max_question_length - this, at least.
PAIR_SPECIAL_TOKENS = 4
CONTEXT_OPTION = PredictOption(
    name="context",
    metavar="TEXT",
    help="for a question-answering bundle: the context every input question is asked "
    "about (without it, each input line is a JSON object with 'question' and 'context')",
    applies_to="question-answering bundles",
)


class QuestionAnswering(Task):
    name = "question-answering"
    bundle_task = "question-answering"
    package = "distill.tasks.question_answering"
    command = "predict"
    runner = "runner"
    predict_help = PredictHelp(
        does="answer questions about a context",
        line="answer<TAB>start<TAB>end<TAB>score for a QA bundle (empty answer: none)",
        json="QA: question, answer, its start and end in the context, score",
    )
    architecture_suffixes = ("ForQuestionAnswering",)
    own_keys: ClassVar[tuple[str, ...]] = (
        *ENCODER_STUDENT_KEYS,
        "export.candidates",
        "export.optimization_level",
        "export.per_channel",
        "export.reduce_range",
        "export.teacher_baseline",
        "export.latency_runs",
        "export.latency_rounds",
        "export.latency_warmup",
    )
    refused_keys: ClassVar[dict[str, str]] = {
        "data.text_column": "task 'question-answering' reads data.question_column and "
        "data.context_column",
        "data.label_column": "task 'question-answering' reads data.answer_column (and "
        "data.answer_start_column)",
        "student.transfer.text_column": "task 'question-answering' reads a transfer table's "
        "data.question_column and data.context_column",
        "data.deduplicate": "task 'question-answering' keeps every question; a question "
        "asked twice of one context is dropped as a repeat",
    }
    recipe_keys: ClassVar[dict[str, dict[str, Any]]] = {
        "data": {
            "question_column": (
                str,
                Field("question", description="The column holding each question."),
            ),
            "context_column": (
                str,
                Field("context", description="The column holding each question's context."),
            ),
            "answer_column": (
                str,
                Field(
                    "answers",
                    description="The column holding the answer: SQuAD's object "
                    "{text: [...], answer_start: [...]} (hub datasets, JSON lines), or the "
                    "answer's text with its start in data.answer_start_column; empty: the "
                    "question has no answer in its context (SQuAD 2.0). SQuAD JSON documents "
                    "(data -> paragraphs -> qas) need no column keys.",
                ),
            ),
            "answer_start_column": (
                str,
                Field(
                    "answer_start",
                    description="With a plain-text answer column: the column holding the "
                    "answer's first character in the context (0-based).",
                ),
            ),
            "doc_stride": (
                int,
                Field(
                    32,
                    ge=1,
                    description="Context tokens two neighbouring windows of a long context "
                    "share (transformers' QA examples: 128 at max_length 384).",
                ),
            ),
            "max_question_length": (
                int,
                Field(
                    32,
                    ge=1,
                    description="Tokens of a question kept (longer ones are cut; counted).",
                ),
            ),
            "max_answer_length": (
                int,
                Field(
                    30,
                    ge=1,
                    description="Longest answer, in tokens, a model's span may be.",
                ),
            ),
        },
        "export": {
            "max_answer_f1_drop": (
                float,
                Field(
                    0.02,
                    ge=0,
                    le=1,
                    description="Largest drop in SQuAD F1 (test split, 0-1) of an int8 "
                    "candidate vs fp32 for it to be deployed.",
                ),
            ),
        },
    }
    about = "an answer span of a context per question (question-answering.md)"
    key_notes: ClassVar[dict[str, str]] = {
        "data.path": "also a SQuAD JSON document (v1.1 or v2.0)",
        "data.max_length": "tokens per window of question and context",
        "student.transfer.path": "a table with the data's question and context columns, or "
        "'unused'",
        "export.quantization": "'none' or 'dynamic'",
        "export.candidates": f"builds {', '.join(map(repr, CANDIDATES))}; gate: "
        "export.max_answer_f1_drop",
    }
    stage_sections: ClassVar[dict[str, tuple[str, ...]]] = {
        "labels": ("data", "student.transfer"),  # the teacher runs in PyTorch: no [labels]
    }
    # Few labelled questions need many passes, as for the other encoder tasks.
    default_min_steps = 200
    data_column_keys = ("question_column", "context_column", "answer_column")
    data_check = "data_check"  # SQuAD JSON documents name no columns
    predict_options = (CONTEXT_OPTION,)

    def check_recipe(self, recipe: Any) -> list[str]:
        data = recipe.data
        problems = []
        room = data.max_length - data.max_question_length - PAIR_SPECIAL_TOKENS
        if data.doc_stride >= room:
            problems.append(
                f"data.doc_stride = {data.doc_stride} must be less than the context room of a "
                f"window, data.max_length - data.max_question_length - {PAIR_SPECIAL_TOKENS} "
                f"= {room}"
            )
        values = {
            "export.quantization = 'static'": recipe.export.quantization == "static",
            "export.quantization = 'weight-only'": recipe.export.quantization == "weight-only",
            "student.baselines = ['pseudo-labels']": "pseudo-labels" in recipe.student.twins,
            "student.trim_vocabulary = true": bool(recipe.student.trim_vocabulary),
        }
        problems += [
            f"{key} is not supported for task {self.name!r} (yet)"
            for key, on in values.items()
            if on
        ]
        refused = [n for n in recipe.export.candidates or [] if n not in CANDIDATES]
        if refused:
            problems.append(
                f"export.candidates = {list(recipe.export.candidates)!r}: "
                f"{', '.join(map(repr, refused))} is not supported for task {self.name!r} "
                f"(it builds: {', '.join(map(repr, CANDIDATES))})"
            )
        return problems

    def summary_lines(self, report: dict[str, Any]) -> list[str]:
        lines = [f"  {'model':<40} {'EM':>6} {'F1':>6} {'MB':>7} {'p50 ms':>7}"]
        for row in report.get("rows", []):
            latency = (row.get("latency") or {}).get("p50_ms")
            lines.append(
                f"  {row.get('name', row.get('key', '?'))[:40]:<40} "
                f"{100 * (row.get('exact_match') or 0):6.2f} {100 * (row.get('f1') or 0):6.2f} "
                f"{(row.get('bytes') or 0) / 1e6:7.1f} {'' if latency is None else f'{latency:.2f}':>7}"
            )
        verdict = (report.get("headline") or {}).get("verdict")
        warnings = (report.get("headline") or {}).get("warnings") or []
        return [*lines, *[f"  {s}" for s in ([verdict] if verdict else []) + warnings], ""]
