"""The causal-LM report's samples: held-out prompts (the first half of a test text) continued
greedily by each model, side by side with what the text went on with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# Prompts are the first half of a test text's words, at most this many words.
MAX_PROMPT_WORDS = 48
MAX_TEXT_CHARS = 500


def split_prompt(text: str) -> tuple[str, str]:
    """(prompt, rest): the first half of the words (at least one, at most
    :data:`MAX_PROMPT_WORDS`) and what the text goes on with, cut to :data:`MAX_TEXT_CHARS`."""
    words = text.split()
    keep = min(max(1, len(words) // 2), MAX_PROMPT_WORDS)
    rest = " ".join(words[keep:])
    if len(rest) > MAX_TEXT_CHARS:
        rest = rest[:MAX_TEXT_CHARS] + "…"
    return " ".join(words[:keep]), rest


def continue_prompts(
    prompts: Sequence[tuple[str, str, str]],
    tokenizer: Any,
    continuers: Sequence[tuple[str, str, Callable[[list[int]], tuple[list[int], str]]]],
) -> list[dict[str, Any]]:
    """Each (id, prompt, rest) continued by each model (``ids -> (new ids, finish reason)``),
    decoded with ``tokenizer`` (special tokens skipped)."""
    samples = []
    for example_id, prompt, rest in prompts:
        ids = list(tokenizer.encode(prompt).ids)
        continuations = []
        for key, name, continuer in continuers:
            new, reason = continuer(ids)
            continuations.append(
                {
                    "key": key,
                    "name": name,
                    "text": tokenizer.decode(new, skip_special_tokens=True),
                    "tokens": len(new),
                    "finish_reason": reason,
                }
            )
        samples.append(
            {
                "id": example_id,
                "prompt": prompt,
                "prompt_tokens": len(ids),
                "reference": rest,
                "continuations": continuations,
            }
        )
    return samples
