"""The interface every task implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry is imported by torch-free paths (`distill generate`)
    import numpy as np
    import torch
    from torch import nn

    from distill.dataset_files import Split


class Task(ABC):
    name: str
    onnx_task: str  # optimum's task name for export

    @abstractmethod
    def load_pretrained(
        self,
        source: str,
        key: str,
        label_names: list[str],
        revision: str | None,
        trust_remote_code: bool,
    ) -> nn.Module:
        """Load a pre-trained model with this task's head."""

    @abstractmethod
    def encode(
        self,
        tokenizer: Any,
        split: Split,
        max_length: int,
        teacher_logits: np.ndarray | None = None,
        with_labels: bool = True,
    ) -> Any:
        """A `datasets.Dataset` of model inputs (+ labels and cached teacher outputs)."""

    @abstractmethod
    def metrics(
        self,
        logits: np.ndarray,
        labels: np.ndarray,
        num_labels: int,
        reference_logits: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Task metrics from model outputs."""

    @abstractmethod
    def distillation_loss(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor,
        temperature: float,
        alpha: float,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The student's training loss."""
