"""The seq2seq report's examples: the first ``report.examples`` test sources with their
reference and every model's output side by side (long texts cut, so a summarization
report stays readable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_TEXT_CHARS = 600


def cut(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def side_by_side(
    ids: Sequence[str],
    sources: Sequence[str],
    references: Sequence[str],
    outputs: dict[str, list[str]],
    names: dict[str, str],
    count: int,
) -> list[dict[str, Any]]:
    """The first ``count`` test sources: id, source, reference, and each model's output (in
    the order of ``names``: row key -> name), marking those equal to the reference."""
    examples = []
    for i in range(min(count, len(sources))):
        examples.append(
            {
                "id": ids[i],
                "source": cut(sources[i]),
                "reference": cut(references[i]),
                "outputs": [
                    {
                        "key": key,
                        "name": name,
                        "text": cut(outputs[key][i]),
                        "exact": outputs[key][i].strip() == references[i].strip(),
                    }
                    for key, name in names.items()
                    if key in outputs
                ],
            }
        )
    return examples
