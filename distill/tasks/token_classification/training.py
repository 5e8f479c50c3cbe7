"""Tagging on the shared Trainer: sentences encoded word by word, labels on each word's first
sub-token, cached teacher logits per sub-token, the soft-target objective, and the entity F1
that picks the best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer

from distill.errors import DataError
from distill.tasks.token_classification.losses import IGNORE_INDEX, token_distillation_loss
from distill.tasks.token_classification.metrics import tagging_metrics, word_tags
from distill.tasks.token_classification.task import TokenClassification
from distill.train import trainer as shared
from distill.train.layer_losses import LayerDistillation


def encode_words(tokenizer: Any, sentences: list[list[str]], max_length: int) -> Any:
    """The fast tokenizer's encoding of pre-split words (truncated to ``max_length``)."""
    return tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_length)


def word_starts(encoding: Any, count: int) -> list[list[int]]:
    """Each sentence's first sub-token position of every word that survived truncation."""
    starts = []
    for row in range(count):
        seen: set[int] = set()
        positions = []
        for position, word in enumerate(encoding.word_ids(row)):
            if word is not None and word not in seen:
                seen.add(word)
                positions.append(position)
        starts.append(positions)
    return starts


def logits_word_tags(
    tokenizer: Any,
    sentences: list[list[str]],
    logits: list[np.ndarray],
    tag_names: list[str],
    max_length: int,
) -> list[list[str]]:
    """Each word's tag from cached per-sub-token ``logits``, read through the ``tokenizer``
    that produced them (its own segmentation and truncation)."""
    starts = word_starts(encode_words(tokenizer, sentences, max_length), len(sentences))
    return word_tags(logits, starts, tag_names)


def encode(
    tokenizer: Any,
    sentences: list[list[str]],
    tags: list[list[int]] | None,
    max_length: int,
    teacher_logits: list[np.ndarray] | None = None,
    subtokens: str = "all",
) -> tuple[Any, list[list[int]]]:
    """A `datasets.Dataset` of model inputs, first-sub-token labels (-100 elsewhere; all -100
    for unlabelled text), the KD mask and cached teacher logits; and each word's start."""
    import datasets

    encoding = encode_words(tokenizer, sentences, max_length)
    starts = word_starts(encoding, len(sentences))
    columns: dict[str, Any] = {k: encoding[k] for k in encoding.keys()}
    labels, masks = [], []
    for row, positions in enumerate(starts):
        length = len(encoding["input_ids"][row])
        label = [IGNORE_INDEX] * length
        if tags is not None:
            for word, position in enumerate(positions):
                label[position] = int(tags[row][word])
        labels.append(label)
        real = [w is not None for w in encoding.word_ids(row)]
        first = set(positions)
        masks.append([int(r if subtokens == "all" else i in first) for i, r in enumerate(real)])
    columns["labels"] = labels
    if teacher_logits is not None:
        for row, cached in enumerate(teacher_logits):
            if len(cached) != len(labels[row]):
                raise DataError(
                    f"sentence {row}: the cached teacher logits cover {len(cached)} sub-tokens, "
                    f"the student's tokenizer gives {len(labels[row])}; the student must "
                    "segment text as the teacher does"
                )
        columns["kd_mask"] = masks
        columns["teacher_logits"] = [
            np.asarray(c, dtype=np.float32).tolist() for c in teacher_logits
        ]
    return datasets.Dataset.from_dict(columns), starts


