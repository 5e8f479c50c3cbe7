"""A graph's served answers to a list of questions, exactly as its bundle serves them: the
export gate, the teacher baseline and the report score every ONNX graph through the bundle
runner (:class:`~distill.tasks.question_answering.runner.QAModel`), so the EM and F1 they
record for a bundle are those of what it serves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.pipeline.progress import track
from distill.tasks.question_answering.examples import Answer, QAExample
from distill.tasks.question_answering.runner import graph_answerer


@dataclass(frozen=True)
class Served:
    """One graph's output per question: its answer, and its windows' start and end logits
    (one array per window, its tokens, padding cut; float32)."""

    answers: list[Answer]
    start_logits: list[list[np.ndarray]]
    end_logits: list[list[np.ndarray]]


def onnx_answers(
    model_path: Path,
    folder: Path,
    examples: list[QAExample],
    settings: dict[str, Any],
    desc: str,
    batch_size: int = 32,
) -> Served:
    """The answers of the graph ``model_path`` (with the fast tokenizer saved in ``folder``)
    to ``examples``, served with ``settings`` (the bundle manifest's ``max_length``,
    ``doc_stride``, ``max_question_length``, ``max_answer_length``, ``no_answer``)."""
    model = graph_answerer(model_path, folder, settings)
    pairs = model.answer_pairs(
        [e.question for e in examples], [e.context for e in examples], batch_size
    )
    served = Served([], [], [])
    for answer, _, starts, ends in track(pairs, total=len(examples), desc=desc, unit="question"):
        served.answers.append(answer)
        served.start_logits.append([s.astype(np.float32) for s in starts])
        served.end_logits.append([e.astype(np.float32) for e in ends])
    return served
