"""Classification metrics (scikit-learn; `evaluate.load` would fetch scripts from the hub)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def classification_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    num_labels: int,
    reference_logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1 and, given a reference (the teacher), agreement with its predictions."""
    predictions = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    result: dict[str, Any] = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(
            f1_score(
                labels,
                predictions,
                average="macro",
                labels=list(range(num_labels)),
                zero_division=0,
            )
        ),
        "examples": int(labels.shape[0]),
    }
    if reference_logits is not None:
        reference = np.asarray(reference_logits).argmax(axis=-1)
        result["agreement"] = float((predictions == reference).mean())
    return result
