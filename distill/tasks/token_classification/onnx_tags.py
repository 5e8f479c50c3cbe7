"""A graph's served output on pre-split sentences, scored as its users will read it: each
sentence's words joined by spaces go through the bundle runner (the code `distill predict`
runs), and each word's tag is read off the entities it serves
(:func:`~distill.tasks.token_classification.aggregation.served_word_tags`). The export gate,
the teacher baseline and the report score every ONNX graph this way, so the F1 they record
for a bundle is the F1 of what it serves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.pipeline.progress import track
from distill.tasks.token_classification.aggregation import (
    DEFAULT_AGGREGATION,
    served_word_tags,
    words_seen,
)
from distill.tasks.token_classification.runner import EntityTagger, graph_tagger


@dataclass(frozen=True)
class Served:
    """One graph's output on a list of sentences: each sentence's logits [tokens, tags]
    (padding cut), and the tags of the words it saw (words cut by truncation excluded)."""

    logits: list[np.ndarray]
    tags: list[list[str]]


def served_tags(
    tagger: EntityTagger, sentences: list[list[str]], desc: str, batch_size: int = 32
) -> Served:
    """Run ``tagger`` over ``sentences`` (words joined by single spaces) and read each word's
    tag off the served entities."""
    texts = [" ".join(words) for words in sentences]
    logits: list[np.ndarray] = []
    tags: list[list[str]] = []
    outputs = tagger.iter_outputs(texts, batch_size)
    for words, (prediction, rows) in track(
        zip(sentences, outputs, strict=True), desc=desc, unit="sentence", total=len(texts)
    ):
        seen = words_seen(words, prediction.seen if prediction.seen is not None else 0)
        tags.append(served_word_tags(words, prediction.entities)[:seen])
        logits.append(rows.astype(np.float32))
    return Served(logits, tags)


def onnx_served_tags(
    model_path: Path,
    folder: Path,
    sentences: list[list[str]],
    tag_names: list[str],
    max_length: int,
    desc: str,
    aggregation: str = DEFAULT_AGGREGATION,
) -> Served:
    """:func:`served_tags` of the graph ``model_path`` with the fast tokenizer saved in
    ``folder``, served as a bundle of theirs would be."""
    tagger = graph_tagger(model_path, folder, tag_names, max_length, aggregation)
    return served_tags(tagger, sentences, desc)
