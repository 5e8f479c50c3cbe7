"""The token-classification report's disagreements: test sentences where the deployed
student's entities differ from the teacher's."""

from __future__ import annotations

from typing import Any

MAX_DISAGREEMENTS = 10


def disagreements(
    test: Any, gold: list[list[str]], teacher: list[list[str]], deployed: list[list[str]]
) -> list[dict[str, Any]]:
    """Test sentences where the deployed student's entities differ from the teacher's."""
    from seqeval.metrics.sequence_labeling import get_entities

    def spans(words: list[str], tags: list[str]) -> list[str]:
        return [
            f"{kind}: {' '.join(words[start : end + 1])}" for kind, start, end in get_entities(tags)
        ]

    found = []
    for words, g, t, d in zip(test.tokens, gold, teacher, deployed, strict=True):
        words = words[: len(g)]
        if spans(words, t) != spans(words, d):
            found.append(
                {
                    "text": " ".join(words),
                    "gold": spans(words, g),
                    "teacher": spans(words, t),
                    "student": spans(words, d),
                }
            )
        if len(found) == MAX_DISAGREEMENTS:
            break
    return found
