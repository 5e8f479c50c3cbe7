"""Classification's data: labelled splits from the data's text and label columns (label names
in a stable order, every label of validation and test seen in training), and the unlabelled
transfer text the student may learn from besides."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np

from distill.config import DataConfig, TransferConfig
from distill.data.files import SPLITS
from distill.data.readers import (
    MAX_TEXT_CHARS,
    LoadReport,
    Row,
    read_table,
    require_rows,
    split_rows,
    text_key,
)
from distill.errors import DataError
from distill.tasks.classification.files import Split, read_split


def _label_order(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=lambda x: (float(x), x))
    except ValueError:
        return sorted(labels)


def _unlabelled(rows: list[Row]) -> Split:
    """Rows as a split without labels (label -1)."""
    return Split(
        ids=[r.example_id for r in rows],
        texts=[r.text for r in rows],
        labels=np.full(len(rows), -1, dtype=np.int64),
    )


def build_splits(
    config: DataConfig, base_dir: Path, seed: int
) -> tuple[dict[str, Split], list[str], LoadReport]:
    """Read, clean and split the data; returns the splits, label names and what cleaning did.

    Besides train/validation/test, ``splits["unused"]`` holds the rows that
    ``max_examples`` left out, without labels (label -1), for use as transfer text.
    """
    parts, unused, report = split_rows(config, base_dir, seed)
    label_names = _checked_label_names(config, parts)
    index = {name: i for i, name in enumerate(label_names)}
    splits = {
        name: Split(
            ids=[r.example_id for r in part],
            texts=[r.text for r in part],
            labels=np.asarray([index[r.label] for r in part], dtype=np.int64),
        )
        for name, part in parts.items()
    }
    # Rows left out by max_examples: unlabelled transfer text for the student (their labels
    # are dropped), minus any text that validation or test hold.
    held_out = {text_key(r.text) for name in ("validation", "test") for r in parts[name]}
    splits["unused"] = _unlabelled([r for r in unused if text_key(r.text) not in held_out])
    return splits, label_names, report


def _checked_label_names(config: DataConfig, parts: dict[str, list[Row]]) -> list[str]:
    """The label names, in order; refused: a single class in training, a label of validation
    or test that training never shows, an empty split."""
    train_labels = {r.label for r in parts["train"]}
    if len(train_labels) < 2:
        raise DataError(
            f"{config.path}: column {config.label_column!r} has a single class "
            f"({next(iter(train_labels))!r}) in the training split; classification needs at least two"
        )
    for split_name in ("validation", "test"):
        unseen = [r for r in parts[split_name] if r.label not in train_labels]
        if unseen:
            first = unseen[0]
            raise DataError(
                f"{first.where}: label {first.label!r} in the {split_name} split never occurs in "
                f"training ({len(unseen)} row(s)); training labels: {sorted(train_labels)}"
            )
        require_rows(parts, split_name)
    return _label_order(train_labels)


def label_counts(split: Split, label_names: list[str]) -> dict[str, int]:
    counts = Counter(int(x) for x in split.labels)
    return {name: counts.get(i, 0) for i, name in enumerate(label_names)}


def load_transfer(
    transfer: TransferConfig, data: DataConfig, base_dir: Path, data_dir: Path, seed: int
) -> tuple[Split, dict[str, int]]:
    """Unlabelled transfer text: deduplicated, never a text of the labelled splits, sampled."""
    if transfer.path == "unused":
        pool = read_split(data_dir, "unused")
        candidates = list(zip(pool.ids, pool.texts, strict=True))
        read = len(candidates)
    else:
        table_config = data.model_copy(update={"encoding": transfer.encoding or data.encoding})
        column = transfer.text_column or data.text_column
        name, columns, raw_rows = read_table(
            transfer.path, table_config, base_dir, "student.transfer.path"
        )
        if column not in columns:
            raise DataError(
                f"{name}: no column {column!r} (student.transfer.text_column); the columns are {columns}"
            )
        stem = Path(name).name
        candidates = []
        for line, record in raw_rows:
            text = "" if record.get(column) is None else str(record[column]).strip()
            if text:
                candidates.append((f"transfer:{stem}:{line}", text[:MAX_TEXT_CHARS]))
        read = len(raw_rows)
    seen = {text_key(t) for split in SPLITS for t in read_split(data_dir, split).texts}
    unique = []
    for example_id, text in candidates:
        key = text_key(text)
        if key not in seen:
            seen.add(key)
            unique.append((example_id, text))
    chosen = unique
    if transfer.max_examples is not None and len(unique) > transfer.max_examples:
        picked = sorted(random.Random(seed).sample(range(len(unique)), transfer.max_examples))
        chosen = [unique[i] for i in picked]
    if not chosen:
        raise DataError(
            f"student.transfer.path: {transfer.path!r} holds no text that is not already labelled"
        )
    split = Split(
        ids=[i for i, _ in chosen],
        texts=[t for _, t in chosen],
        labels=np.full(len(chosen), -1, dtype=np.int64),
    )
    return split, {"read": read, "new_texts": len(unique), "used": len(chosen)}
