"""Taggers: a pre-trained encoder with a token-classification head and real tag names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from distill.errors import DataError, ModelLoadError
from distill.train.models import load_saved, load_with_labels


def load_tagger(
    source: str,
    key: str,
    tag_names: list[str],
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> nn.Module:
    """A token classifier with real tag names; a new head when the tag set differs."""
    from transformers import AutoModelForTokenClassification

    try:
        return load_with_labels(
            AutoModelForTokenClassification,
            source,
            tag_names,
            revision=revision,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{key}: cannot load {source!r} as a token classifier: {first}"
        ) from None


def load_saved_tagger(folder: Path) -> nn.Module:
    """A tagger an earlier stage saved (safetensors only)."""
    from transformers import AutoModelForTokenClassification

    return load_saved(AutoModelForTokenClassification, folder)


def require_fast(tokenizer: Any, key: str) -> Any:
    """Word alignment (word_ids, offsets) needs a fast tokenizer."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            f"{key}: its tokenizer is not a fast (Rust) tokenizer; tagging needs word "
            "alignment (word_ids), which only fast tokenizers give"
        )
    return tokenizer
