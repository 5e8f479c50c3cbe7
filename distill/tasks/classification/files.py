"""The split files classification's data stage hands to later stages.

Format: ``<data stage>/train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (and ``unused.jsonl``,
the rows ``data.max_examples`` left out): one object per line, ``{"id": str, "text": str,
"label": int}`` (label is the index into the label names of ``labels.json``; -1 for unlabelled
text). The rows are read and written by :mod:`distill.data.files`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.data.files import read_rows, write_rows


@dataclass(frozen=True)
class Split:
    """One split of labelled examples, in a fixed order."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray  # int64 label indices

    def __len__(self) -> int:
        return len(self.ids)


def write_split(path: Path, split: Split) -> None:
    write_rows(
        path,
        (
            {"id": example_id, "text": text, "label": int(label)}
            for example_id, text, label in zip(split.ids, split.texts, split.labels, strict=True)
        ),
    )


def read_split(data_dir: Path, name: str) -> Split:
    ids, texts, labels = [], [], []
    for row in read_rows(data_dir, name):
        ids.append(row["id"])
        texts.append(row["text"])
        labels.append(row["label"])
    return Split(ids=ids, texts=texts, labels=np.asarray(labels, dtype=np.int64))
