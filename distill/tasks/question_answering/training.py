"""Question answering on the shared Trainer: questions cut into windows
(:mod:`~distill.tasks.question_answering.windows`), the gold span's tokens per window, cached
teacher start/end logits per window, the start/end objective, and the SQuAD F1 that picks
the best checkpoint.

Each window's ``labels`` are ``[window index, start, end]``: the Trainer hands labels back
with the predictions, so evaluation maps its (length-grouped) batches back to their windows
and questions by the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer

from distill.errors import DataError
from distill.tasks.question_answering.examples import Answer, QAExample
from distill.tasks.question_answering.losses import span_distillation_loss
from distill.tasks.question_answering.metrics import qa_metrics
from distill.tasks.question_answering.spans import answers_of
from distill.tasks.question_answering.task import QuestionAnswering
from distill.tasks.question_answering.windows import (
    Window,
    WindowCounts,
    Windowing,
    make_windows,
    windowing_tokenizer,
)
from distill.train import trainer as shared
from distill.train.layer_losses import LayerDistillation

TEACHER_COLUMNS = ("teacher_start", "teacher_end")
IGNORE = -100  # a window's start and end without a gold span (transfer questions)


def windowing_of(data: Any) -> Windowing:
    """The recipe's windows (``[data]``)."""
    return Windowing(data.max_length, data.doc_stride, data.max_question_length)


def example_windows(
    tokenizer: Any, examples: Sequence[QAExample], windowing: Windowing, labelled: bool = True
) -> tuple[list[Window], WindowCounts]:
    """Every question's windows, with the tokens of its first gold answer when ``labelled``
    (the answer transformers' QA examples train on; evaluation scores against all)."""
    answers = None
    if labelled:
        answers = [(e.answers[0].start, e.answers[0].end) if e.answers else None for e in examples]
    return make_windows(
        windowing_tokenizer(tokenizer, windowing),
        [e.question for e in examples],
        [e.context for e in examples],
        windowing,
        answers,
    )


def window_dataset(
    windows: Sequence[Window],
    teacher: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    hard: bool = True,
    first_index: int = 0,
) -> Any:
    """A `datasets.Dataset` of the windows' inputs, their ``labels`` (index, start, end) and,
    for a distilled student, the teacher's cached start and end logits. ``hard = False``
    (unlabelled transfer questions): start and end are IGNORE, out of the hard loss;
    ``first_index``: the first window's index (sets concatenated keep them unique)."""
    import datasets

    columns: dict[str, Any] = {
        "input_ids": [w.ids for w in windows],
        "token_type_ids": [w.type_ids for w in windows],
        "labels": [
            [i, w.start, w.end] if hard else [i, IGNORE, IGNORE]
            for i, w in enumerate(windows, start=first_index)
        ],
    }
    if teacher is not None:
        for name, cached in zip(TEACHER_COLUMNS, teacher, strict=True):
            for row, (window, logits) in enumerate(zip(windows, cached, strict=True)):
                if len(logits) != len(window):
                    raise DataError(
                        f"window {row}: the cached teacher logits cover {len(logits)} tokens, "
                        f"the student's tokenizer gives {len(window)}; the student must "
                        "tokenize text as the teacher does"
                    )
            columns[name] = [np.asarray(c, dtype=np.float32).tolist() for c in cached]
    return datasets.Dataset.from_dict(columns)


class WindowCollator:
    """Pads a batch of windows on the right: ids with the pad id, type ids and the attention
    mask with 0, cached teacher logits with 0 (padding takes no probability in the loss);
    token_type_ids only for models that take them."""

    def __init__(self, tokenizer: Any) -> None:
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.type_ids = "token_type_ids" in tokenizer.model_input_names

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        batch: dict[str, torch.Tensor] = {
            "input_ids": _pad([f["input_ids"] for f in features], length, self.pad_id, torch.long),
            "attention_mask": _pad(
                [[1] * len(f["input_ids"]) for f in features], length, 0, torch.long
            ),
        }
        if "labels" in features[0]:  # a predictor's Trainer drops them (not a forward argument)
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        if self.type_ids:
            batch["token_type_ids"] = _pad(
                [f["token_type_ids"] for f in features], length, 0, torch.long
            )
        for name in TEACHER_COLUMNS:
            if name in features[0]:
                batch[name] = _pad([f[name] for f in features], length, 0.0, torch.float32)
        return batch


