"""How well a model answers questions: the official SQuAD evaluation (``evaluate-v1.1.py`` and
``evaluate-v2.0.py``), not an approximation of it.

- Answers and gold answers are compared after :func:`normalize_answer` (lower case, no
  punctuation, no articles, single spaces).
- Exact match (EM): 1 when the normalized answer equals a normalized gold answer.
- F1: the harmonic mean of precision and recall of the answer's words against a gold
  answer's, counting repeated words as often as both hold them (a bag of words).
- Both take the best over a question's gold answers (the annotators'). As in v2.0, gold
  answers that normalize to nothing are dropped, and a question without any (SQuAD 2.0
  unanswerable) has the one gold answer ``""``: only "no answer" (an empty answer) scores 1
  on it, and an empty answer scores 0 on an answerable question.

Scores are on a 0-1 scale, like every metric in distill (the official script prints 0-100).
numpy and the standard library only: the report stage imports it.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from distill.tasks.question_answering.examples import Answer, QAExample

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, punctuation removed, the articles a/an/the removed,
    runs of whitespace collapsed to one space (none at either end)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def _check_golds(golds: Sequence[str]) -> None:
    if isinstance(golds, str) or not golds:
        raise ValueError(
            f"gold answers must be a non-empty sequence of strings (got {golds!r}); a question "
            "without an answer has the gold answers ['']"
        )


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when ``prediction`` equals one of ``golds`` once both are normalized, else 0.0."""
    _check_golds(golds)
    answer = normalize_answer(prediction)
    return float(any(answer == normalize_answer(gold) for gold in golds))


def _f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)  # v2.0: both empty, or one is wrong
    same = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, golds: Sequence[str]) -> float:
    """The best word-overlap F1 of ``prediction`` against any of ``golds``."""
    _check_golds(golds)
    tokens = _tokens(prediction)
    return max(_f1(tokens, _tokens(gold)) for gold in golds)


def gold_texts(example: QAExample) -> list[str]:
    """The gold answers a question is scored against, as v2.0 reads them: those that
    normalize to something, or ``[""]`` (no answer) when there are none."""
    return [a.text for a in example.answers if normalize_answer(a.text)] or [""]


def question_scores(
    examples: Sequence[QAExample], answers: Sequence[Answer]
) -> tuple[np.ndarray, np.ndarray]:
    """Each question's exact match and F1 (float64 arrays, in order); ``answers[i]`` answers
    ``examples[i]`` (an empty text: the model gave no answer)."""
    if len(examples) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(examples)} questions")
    golds = [gold_texts(example) for example in examples]
    em = np.array([exact_match(a.text, g) for a, g in zip(answers, golds, strict=True)])
    f1s = np.array([f1(a.text, g) for a, g in zip(answers, golds, strict=True)])
    return em.astype(np.float64), f1s.astype(np.float64)


def _means(em: np.ndarray, f1s: np.ndarray) -> dict[str, Any]:
    return {"exact_match": float(em.mean()), "f1": float(f1s.mean()), "examples": int(em.size)}


def _agreement(answers: Sequence[Answer], reference: Sequence[Answer]) -> dict[str, float]:
    """How often two models give the same span (or both no answer), and the F1 of one's
    answers with the other's as the only gold answer."""
    if len(reference) != len(answers):
        raise ValueError(f"{len(reference)} reference answers for {len(answers)} questions")
    same = [(a.start, a.end) == (r.start, r.end) for a, r in zip(answers, reference, strict=True)]
    f1s = [f1(a.text, [r.text]) for a, r in zip(answers, reference, strict=True)]
    return {"agreement": float(np.mean(same)), "f1_vs_reference": float(np.mean(f1s))}


def qa_metrics(
    examples: Sequence[QAExample],
    answers: Sequence[Answer],
    reference: Sequence[Answer] | None = None,
) -> dict[str, Any]:
    """The SQuAD scores of ``answers`` to ``examples``: ``exact_match`` and ``f1`` (means),
    ``examples``, ``answered`` (the share of questions given an answer). When some question
    has no answer (SQuAD 2.0): ``no_answer`` and, when some has one, ``has_answer``, the same
    means over those questions alone (v2.0's NoAns and HasAns). With ``reference`` (another
    model's answers to the same questions): ``agreement`` and ``f1_vs_reference``."""
    if not examples:
        raise ValueError("no questions to score")
    em, f1s = question_scores(examples, answers)
    metrics = _means(em, f1s)
    metrics["answered"] = float(np.mean([answer.is_answer for answer in answers]))
    answerable = np.array([example.answerable for example in examples])
    if not answerable.all():
        if answerable.any():
            metrics["has_answer"] = _means(em[answerable], f1s[answerable])
        metrics["no_answer"] = _means(em[~answerable], f1s[~answerable])
    if reference is not None:
        metrics.update(_agreement(answers, reference))
    return metrics
