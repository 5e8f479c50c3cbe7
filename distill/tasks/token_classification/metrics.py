"""Entity-level evidence for tagging: seqeval in strict IOB2 mode (an entity counts only when
its type and both boundaries match), per type, plus token accuracy and agreement with the
teacher (the teacher's entities taken as the reference).

Inputs are word-level tag sequences (each word's tag is its first sub-token's prediction).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    """Micro and macro entity F1, precision, recall, and per-type scores with support."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    options: dict[str, Any] = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    per_type = classification_report(gold, predicted, output_dict=True, **options)
    types = {
        name: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for name, row in per_type.items()
        if not name.endswith(" avg")
    }
    return {
        "entity_f1": float(f1_score(gold, predicted, average="micro", **options)),
        "entity_macro_f1": float(f1_score(gold, predicted, average="macro", **options)),
        "entity_precision": float(precision_score(gold, predicted, **options)),
        "entity_recall": float(recall_score(gold, predicted, **options)),
        "per_type": types,
    }


def entity_counts(gold: list[list[str]], predicted: list[list[str]]) -> np.ndarray:
    """Each sentence's [true positives, predicted entities, gold entities] as seqeval's strict
    IOB2 mode counts them: summed over sentences they give its micro-F1 (the paired test
    resamples these rows)."""
    from seqeval.scheme import IOB2, Entities

    def spans(tagged: list[list[str]]) -> list[set[tuple[int, int, str]]]:
        found = Entities(tagged, IOB2).entities
        return [{(e.start, e.end, e.tag) for e in sentence} for sentence in found]

    rows = [
        (len(g & p), len(p), len(g)) for g, p in zip(spans(gold), spans(predicted), strict=True)
    ]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def tagging_metrics(
    gold: list[list[str]],
    predicted: list[list[str]],
    reference: list[list[str]] | None = None,
) -> dict[str, Any]:
    """Entity scores vs the gold tags, token accuracy, and, given the teacher's tags,
    ``agreement``: the entity micro-F1 of these predictions against the teacher's."""
    flat_gold = [tag for sentence in gold for tag in sentence]
    flat_predicted = [tag for sentence in predicted for tag in sentence]
    result = entity_scores(gold, predicted)
    result["token_accuracy"] = (
        float(np.mean([g == p for g, p in zip(flat_gold, flat_predicted, strict=True)]))
        if flat_gold
        else 0.0
    )
    result["examples"] = len(gold)
    result["tokens"] = len(flat_gold)
    if reference is not None:
        result["agreement"] = entity_scores(reference, predicted)["entity_f1"]
    return result


def aligned(*tagged: list[list[str]]) -> list[list[list[str]]]:
    """The words every model saw, per sentence: truncation at max_length may keep fewer
    words through one tokenizer (a trimmed vocabulary segments unseen words otherwise)."""
    lengths = [min(map(len, sentences)) for sentences in zip(*tagged, strict=True)]
    return [[tags[:n] for tags, n in zip(model, lengths, strict=True)] for model in tagged]


def word_tags(
    logits: np.ndarray, word_starts: list[list[int]], tag_names: list[str]
) -> list[list[str]]:
    """Each word's tag from the logits of its first sub-token. ``logits``: one array per
    sentence [sub-tokens, tags]; ``word_starts``: each word's first sub-token position."""
    return [
        [tag_names[int(row[position].argmax())] for position in starts]
        for row, starts in zip(logits, word_starts, strict=True)
    ]


def memorization_tags(
    train_tokens: list[list[str]],
    train_tags: list[list[str]],
    tokens: list[list[str]],
) -> list[list[str]]:
    """The floor a tagger must beat: each token gets its most frequent training tag
    (lower-cased lookup; unseen tokens are O); B-/I- repaired so entities are well formed."""
    from collections import Counter, defaultdict

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for sentence, tags in zip(train_tokens, train_tags, strict=True):
        for token, tag in zip(sentence, tags, strict=True):
            counts[token.lower()][tag] += 1
    result = []
    for sentence in tokens:
        tags = [
            counts[t.lower()].most_common(1)[0][0] if t.lower() in counts else "O" for t in sentence
        ]
        result.append(_well_formed(tags))
    return result


def _well_formed(tags: list[str]) -> list[str]:
    """I-X after anything but B-X/I-X starts an entity: B-X (strict IOB2 would drop it)."""
    fixed = []
    for tag in tags:
        previous = fixed[-1] if fixed else "O"
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        fixed.append(tag)
    return fixed
