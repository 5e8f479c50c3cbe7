"""The question-answering report's disagreements: test questions where the deployed
student's answer (its span, or "no answer") differs from the teacher's, each with its gold
answers, both answers and a snippet of the context around them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill.tasks.question_answering.examples import Answer, QAExample

MAX_DISAGREEMENTS = 10
# Characters of context shown either side of the answers.
MARGIN = 60
NO_ANSWER = "(no answer)"


def same_answer(first: Answer, second: Answer) -> bool:
    """The same span, or both "no answer"."""
    return (first.start, first.end) == (second.start, second.end)


def snippet(context: str, answers: Sequence[Answer], margin: int = MARGIN) -> str:
    """The context from ``margin`` characters before the first answer's start to
    ``margin`` after the last one's end ("…" where cut); its start when nobody answered."""
    spans = [(a.start, a.end) for a in answers if a.start is not None and a.end is not None]
    if not spans:
        start, end = 0, 0
    else:
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
    low, high = max(0, start - margin), min(len(context), end + margin)
    return ("…" if low > 0 else "") + context[low:high] + ("…" if high < len(context) else "")


def shown(answer: Answer) -> str:
    return answer.text if answer.is_answer else NO_ANSWER


def disagreements(
    test: Sequence[QAExample],
    teacher: Sequence[Answer],
    student: Sequence[Answer],
    limit: int = MAX_DISAGREEMENTS,
) -> list[dict[str, Any]]:
    """Up to ``limit`` test questions, in order, where ``student`` and ``teacher`` answer
    differently."""
    found = []
    for example, t, s in zip(test, teacher, student, strict=True):
        if same_answer(t, s):
            continue
        found.append(
            {
                "id": example.id,
                "question": example.question,
                "gold": [a.text for a in example.answers] or [NO_ANSWER],
                "teacher": shown(t),
                "student": shown(s),
                "context": snippet(example.context, [t, s]),
            }
        )
        if len(found) == limit:
            break
    return found