class TaggingCollator:
    """Pads a batch: inputs by the tokenizer, labels with -100, the KD mask with 0 and the
    cached teacher logits with zeros (padding is never scored)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        extra = {
            k: [f.pop(k) for f in features]
            for k in ("labels", "kd_mask", "teacher_logits")
            if k in features[0]
        }
        batch = self.tokenizer.pad(features, return_tensors="pt")
        length = batch["input_ids"].shape[1]
        if "labels" in extra:
            batch["labels"] = _pad([torch.tensor(v) for v in extra["labels"]], length, IGNORE_INDEX)
        if "kd_mask" in extra:
            batch["kd_mask"] = _pad([torch.tensor(v) for v in extra["kd_mask"]], length, 0)
        if "teacher_logits" in extra:
            rows = [torch.tensor(v, dtype=torch.float32) for v in extra["teacher_logits"]]
            batch["teacher_logits"] = _pad(rows, length, 0.0)
        return batch


def _pad(rows: list[torch.Tensor], length: int, value: float) -> torch.Tensor:
    shape = (len(rows), length, *rows[0].shape[1:])
    out = torch.full(shape, value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


class TaggingObjective:
    """KL on the KD mask's sub-tokens (cached teacher logits) mixed with CE on first sub-tokens,
    plus the layer losses (teacher online) in training; evaluation scores CE only (the
    validation split carries no teacher logits), and the best checkpoint is chosen by entity
    F1 either way."""

    def __init__(
        self, temperature: float = 1.0, alpha: float = 0.0, layers: LayerDistillation | None = None
    ) -> None:
        self.temperature, self.alpha, self.layers = temperature, alpha, layers

    def prepare(self, device: Any) -> None:
        """The teacher's logits are cached by the labels stage; it runs online only for the
        layer losses."""
        if self.layers is not None:
            self.layers.teacher.to(device).eval().requires_grad_(False)

    def __call__(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, Any]:
        teacher = inputs.pop("teacher_logits", None)
        mask = inputs.pop("kd_mask", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        alpha = self.alpha if training else 0.0
        loss, _ = token_distillation_loss(
            outputs.logits, teacher, labels, mask, self.temperature, alpha
        )
        if self.layers is not None and training:  # over every real sub-token, transfer too
            layer_loss, _ = self.layers.loss(model, outputs, inputs)
            loss = loss + layer_loss
        return loss, outputs


def predictions_to_tags(
    logits: np.ndarray, labels: np.ndarray, tag_names: list[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted word tags from padded logits and labels (-100 = not a word start)."""
    gold, predicted = [], []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        scored = row_labels != IGNORE_INDEX
        gold.append([tag_names[int(t)] for t in row_labels[scored]])
        predicted.append([tag_names[int(t)] for t in row_logits[scored].argmax(-1)])
    return gold, predicted


def train(
    run: shared.TrainingRun,
    *,
    tag_names: list[str],
    temperature: float = 1.0,
    alpha: float = 0.0,
    layers: LayerDistillation | None = None,
) -> tuple[Trainer, list[dict[str, Any]]]:
    """Train ``run`` with early stopping on validation entity micro-F1; the best checkpoint is
    kept. Its model may be the student wrapped with its layer-loss projections (``layers``)."""

    def compute_metrics(prediction: Any) -> dict[str, Any]:
        logits = prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        gold, predicted = predictions_to_tags(logits, prediction.label_ids, tag_names)
        scores = tagging_metrics(gold, predicted)
        return {k: scores[k] for k in ("entity_f1", "entity_macro_f1", "token_accuracy")}

    return shared.train(
        run,
        objective=TaggingObjective(temperature, alpha, layers),
        collator=TaggingCollator(run.tokenizer),
        default_min_steps=TokenClassification.default_min_steps,
        has_extra_columns=True,  # kd_mask and teacher_logits reach the objective
        compute_metrics=compute_metrics,
        metric="entity_f1",
    )


def sentence_logits(trainer: Trainer, dataset: Any, desc: str) -> list[np.ndarray]:
    """Per-sentence logits [sub-tokens, tags], padding cut, in dataset order."""
    padded = shared.predict_logits(trainer, dataset, desc)
    return [padded[i, : len(ids)] for i, ids in enumerate(dataset["input_ids"])]


def predictor(model: nn.Module, tokenizer: Any, work_dir: Path, batch_size: int = 64) -> Trainer:
    """An inference-only Trainer for tagging (padded batches, outputs in dataset order)."""
    return shared.predictor(model, TaggingCollator(tokenizer), work_dir, batch_size)
