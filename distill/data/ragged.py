"""Ragged arrays on disk: one [rows, ...] array per example, keyed by example id (a
sentence's per-sub-token logits, a QA window's start and end logits).

``<file>.npz``: ``ids`` (str), ``offsets`` (int64, examples + 1) and ``values`` (float32,
all rows stacked); example ``i`` is ``values[offsets[i]:offsets[i + 1]]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.errors import ArtifactError


def save_ragged(path: Path, ids: list[str], arrays: list[np.ndarray]) -> None:
    lengths = [len(a) for a in arrays]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate(arrays).astype(np.float32) if arrays else np.zeros((0, 0), np.float32)
    with path.open("wb") as handle:
        np.savez(handle, ids=np.asarray(ids), offsets=offsets, values=values)


def load_ragged(path: Path, ids: list[str] | None = None) -> list[np.ndarray]:
    """The arrays in file order, or in the order of ``ids`` (each must be in the file)."""
    with np.load(path) as archive:
        stored = [str(i) for i in archive["ids"]]
        offsets, values = archive["offsets"], archive["values"]
    arrays = [values[offsets[i] : offsets[i + 1]] for i in range(len(stored))]
    if ids is None:
        return arrays
    where = {example: i for i, example in enumerate(stored)}
    missing = [example for example in ids if example not in where]
    if missing:
        raise ArtifactError(f"{path}: no logits for {len(missing)} example(s), e.g. {missing[0]!r}")
    return [arrays[where[example]] for example in ids]
