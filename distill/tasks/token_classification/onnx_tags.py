"""Tagging with ONNX Runtime over pre-split words: per-sentence logits and word starts, the
way the export gate, the teacher baseline and the report score a graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distill.export.onnx import make_session
from distill.progress import track
from distill.tasks.token_classification.training import encode_words, word_starts


def onnx_sentence_logits(
    model_path: Path,
    tokenizer: Any,
    sentences: list[list[str]],
    max_length: int,
    batch_size: int = 32,
    desc: str = "onnxruntime",
) -> tuple[list[np.ndarray], list[list[int]]]:
    """Each sentence's logits [sub-tokens, tags] (padding cut) and its words' first sub-tokens."""
    session = make_session(model_path)
    names = [i.name for i in session.get_inputs()]
    logits: list[np.ndarray] = []
    starts: list[list[int]] = []
    for start in track(range(0, len(sentences), batch_size), desc=desc, unit="batch"):
        chunk = sentences[start : start + batch_size]
        encoding = encode_words(tokenizer, chunk, max_length)
        padded = tokenizer.pad({k: encoding[k] for k in encoding.keys()}, return_tensors="np")
        feeds = {name: np.asarray(padded[name], dtype=np.int64) for name in names}
        output = session.run(None, feeds)[0]
        lengths = padded["attention_mask"].sum(axis=1)
        logits += [output[i, : lengths[i]].astype(np.float32) for i in range(len(chunk))]
        starts += word_starts(encoding, len(chunk))
    return logits, starts
