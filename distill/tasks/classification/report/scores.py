"""Per-model scores of the classification report from test logits: accuracy, macro-F1 and
agreement with the teacher, F1 per class, the confusion matrix and calibration."""

from __future__ import annotations

from typing import Any

import numpy as np

from distill.tasks.classification.metrics import classification_metrics, softmax

ECE_BINS = 15


def evaluate(
    logits: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    reference_logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """Everything the report shows about one model's test predictions.

    Accuracy, macro-F1 and agreement (:func:`distill.tasks.classification.metrics.classification_metrics`), F1
    per class, the confusion matrix (gold by row, predicted by column) and calibration.
    """
    from sklearn.metrics import confusion_matrix, f1_score

    num_labels = len(label_names)
    result = classification_metrics(logits, labels, num_labels, reference_logits=reference_logits)
    predictions = np.asarray(logits).argmax(axis=-1)
    indices = list(range(num_labels))
    per_class = f1_score(labels, predictions, average=None, labels=indices, zero_division=0)
    result["per_class_f1"] = {name: float(per_class[i]) for i, name in enumerate(label_names)}
    result["confusion_matrix"] = confusion_matrix(labels, predictions, labels=indices).tolist()
    result["calibration"] = calibration(softmax(np.asarray(logits, dtype=np.float64)), labels)
    return result


def calibration(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> dict[str, Any]:
    """Expected calibration error over ``bins`` equal-width confidence bins, and the bins.

    Confidence is the top class probability; bin ``b`` holds confidences in
    ``(b / bins, (b + 1) / bins]``. ECE = sum over bins of (share of examples in the bin)
    x |accuracy in the bin - mean confidence in the bin| (Guo et al., 2017). Empty bins
    contribute nothing and have ``accuracy = confidence = None``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == labels
    # Edges b / bins (each correctly rounded, so 0.8 falls in (11/15, 12/15] as on paper).
    edges = np.arange(bins + 1) / bins
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = len(labels)
    ece = 0.0
    table = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        accuracy = float(correct[mask].mean()) if count else None
        mean_confidence = float(confidence[mask].mean()) if count else None
        if count:
            ece += count / total * abs(accuracy - mean_confidence)  # type: ignore[operator]
        table.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "accuracy": accuracy,
                "confidence": mean_confidence,
            }
        )
    return {
        "ece": float(ece) if total else None,
        "bins": bins,
        "mean_confidence": float(confidence.mean()) if total else None,
        "reliability": table,
    }
