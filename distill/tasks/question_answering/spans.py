"""A question's answer from its windows' start and end logits, as transformers' QA examples
read it: over every window, the best-scoring span (start logit + end logit) of context tokens
that starts no later than it ends and is at most ``max_answer_length`` tokens long, among
each window's ``n_best`` starts and ends; with SQuAD 2.0 data, "no answer" when the null
score (start and end at the first token; the lowest over the windows) beats it.

The answer is characters of the context: ``context[start:end] == text``. Its score is the
span's probability in its window: softmax over the window's context tokens and the no-answer
position, start's times end's.

numpy only: the bundle runner, the export and report stages and evaluation in training all
read answers through :func:`best_answer`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distill.tasks.question_answering.examples import Answer
from distill.tasks.question_answering.windows import NO_ANSWER_POSITION, Window, by_example

N_BEST = 20


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _window_best(
    window: Window, start: np.ndarray, end: np.ndarray, max_answer_length: int, n_best: int
) -> tuple[float, int, int] | None:
    """The best (score, first token, last token) span of context tokens in one window."""
    context = window.context_positions
    if context.size == 0:
        return None
    starts = context[np.argsort(-start[context], kind="stable")[:n_best]]
    ends = context[np.argsort(-end[context], kind="stable")[:n_best]]
    scores = start[starts][:, None] + end[ends][None, :]
    length = ends[None, :] - starts[:, None] + 1
    scores = np.where((length >= 1) & (length <= max_answer_length), scores, -np.inf)
    best = np.unravel_index(int(np.argmax(scores)), scores.shape)
    if not np.isfinite(scores[best]):
        return None
    return float(scores[best]), int(starts[best[0]]), int(ends[best[1]])


def _probabilities(window: Window, logits: np.ndarray) -> np.ndarray:
    """Softmax over the window's context tokens and the no-answer position (zeros
    elsewhere)."""
    keep = np.zeros(len(window), dtype=bool)
    keep[window.context_positions] = True
    keep[NO_ANSWER_POSITION] = True
    probabilities = np.zeros(len(window))
    probabilities[keep] = _softmax(logits[: len(window)][keep].astype(np.float64))
    return probabilities


def best_answer(
    windows: Sequence[Window],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    context: str,
    *,
    max_answer_length: int,
    no_answer: bool,
    n_best: int = N_BEST,
) -> Answer:
    """One question's answer from its ``windows`` and their logits (each at least as long
    as its window; padding past it is ignored); ``no_answer``: the model was trained on
    questions without an answer and may say so."""
    best: tuple[float, int, int, int] | None = None  # score, window, first, last
    null: tuple[float, int] | None = None  # lowest null score and its window
    for index, (window, start, end) in enumerate(
        zip(windows, start_logits, end_logits, strict=True)
    ):
        start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
        found = _window_best(window, start, end, max_answer_length, n_best)
        if found is not None and (best is None or found[0] > best[0]):
            best = (found[0], index, found[1], found[2])
        null_score = float(start[NO_ANSWER_POSITION] + end[NO_ANSWER_POSITION])
        if null is None or null_score < null[0]:
            null = (null_score, index)
    if null is not None and (best is None or (no_answer and null[0] > best[0])):
        window, start, end = windows[null[1]], start_logits[null[1]], end_logits[null[1]]
        score = _probabilities(window, start)[0] * _probabilities(window, end)[0]
        return Answer("", None, None, float(score))
    assert best is not None  # a window without context tokens only: handled above
    _, index, first, last = best
    window = windows[index]
    char_start, char_end = window.offsets[first][0], window.offsets[last][1]  # type: ignore[index]
    score = (
        _probabilities(window, np.asarray(start_logits[index]))[first]
        * _probabilities(window, np.asarray(end_logits[index]))[last]
    )
    return Answer(context[char_start:char_end], char_start, char_end, float(score))


def answers_of(
    windows: Sequence[Window],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    contexts: Sequence[str],
    *,
    max_answer_length: int,
    no_answer: bool,
) -> list[Answer]:
    """Every question's answer (``contexts[i]`` for question i; windows as
    :func:`~distill.tasks.question_answering.windows.make_windows` made them, in order)."""
    grouped = by_example(windows, len(contexts))
    return [
        best_answer(
            [windows[i] for i in positions],
            [start_logits[i] for i in positions],
            [end_logits[i] for i in positions],
            context,
            max_answer_length=max_answer_length,
            no_answer=no_answer,
        )
        for positions, context in zip(grouped, contexts, strict=True)
    ]
