"""Batches of like lengths: an order that sorts examples by token length, and its inverse.

Each batch is padded to its longest example, so mixed lengths waste most of a batch on
padding; sorting first and putting the results back in input order keeps ids with their
outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_order(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Indices that sort the texts longest first (stable: ties keep their order), so that
    a batch too large for memory fails at once rather than at the end."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows computed in ``order`` put back in input order: row ``order[i]`` is ``values[i]``."""
    restored = np.empty_like(values)
    restored[order] = values
    return restored
