"""The split files causal LM's data stage hands to later stages: plain text.

Format: ``<data stage>/train.jsonl``, ``validation.jsonl``, ``test.jsonl``: one object per
line, ``{"id": str, "text": str, "label": -1}`` (the label field, always -1, keeps the layout
of text data files that carry labels); ``labels.json`` holds no names. The rows are read and
written by :mod:`distill.data.files`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.data.files import read_rows, write_rows

NO_LABEL = -1


@dataclass(frozen=True)
class TextSplit:
    """One split of texts, in a fixed order."""

    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def write_split(path: Path, split: TextSplit) -> None:
    write_rows(
        path,
        (
            {"id": example_id, "text": text, "label": NO_LABEL}
            for example_id, text in zip(split.ids, split.texts, strict=True)
        ),
    )


def read_split(data_dir: Path, name: str) -> TextSplit:
    ids, texts = [], []
    for row in read_rows(data_dir, name):
        ids.append(row["id"])
        texts.append(row["text"])
    return TextSplit(ids=ids, texts=texts)
