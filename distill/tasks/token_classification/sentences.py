"""A tagged sentence as the readers give it, and its tags checked and rewritten as IOB2.

Tag schemes (``data.tag_scheme``): everything is stored as IOB2 (``B-`` opens every entity,
``I-`` continues it). Continuity is checked in the scheme the data is written in: in IOB2 and
BIOES an ``I-X`` (BIOES: or ``E-X``) must follow ``B-X`` or ``I-X``; after ``O``, another type,
``S-X`` or ``E-X`` (or at the start of a sentence) an entity starts with ``B-X`` (or ``S-X``).
A tag that continues nothing is an error naming file and line, or with
``data.repair_tags = true`` opens an entity (``I-X`` reads as ``B-X``, ``E-X`` as ``S-X``);
either way it is counted. IOB1 (``I-`` opens an entity; ``B-`` only where one entity directly
follows another of its type) turns each ``I-X`` that does not continue an ``X`` into ``B-X``.
BIOES then becomes IOB2 by ``S-X`` -> ``B-X`` and ``E-X`` -> ``I-X`` (``B-``, ``I-``, ``O``
unchanged). A tag outside the scheme (``X-PER``, ``B-`` with no type) is always an error, and so
is an entity type holding whitespace or ``:`` (``B-geo:loc``), which no bundle could serve.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.errors import DataError
from distill.tasks.token_classification.files import ENTITY_TYPE_RULE, OUTSIDE, is_entity_type

# The prefixes each scheme writes before an entity type (``O`` stands alone).
SCHEME_PREFIXES = {"iob2": ("B", "I"), "iob1": ("B", "I"), "bioes": ("B", "I", "E", "S")}
# Continuity, in the source scheme: I- (and BIOES's E-) continue an entity that B- or I- holds
# open; after O, S- or E- an entity starts with B- (or S-).
_CONTINUE = ("I", "E")
_OPEN = ("B", "I")
# A continuation that continues nothing, repaired: it opens an entity (E-: a one-token one).
_REPAIRED = {"I": "B", "E": "S"}
_IOB2_PREFIX = {"B": "B", "I": "I", "S": "B", "E": "I"}


@dataclass
class Sentence:
    """One tagged sentence and where it was read (for error messages)."""

    example_id: str
    tokens: list[str]
    tags: list[str]  # tag names: as read, then IOB2 once normalised
    source: str  # the file or hub id, as error messages name it
    line: int  # the sentence's first line (CoNLL) or its row (JSONL, Parquet, hub)
    token_lines: list[int] | None = None  # CoNLL: the line of each token

    def at(self, position: int) -> str:
        """Where token ``position`` was read: ``file: line N`` (JSONL rows add the token)."""
        if self.token_lines is not None:
            return f"{self.source}: line {self.token_lines[position]}"
        return f"{self.source}: line {self.line}, token {position + 1}"

    def entity_types(self) -> set[str]:
        return {tag[2:] for tag in self.tags if tag.startswith("B-")}


def _parse_tag(tag: str, scheme: str, where: str) -> tuple[str, str]:
    """``(prefix, type)`` of a tag; ``("O", "")`` for outside."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in SCHEME_PREFIXES[scheme] and kind:
        if not is_entity_type(kind):
            # Caught here, not when `distill predict` refuses the published bundle.
            raise DataError(
                f"{where}: tag {tag!r}: entity type {kind!r} is not allowed ({ENTITY_TYPE_RULE}; "
                "the predict output writes type:start-end:text); rename the type in the data"
            )
        return prefix, kind
    written = ", ".join(f"{p}-TYPE" for p in SCHEME_PREFIXES[scheme])
    raise DataError(f"{where}: tag {tag!r} is not in the data.tag_scheme {scheme!r} (O, {written})")


def normalise_tags(sentence: Sentence, scheme: str, repair: bool) -> int:
    """Rewrite ``sentence.tags`` as IOB2 (see the module docstring); returns tags repaired.

    Continuity is checked in the source scheme, before conversion: once ``S-X``/``E-X`` read
    as ``B-X``/``I-X``, ``S-X E-X`` would look like one entity."""
    tags, repaired = [], 0
    previous = (OUTSIDE, "")  # the previous tag in the source scheme, as repaired
    for position, tag in enumerate(sentence.tags):
        prefix, kind = _parse_tag(tag, scheme, sentence.at(position))
        if prefix in _CONTINUE and (previous[0] not in _OPEN or previous[1] != kind):
            if scheme == "iob1":
                prefix = "B"  # IOB1 opens an entity with I-
            elif not repair:
                _orphan_error(sentence, position, scheme)
            else:
                prefix, repaired = _REPAIRED[prefix], repaired + 1
        previous = (prefix, kind)
        tags.append(OUTSIDE if prefix == OUTSIDE else f"{_IOB2_PREFIX[prefix]}-{kind}")
    sentence.tags = tags
    return repaired


def _orphan_error(sentence: Sentence, position: int, scheme: str) -> None:
    tag = sentence.tags[position]
    before = (
        "it starts the sentence"
        if position == 0
        else f"the previous tag is {sentence.tags[position - 1]!r}"
    )
    prefix, _, kind = tag.partition("-")
    rule = f"; in BIOES {tag!r} must follow 'B-{kind}' or 'I-{kind}'" if scheme == "bioes" else ""
    raise DataError(
        f"{sentence.at(position)}: tag {tag!r} continues no entity ({before}{rule}); set "
        f"data.repair_tags = true to read it as '{_REPAIRED[prefix]}-{kind}'"
    )
