"""From per-token tag probabilities to entities, and from served entities back to word tags.

Torch-free (numpy only): the bundle runner serves with it, and the export and report stages
score the served output with it, so that a bundle's recorded scores are those of what it serves.

Strategies, as the transformers token-classification pipeline's ``aggregation_strategy``:

- ``first`` (the default), ``average``, ``max``: word-level. A word is a run of
  non-whitespace characters of the text (a data set's tokens joined by spaces give its
  tokens back), and every token belongs to the word its characters fall in. Each word gets
  one tag: its first sub-token's (``first``: the sub-token training labels, the others
  carry -100), the tag of its most confident sub-token (``max``), or the best tag of its
  sub-tokens' mean probabilities (``average``); the score is that tag's probability. An
  entity is always whole words.
- ``simple``: each real token keeps its own most probable tag, so an entity may start or
  end inside a word (``Gainesville`` -> ``Ga`` + ``inesville``); on request only.

Then consecutive units (words, or tokens for ``simple``) of one entity type form an entity,
a ``B-`` tag starting a new one; ``O`` groups are dropped; an entity's score is the mean of
its units' scores, its offsets are character offsets into the text
(``text[start:end] == entity.text``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_AGGREGATION = "first"
_WORD = re.compile(r"\S+")
# What `Entity.to_tsv` escapes in an entity's text, so that a line stays one line of
# tab-separated fields whatever the input held (a text argument may hold tabs and newlines).
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class Entity:
    """One entity: its type (the tag without B-/I-), its text and character span, its score."""

    type: str
    text: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "score": self.score,
        }

    def to_tsv(self) -> str:
        return f"{self.type}:{self.start}-{self.end}:{self.text.translate(_TSV_ESCAPES)}"


@dataclass(frozen=True)
class _Tagged:
    """A token or a word with its tag: the unit the grouping walks over."""

    tag: str
    score: float
    start: int
    end: int
    word: int | None  # the word's index (None: a token of no word)


def _split_tag(tag: str) -> tuple[str, str]:
    """("B" or "I", type); "O" reads as ("I", "O") as in the transformers pipeline."""
    return (tag[0], tag[2:]) if tag[:2] in ("B-", "I-") else ("I", tag)


def word_spans(text: str) -> list[tuple[int, int]]:
    """The character span of every word (run of non-whitespace characters) of ``text``."""
    return [match.span() for match in _WORD.finditer(text)]


def _real_positions(encoding: Any) -> list[int]:
    """The positions of the real tokens: no special token, no padding."""
    return [
        i
        for i in range(len(encoding.offsets))
        if not encoding.special_tokens_mask[i] and encoding.attention_mask[i]
    ]


def _tokens(encoding: Any, probabilities: np.ndarray, labels: list[str]) -> list[_Tagged]:
    """Every real token with its most probable tag (``simple``)."""
    best = probabilities.argmax(axis=-1)
    return [
        _Tagged(labels[best[i]], float(probabilities[i, best[i]]), *encoding.offsets[i], word=None)
        for i in _real_positions(encoding)
    ]


def _word_positions(text: str, encoding: Any) -> list[tuple[int, list[int]]]:
    """Each word that kept at least one token (truncation drops the rest), with its tokens'
    positions; a token belongs to the word holding its last character (a byte-level token's
    offsets may start on the space before its word)."""
    spans = word_spans(text)
    starts = [start for start, _ in spans]
    words: dict[int, list[int]] = {}
    for position in _real_positions(encoding):
        start, end = encoding.offsets[position]
        if end <= start:  # a token of no characters belongs to no word
            continue
        word = bisect_right(starts, end - 1) - 1
        if word >= 0 and spans[word][1] > start:
            words.setdefault(word, []).append(position)
    return sorted(words.items())


def _word_scores(rows: np.ndarray, strategy: str) -> np.ndarray:
    """One word's tag probabilities from its sub-tokens' rows, as ``strategy`` reads them."""
    if strategy == "first":
        return rows[0]
    if strategy == "max":
        return rows[int(rows.max(axis=-1).argmax())]
    return rows.mean(axis=0)


def tag_words(
    text: str, encoding: Any, probabilities: np.ndarray, labels: list[str], strategy: str
) -> list[_Tagged]:
    """Every word of ``text`` the model saw, spanning the whole word, with its tag and score."""
    units = []
    spans = word_spans(text)
    for word, positions in _word_positions(text, encoding):
        scores = _word_scores(probabilities[positions], strategy)
        best = int(scores.argmax())
        units.append(_Tagged(labels[best], float(scores[best]), *spans[word], word=word))
    return units


def _group(units: list[_Tagged], text: str) -> list[Entity]:
    """Consecutive units of one type form an entity (a B- tag starts a new one); O dropped."""
    groups: list[list[_Tagged]] = []
    for unit in units:
        bi, kind = _split_tag(unit.tag)
        if groups and bi != "B" and _split_tag(groups[-1][-1].tag)[1] == kind:
            groups[-1].append(unit)
        else:
            groups.append([unit])
    entities = []
    for group in groups:
        kind = _split_tag(group[0].tag)[1]
        if kind == "O":
            continue
        start, end = group[0].start, group[-1].end
        score = float(np.mean([unit.score for unit in group]))
        entities.append(Entity(kind, text[start:end], start, end, score))
    return entities


def aggregate(
    text: str, encoding: Any, probabilities: np.ndarray, labels: list[str], strategy: str
) -> list[Entity]:
    """The entities of one text from its encoding and per-token probabilities."""
    if strategy == "simple":
        return _group(_tokens(encoding, probabilities, labels), text)
    return _group(tag_words(text, encoding, probabilities, labels, strategy), text)


def seen_characters(encoding: Any) -> int:
    """Where the text the model saw ends: its real tokens' last character (0: none kept)."""
    return max((int(encoding.offsets[i][1]) for i in _real_positions(encoding)), default=0)


# --------------------------------------------------------------------------- scoring


def served_word_tags(words: list[str], entities: list[Any]) -> list[str]:
    """The IOB2 tag of each of ``words`` read off the entities served for ``" ".join(words)``:
    a word whose first character an entity covers is in it (``B-`` for the entity's first
    such word, ``I-`` after), any other word is ``O``. This is how a user of the served
    output places entities on a data set's tokens, so the reports score it this way."""
    starts, offset = [], 0
    for word in words:
        starts.append(offset)
        offset += len(word) + 1
    tags = ["O"] * len(words)
    for entity in entities:
        first = True
        for index in range(bisect_right(starts, entity.start - 1), len(words)):
            if starts[index] >= entity.end:
                break
            tags[index] = f"{'B' if first else 'I'}-{entity.type}"
            first = False
    return tags


def words_seen(words: list[str], seen: int) -> int:
    """How many of ``words`` (joined by spaces) start before character ``seen``: the words a
    truncated text kept."""
    count, offset = 0, 0
    for word in words:
        if offset >= seen:
            break
        count += 1
        offset += len(word) + 1
    return count
