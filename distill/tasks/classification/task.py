"""Sequence classification (sentiment, topics, spam)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distill.tasks.base import Task

if TYPE_CHECKING:  # the registry is imported by torch-free paths (`distill generate`)
    import numpy as np
    import torch
    from torch import nn

    from distill.dataset_files import Split


class SequenceClassification(Task):
    name = "sequence-classification"
    onnx_task = "text-classification"

    def load_pretrained(
        self,
        source: str,
        key: str,
        label_names: list[str],
        revision: str | None,
        trust_remote_code: bool,
    ) -> nn.Module:
        from distill.models import load_classifier

        return load_classifier(
            source, key, label_names, revision=revision, trust_remote_code=trust_remote_code
        )

    def encode(
        self,
        tokenizer: Any,
        split: Split,
        max_length: int,
        teacher_logits: np.ndarray | None = None,
        with_labels: bool = True,
    ) -> Any:
        import datasets
        import numpy as np

        # No padding here: the collator pads each batch to its longest example, which on
        # short texts (tweets) makes CPU training several times faster than fixed padding.
        columns: dict[str, Any] = dict(
            tokenizer(split.texts, truncation=True, max_length=max_length)
        )
        if with_labels:  # label -1 marks unlabelled (transfer) text
            columns["labels"] = split.labels.tolist()
        if teacher_logits is not None:
            columns["teacher_logits"] = np.asarray(teacher_logits, dtype=np.float32).tolist()
        return datasets.Dataset.from_dict(columns)

    def metrics(
        self,
        logits: np.ndarray,
        labels: np.ndarray,
        num_labels: int,
        reference_logits: np.ndarray | None = None,
    ) -> dict[str, Any]:
        from distill.tasks.classification.metrics import classification_metrics

        return classification_metrics(logits, labels, num_labels, reference_logits)

    def distillation_loss(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor,
        temperature: float,
        alpha: float,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from distill.tasks.classification.losses import distillation_loss

        return distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)
