"""QA models: a pre-trained encoder with a span head (start and end logits per token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from distill.errors import DataError, ModelLoadError
from distill.train.models import load_saved, with_supported_attention

MODEL_CLASS = "AutoModelForQuestionAnswering"


def load_qa_model(
    source: str, key: str, revision: str | None = None, trust_remote_code: bool = False
) -> nn.Module:
    """A question-answering model (a new span head on a checkpoint without one)."""
    from transformers import AutoModelForQuestionAnswering

    try:
        return with_supported_attention(
            AutoModelForQuestionAnswering.from_pretrained,
            source,
            revision=revision,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{key}: cannot load {source!r} as a question-answering model: {first}"
        ) from None


def load_saved_qa_model(folder: Path) -> nn.Module:
    """A QA model an earlier stage saved (safetensors only)."""
    from transformers import AutoModelForQuestionAnswering

    return load_saved(AutoModelForQuestionAnswering, folder)


def require_fast(tokenizer: Any, key: str) -> Any:
    """Windows map tokens back to characters of the context: a fast tokenizer's offsets."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            f"{key}: its tokenizer is not a fast (Rust) tokenizer; question answering needs "
            "character offsets, which only fast tokenizers give"
        )
    return tokenizer
