"""The files token classification's data stage hands to later stages (a contract between stages).

Format:
  ``<data stage>/train.jsonl``, ``validation.jsonl``, ``test.jsonl`` and ``unused.jsonl``: one
  object per line, ``{"id": str, "tokens": [str, ...], "tags": [int, ...]}``, one tag per token,
  each an index into the tag names. ``unused`` holds the sentences ``data.max_examples`` left
  out (transfer text): they carry tags too, but later stages treat them as unlabelled.
  ``<data stage>/labels.json``: ``{"labels": ["O", "B-company", "I-company", "B-facility", ...]}``:
  ``"O"`` first, then a ``B-``/``I-`` pair per entity type of the training split, types in sorted
  order. Tags are always IOB2, whatever scheme the data was written in. An entity type holds
  no whitespace and no ``:`` (:func:`is_entity_type`): the data stage refuses any other, and the
  runner refuses a bundle whose labels hold one.

Imports nothing heavy (no torch, no numpy): the runner and tests read these files cheaply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from distill.data.files import read_label_names, write_label_names

SPLITS = ("train", "validation", "test")
# The labelled splits plus the sentences max_examples left out, in the order they are written.
ALL_SPLITS = (*SPLITS, "unused")
OUTSIDE = "O"
# One rule for the data stage and the runner: a type is a CoNLL column (whitespace would split
# it) and the first field of the runner's ``type:start-end:text`` output (a ':' would not parse).
_ENTITY_TYPE = re.compile(r"[^\s:]+")
ENTITY_TYPE_RULE = "an entity type holds no whitespace and no ':'"


def is_entity_type(kind: str) -> bool:
    """Whether ``kind`` may name an entity type (non-empty, no whitespace, no ``:``)."""
    return _ENTITY_TYPE.fullmatch(kind) is not None


def is_iob2_tag(name: str) -> bool:
    """``O``, or ``B-``/``I-`` followed by a valid entity type."""
    return name == OUTSIDE or (name[:2] in ("B-", "I-") and is_entity_type(name[2:]))


@dataclass(frozen=True)
class TaggedSplit:
    """One split of tagged sentences, in a fixed order; ``tags[i][j]`` tags ``tokens[i][j]``."""

    ids: list[str]
    tokens: list[list[str]]
    tags: list[list[int]]

    def __len__(self) -> int:
        return len(self.ids)


def write_tagged_split(path: Path, split: TaggedSplit) -> None:
    """One JSON object per sentence; a sentence whose tags do not match its tokens is a bug."""
    with path.open("w", encoding="utf-8") as handle:
        for example_id, tokens, tags in zip(split.ids, split.tokens, split.tags, strict=True):
            if len(tokens) != len(tags):
                raise ValueError(f"{example_id}: {len(tokens)} tokens but {len(tags)} tags")
            row = {"id": example_id, "tokens": tokens, "tags": [int(t) for t in tags]}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_tagged_split(data_dir: Path, name: str) -> TaggedSplit:
    """The split ``name`` (``train``, ``validation``, ``test`` or ``unused``) of a data stage."""
    ids, tokens, tags = [], [], []
    with (data_dir / f"{name}.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            ids.append(row["id"])
            tokens.append(list(row["tokens"]))
            tags.append([int(t) for t in row["tags"]])
    return TaggedSplit(ids=ids, tokens=tokens, tags=tags)


def read_tag_names(data_dir: Path) -> list[str]:
    """The tag names in index order (labels.json, the same file classification writes)."""
    return read_label_names(data_dir)


def write_tag_names(data_dir: Path, names: list[str]) -> None:
    write_label_names(data_dir, names)


def tag_names_for(entity_types: set[str] | list[str]) -> list[str]:
    """``O``, then ``B-TYPE``, ``I-TYPE`` for each type in sorted order."""
    names = [OUTSIDE]
    for kind in sorted(entity_types):
        names += [f"B-{kind}", f"I-{kind}"]
    return names


def entity_types_of(names: list[str]) -> list[str]:
    """The entity types of a tag-name list, in its order (each B- tag names one)."""
    return [name[2:] for name in names if name.startswith("B-")]
