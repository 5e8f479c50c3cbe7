"""The files the data stage hands to later stages: one JSONL per split plus the label names.

Format (a contract between stages):
  ``<data stage>/train.jsonl``, ``validation.jsonl``, ``test.jsonl``: one object per line,
  ``{"id": str, "text": str, "label": int}`` (label is the index into the label names);
  ``<data stage>/labels.json``: ``{"labels": [name0, name1, ...]}`` in id order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    """One split of labelled examples, in a fixed order."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray  # int64 label indices

    def __len__(self) -> int:
        return len(self.ids)


def write_split(path: Path, split: Split) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for example_id, text, label in zip(split.ids, split.texts, split.labels, strict=True):
            handle.write(json.dumps({"id": example_id, "text": text, "label": int(label)}) + "\n")


def read_split(data_dir: Path, name: str) -> Split:
    ids, texts, labels = [], [], []
    with (data_dir / f"{name}.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            ids.append(row["id"])
            texts.append(row["text"])
            labels.append(row["label"])
    return Split(ids=ids, texts=texts, labels=np.asarray(labels, dtype=np.int64))


def read_label_names(data_dir: Path) -> list[str]:
    return list(json.loads((data_dir / "labels.json").read_text(encoding="utf-8"))["labels"])


def write_label_names(data_dir: Path, names: list[str]) -> None:
    (data_dir / "labels.json").write_text(
        json.dumps({"labels": names}, indent=2) + "\n", encoding="utf-8"
    )


def save_logits(path: Path, ids: list[str], logits: np.ndarray) -> None:
    """Logits keyed by example id (no pickle: ids are a fixed-width unicode array)."""
    np.savez(path, ids=np.asarray(ids, dtype=str), logits=np.asarray(logits, dtype=np.float32))


def load_logits(path: Path, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Load logits; with ``ids``, return them in that order (KeyError names a missing id)."""
    with np.load(path, allow_pickle=False) as archive:
        stored_ids = [str(i) for i in archive["ids"]]
        logits = archive["logits"]
    if ids is None:
        return stored_ids, logits
    position = {example_id: row for row, example_id in enumerate(stored_ids)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise KeyError(f"{path}: no logits for example id(s) {missing[:5]}")
    return list(ids), logits[[position[i] for i in ids]]
