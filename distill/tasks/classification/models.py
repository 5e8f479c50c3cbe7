"""Sequence classifiers: a pre-trained encoder with a sequence-classification head and real
label names, or one an earlier stage saved."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from distill.errors import ModelLoadError
from distill.train.models import load_failure, load_saved, load_with_labels


def load_classifier(
    source: str,
    key: str,
    label_names: list[str],
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> nn.Module:
    """A sequence classifier with real label names; a new head when the label set differs."""
    from transformers import AutoModelForSequenceClassification

    try:
        return load_with_labels(
            AutoModelForSequenceClassification,
            source,
            label_names,
            revision=revision,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(load_failure(key, source, exc)) from None


def load_saved_classifier(folder: Path) -> nn.Module:
    """A classifier an earlier stage saved (safetensors only, the same attention kernel)."""
    from transformers import AutoModelForSequenceClassification

    return load_saved(AutoModelForSequenceClassification, folder)
