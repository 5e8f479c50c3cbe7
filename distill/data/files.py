"""The files a data stage hands to later stages, whatever the task: one JSONL per split plus
the label names, and logits keyed by example id.

Format (a contract between stages):
  ``<data stage>/train.jsonl``, ``validation.jsonl``, ``test.jsonl``: one JSON object per
  line, one per example, whose fields the task defines (``{"id": ..., "text": ..., ...}``; its
  typed split and the format's details live in its folder, in ``files.py``);
  ``<data stage>/labels.json``: ``{"labels": [name0, name1, ...]}`` in id order (empty for a
  task without labels).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "validation", "test")


def write_rows(path: Path, rows: Iterable[dict[str, Any]], *, ensure_ascii: bool = True) -> None:
    """One JSON object per line, in order (``ensure_ascii`` as :func:`json.dumps` takes it)."""
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=ensure_ascii) + "\n")


def read_rows(data_dir: Path, name: str) -> Iterator[dict[str, Any]]:
    """The objects of split ``name`` (``<data_dir>/<name>.jsonl``), in order."""
    with (data_dir / f"{name}.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


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
