"""Static-embedding students (``student.init = "static"``): a token-embedding table distilled
from the fine-tuned teacher with model2vec, pooled over the text's tokens, and a small head;
trained on the teacher's soft targets like every student, exported as a gather + pooling +
head ONNX graph. Model: :mod:`.model`; the table: :mod:`.table`; building a student:
:mod:`.build`; the ONNX graph and its int8 table: :mod:`.onnx_graph`."""

from __future__ import annotations

import json
from pathlib import Path

# config.json's model_type of a saved static student (see .model; kept here to stay torch-free).
MODEL_TYPE = "distill-static"


def is_static(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a static student (read from its config.json, no torch)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == MODEL_TYPE
