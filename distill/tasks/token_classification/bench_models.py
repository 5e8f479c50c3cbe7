"""What `distill bench` needs of a tagging run: its saved models as token classifiers, and the
test sentences (words joined by spaces) its inputs are cut from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.tasks.token_classification.files import read_tagged_split
from distill.tasks.token_classification.models import load_saved_tagger


def load_model(folder: Path) -> Any:
    """A tagger an earlier stage saved (safetensors only), in eval mode."""
    return load_saved_tagger(folder).eval()


def test_texts(data_dir: Path) -> list[str]:
    return [" ".join(words) for words in read_tagged_split(data_dir, "test").tokens]