def _pad(rows: list[list[Any]], length: int, value: float, dtype: torch.dtype) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=dtype)
    return out


class SpanObjective:
    """KL on the start and end distributions (cached teacher logits) mixed with the hard span
    loss, plus the layer losses (teacher online) in training; evaluation scores the hard loss
    (the validation windows carry no teacher logits), the best checkpoint is chosen by F1."""

    def __init__(
        self, temperature: float = 1.0, alpha: float = 0.0, layers: LayerDistillation | None = None
    ) -> None:
        self.temperature, self.alpha, self.layers = temperature, alpha, layers

    def prepare(self, device: Any) -> None:
        if self.layers is not None:
            self.layers.teacher.to(device).eval().requires_grad_(False)

    def __call__(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, Any]:
        teacher_start = inputs.pop("teacher_start", None)
        teacher_end = inputs.pop("teacher_end", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss, _ = span_distillation_loss(
            outputs.start_logits,
            outputs.end_logits,
            teacher_start if training else None,
            teacher_end if training else None,
            labels[:, 1],
            labels[:, 2],
            inputs["attention_mask"],
            self.temperature,
            self.alpha if training else 0.0,
        )
        if self.layers is not None and training:
            layer_loss, _ = self.layers.loss(model, outputs, inputs)
            loss = loss + layer_loss
        return loss, outputs


def cut_rows(padded: np.ndarray, windows: Sequence[Window]) -> list[np.ndarray]:
    """Per-window rows of padded logits, padding cut."""
    return [padded[i, : len(w)] for i, w in enumerate(windows)]


def answers_from_logits(
    examples: Sequence[QAExample],
    windows: Sequence[Window],
    start: Sequence[np.ndarray],
    end: Sequence[np.ndarray],
    data: Any,
    no_answer: bool,
) -> list[Answer]:
    """Each question's answer from its windows' logits (:func:`spans.answers_of`)."""
    return answers_of(
        windows,
        start,
        end,
        [e.context for e in examples],
        max_answer_length=data.max_answer_length,
        no_answer=no_answer,
    )


def train(
    run: shared.TrainingRun,
    *,
    examples: Sequence[QAExample],
    windows: Sequence[Window],
    data: Any,
    no_answer: bool,
    temperature: float = 1.0,
    alpha: float = 0.0,
    layers: LayerDistillation | None = None,
) -> tuple[Trainer, list[dict[str, Any]]]:
    """Train ``run`` with early stopping on validation SQuAD F1 (``examples`` and ``windows``:
    the validation questions and the windows of ``run.eval_set``); the best checkpoint is
    kept."""

    def compute_metrics(prediction: Any) -> dict[str, Any]:
        start, end = prediction.predictions[:2]
        order = np.asarray(prediction.label_ids)[:, 0].astype(int)
        start_rows, end_rows = [None] * len(windows), [None] * len(windows)
        for row, index in enumerate(order):
            start_rows[index], end_rows[index] = start[row], end[row]
        answers = answers_from_logits(
            examples,
            windows,
            [s[: len(w)] for s, w in zip(start_rows, windows, strict=True)],
            [e[: len(w)] for e, w in zip(end_rows, windows, strict=True)],
            data,
            no_answer,
        )
        scores = qa_metrics(examples, answers)
        return {"f1": scores["f1"], "exact_match": scores["exact_match"]}

    return shared.train(
        run,
        objective=SpanObjective(temperature, alpha, layers),
        collator=WindowCollator(run.tokenizer),
        default_min_steps=QuestionAnswering.default_min_steps,
        has_extra_columns=True,  # labels and the teacher's logits reach the objective
        compute_metrics=compute_metrics,
        metric="f1",
    )


def window_logits(
    trainer: Trainer, dataset: Any, windows: Sequence[Window], desc: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-window start and end logits, padding cut, in window order."""
    scoring, trainer.compute_metrics = trainer.compute_metrics, None  # it reads validation
    try:
        start, end = shared.predict_outputs(trainer, dataset, desc)[:2]
    finally:
        trainer.compute_metrics = scoring
    return cut_rows(start, windows), cut_rows(end, windows)


def predictor(model: nn.Module, tokenizer: Any, work_dir: Path, batch_size: int = 64) -> Trainer:
    """An inference-only Trainer for windows (padded batches, outputs in dataset order)."""
    return shared.predictor(model, WindowCollator(tokenizer), work_dir, batch_size)
