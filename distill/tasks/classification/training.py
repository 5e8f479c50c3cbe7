"""Classification training on the shared Trainer: the soft-target objective (cached teacher
logits mixed with hard labels, plus layer losses against a teacher run online), the
metrics that pick the best checkpoint, and padding per batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DataCollatorWithPadding, Trainer

from distill.tasks.classification.losses import distillation_loss
from distill.tasks.classification.metrics import classification_metrics
from distill.tasks.classification.task import SequenceClassification
from distill.train import trainer as shared
from distill.train.layer_losses import LayerDistillation


class SoftTargetObjective:
    """The task's distillation loss on the student's logits; layer losses in training only."""

    def __init__(
        self,
        temperature: float,
        alpha: float,
        layers: LayerDistillation | None,
    ) -> None:
        self.temperature = temperature
        self.alpha = alpha
        self.layers = layers

    def prepare(self, device: Any) -> None:
        if self.layers is not None:
            self.layers.teacher.to(device).eval().requires_grad_(False)

    def __call__(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, Any]:
        teacher_logits = inputs.pop("teacher_logits", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss, _ = distillation_loss(
            outputs.logits, teacher_logits, labels, self.temperature, self.alpha
        )
        if self.layers is not None and training:  # evaluation scores the logits only
            layer_loss, _ = self.layers.loss(model, outputs, inputs)
            loss = loss + layer_loss
        return loss, outputs


def train(
    run: shared.TrainingRun,
    *,
    num_labels: int,
    temperature: float = 1.0,
    alpha: float = 0.0,
    layers: LayerDistillation | None = None,
) -> tuple[Trainer, list[dict[str, Any]]]:
    """Train ``run`` with early stopping on validation accuracy; the best checkpoint is loaded
    at the end."""

    def compute_metrics(prediction: Any) -> dict[str, Any]:
        logits = (
            prediction.predictions[0]
            if isinstance(prediction.predictions, tuple)
            else prediction.predictions
        )
        metrics = classification_metrics(logits, prediction.label_ids, num_labels)
        metrics.pop("examples", None)
        return metrics

    has_teacher = "teacher_logits" in run.train_set.column_names
    return shared.train(
        run,
        objective=SoftTargetObjective(temperature, alpha, layers),
        collator=DataCollatorWithPadding(run.tokenizer),
        default_min_steps=SequenceClassification.default_min_steps,
        # A wrapped student's forward(**inputs) hides which columns it takes.
        has_extra_columns=has_teacher or layers is not None,
        compute_metrics=compute_metrics,
    )


def predictor(model: nn.Module, tokenizer: Any, work_dir: Path, batch_size: int = 64) -> Trainer:
    """An inference-only Trainer that pads each batch (logits gathered in dataset order)."""
    return shared.predictor(model, DataCollatorWithPadding(tokenizer), work_dir, batch_size)
